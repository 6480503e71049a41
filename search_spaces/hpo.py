"""The big/little space as an NNI hyper-parameter search space (``nnictl`` experiments).

``nnictl create`` cannot launch a model-space NAS experiment, but it can run any HPO tuner over a
search-space JSON. :func:`nni_search_space` writes the space's labels in NNI's format, one
``{"_type": "choice", "_value": [...]}`` per label (flat: block labels beyond a stage's depth are
drawn but unused, like NNI's own ``simplify()`` of the model space). :func:`sample_from_parameters`
turns whatever parameter dict a tuner draws back into a valid pair:

- values are matched to the allowed choices (``4.0`` from JSON becomes ``4``); a missing label or a
  value outside the choices is an error naming the label;
- tuners such as TPE or Random draw every label independently, and about 16 % of such draws on the
  ``cifar`` preset have a little network that is not cheaper than its big network. Those are
  repaired with :func:`~nni_bigLittle.search_spaces.spec.make_valid` (shrink the little network,
  then move the fork; deterministic), so every draw freezes to a valid model;
- keys that are not labels of the space (e.g. ``learning_rate`` added to the JSON for a training
  trial) come back separately, untouched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni_bigLittle.search_spaces.spec import InvalidSampleError, SpaceSpec, _same, make_valid
from nni_bigLittle.errors import BigLittleError

__all__ = ['nni_search_space', 'dumps_search_space', 'write_search_space', 'read_search_space', 'check_search_space',
           'sample_from_parameters', 'parse_space_options', 'SearchSpaceError']

_HPO_TYPES = ('choice', 'randint', 'uniform', 'quniform', 'loguniform', 'qloguniform', 'normal', 'qnormal',
              'lognormal', 'qlognormal')


class SearchSpaceError(BigLittleError, ValueError):
    """A search-space JSON that does not fit the big/little space."""


def nni_search_space(spec: SpaceSpec, extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict]:
    """``{label: {"_type": "choice", "_value": [...]}}`` for every label of ``spec``, in the spec's order,
    followed by ``extra`` hyper-parameters (NNI format, e.g. ``{"learning_rate": {"_type": "loguniform",
    "_value": [0.01, 0.2]}}``)."""
    space = {label: {'_type': 'choice', '_value': list(values)} for label, values in spec.choices().items()}
    for name, entry in (extra or {}).items():
        if name in space:
            raise SearchSpaceError(f'Extra hyper-parameter {name!r} clashes with a label of the space.')
        _check_entry(name, entry)
        space[name] = dict(entry)
    return space


def dumps_search_space(space: Mapping[str, Mapping[str, Any]]) -> str:
    """JSON text with one parameter per line (readable, diff-friendly)."""
    lines = [f' {json.dumps(name)}: {json.dumps(entry)}' for name, entry in space.items()]
    return '{\n' + ',\n'.join(lines) + '\n}\n'


def write_search_space(spec: SpaceSpec, path: str | os.PathLike,
                       extra: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict]:
    space = nni_search_space(spec, extra)
    Path(path).write_text(dumps_search_space(space))
    return space


def read_search_space(path: str | os.PathLike) -> dict[str, dict]:
    """Read a search-space JSON file with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f'No search-space file at {path}; write one with '
                               '`nni-biglittle space export --preset cifar -o space.json`.')
    try:
        space = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SearchSpaceError(f'{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}).') from None
    if not isinstance(space, dict):
        raise SearchSpaceError(f'{path} must hold a JSON object {{name: {{"_type": ..., "_value": ...}}}}.')
    for name, entry in space.items():
        _check_entry(name, entry, where=str(path))
    return space


def _check_entry(name: str, entry: Any, where: str = 'the search space') -> None:
    if not isinstance(entry, Mapping) or '_type' not in entry or '_value' not in entry:
        raise SearchSpaceError(f'{where}: {name!r} must be {{"_type": ..., "_value": [...]}}, got {entry!r}.')
    if entry['_type'] not in _HPO_TYPES:
        raise SearchSpaceError(f'{where}: {name!r} has an unknown _type {entry["_type"]!r}; NNI knows {list(_HPO_TYPES)}.')
    if not isinstance(entry['_value'], list) or not entry['_value']:
        raise SearchSpaceError(f'{where}: {name!r} needs a non-empty list as _value.')


def check_search_space(spec: SpaceSpec, space: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Check that ``space`` (NNI format) searches ``spec``: every label present as a ``choice`` whose values
    are allowed by the spec (a subset narrows the search). Returns the extra (non-label) entries."""
    choices = spec.choices()
    problems = []
    for label, allowed in choices.items():
        entry = space.get(label)
        if entry is None:
            problems.append(f'{label!r} is missing')
        elif entry.get('_type') != 'choice':
            problems.append(f'{label!r} must be a "choice", not {entry.get("_type")!r}')
        else:
            bad = [v for v in entry.get('_value', []) if not any(_same(v, a) for a in allowed)]
            if bad:
                problems.append(f'{label!r} has values {bad} outside {list(allowed)}')
    if problems:
        shown = '; '.join(problems[:5]) + (f'; and {len(problems) - 5} more' if len(problems) > 5 else '')
        raise SearchSpaceError(f'The search space does not fit the {spec.name!r} space: {shown}. Regenerate it '
                               f'with `nni-biglittle space export --preset {spec.name}` (and the same options).')
    return {name: dict(entry) for name, entry in space.items() if name not in choices}


def sample_from_parameters(spec: SpaceSpec, parameters: Mapping[str, Any]
                           ) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """``(sample, extra, repaired)`` for a parameter dict drawn by an NNI tuner.

    ``sample`` is a valid pair of ``spec`` (values as the spec's own choices), ``extra`` the parameters
    that are not labels of the space, ``repaired`` whether :func:`make_valid` had to shrink the little
    network. Raises :class:`InvalidSampleError` naming the label for a missing or out-of-range value.
    """
    if not isinstance(parameters, Mapping):
        raise InvalidSampleError(f'NNI parameters must be a dict {{label: value}}, got {type(parameters).__name__}.')
    choices = spec.choices()
    sample: dict[str, Any] = {}
    for label, allowed in choices.items():
        if label not in parameters:
            raise InvalidSampleError(f'The parameters lack the label {label!r} (allowed values {list(allowed)}); '
                                     'was the search space exported from the same preset and options?',
                                     label=label, allowed=allowed)
        value = parameters[label]
        match = [a for a in allowed if not isinstance(value, bool) and _same(value, a)]
        if not match:
            raise InvalidSampleError(f'{label!r} = {value!r} is out of range; allowed values: {list(allowed)}.',
                                     label=label, allowed=allowed)
        sample[label] = match[0]
    extra = {name: value for name, value in parameters.items() if name not in choices}
    valid = make_valid(spec, sample)
    return valid, extra, valid != sample


def parse_space_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings (YAML values) into ``SpaceSpec`` overrides, e.g. ``width_choices=[0.5,1.0]``."""
    import yaml
    options = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise SearchSpaceError(f'A space option needs KEY=VALUE, got {item!r}.')
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise SearchSpaceError(f'Space option {key.strip()!r}: {value!r} is not a YAML value ({err}).') from None
    return options
