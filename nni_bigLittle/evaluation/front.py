"""A searched Pareto front on disk: ``<search folder>/front.json``, written by the search and read by every
later stage through :func:`read_front` (the one place that knows the file); and the front the
``BigLittleEvolution`` tuner keeps in an NNI experiment's folder (:data:`TUNER_FRONT_FILE`).

The file holds the search's settings and its ``front`` (and ``best`` under a budget): entries of validation
metrics, each with the ``operating_point`` it was measured at (:class:`~nni_bigLittle.nn.operating_point.
OperatingPoint`, the currency of every later stage) and, for readers of the CSV, its flat ``sample``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from nni_bigLittle.errors import BigLittleError

__all__ = ['FRONT_FILE', 'TUNER_FRONT_FILE', 'FrontError', 'write_front', 'read_front', 'searched_folders',
           'entry_point']

FRONT_FILE = 'front.json'
TUNER_FRONT_FILE = 'biglittle_front.json'  # the BigLittleEvolution tuner's front, in an NNI experiment's folder


class FrontError(BigLittleError, FileNotFoundError):
    """No front where one was expected; the message says which command writes it."""


def write_front(folder: str | os.PathLike, summary: Mapping[str, Any], name: str = FRONT_FILE) -> Path:
    """Write ``summary`` to ``<folder>/front.json`` (or ``name``) atomically: a kill leaves the old file or the
    new one, never a mix."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(json.dumps(summary, indent=1))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_front(folder: str | os.PathLike, hint: str = 'run the search first') -> dict[str, Any]:
    """The summary in ``<folder>/front.json``; a missing one raises :class:`FrontError` ending with ``hint``."""
    path = Path(folder) / FRONT_FILE
    if not path.is_file():
        raise FrontError(f'No searched front in {Path(folder)}; {hint}.')
    return json.loads(path.read_text())


def searched_folders(root: str | os.PathLike, pattern: str = '*') -> list[Path]:
    """The folders under ``root`` (matching ``pattern``) that hold a front, sorted by name."""
    return sorted(p.parent for p in Path(root).glob(f'{pattern}/{FRONT_FILE}'))


def entry_point(entry: Mapping[str, Any]):
    """The :class:`~nni_bigLittle.nn.operating_point.OperatingPoint` of a front entry. Fronts written before 0.2
    stored the threshold twice (rounded to the grid in ``sample``, calibrated in ``threshold``): the calibrated
    one is the one the model ran at."""
    from nni_bigLittle.nn.operating_point import OperatingPoint
    from nni_bigLittle.nn.router import RouterSetting
    if 'operating_point' in entry:
        return OperatingPoint.from_dict(entry['operating_point'])
    router = RouterSetting(entry['policy'], float(entry['threshold']),
                           target_escalation=entry.get('target_escalation'), calibrated_on='validation')
    return OperatingPoint({k: v for k, v in entry['sample'].items() if not k.startswith('router/')}, router)
