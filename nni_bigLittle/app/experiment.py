"""Check an ``nnictl`` experiment YAML before anything starts, then launch it (``nni-biglittle experiment``).

``nnictl create`` starts the NNI manager first and finds many mistakes only afterwards: an unknown
tuner name or class, a tuner that rejects the search space, a dataset the trials cannot find. The
experiment then sits in ERROR (or its trials all fail) with the manager still running.
:func:`check_experiment` finds those mistakes up front, the way the manager would meet them:

- the YAML is loaded by NNI's own ``ExperimentConfig`` (schema, search-space file);
- the tuner is built exactly as NNI's dispatcher builds it (built-in or registered name, or
  ``codeDirectory`` + ``className``, with its ``classArgs``), given the search space, and asked for
  one parameter set;
- a ``trialCommand`` that runs one of our trial entry points (``-m nni_bigLittle.trial_code.<name>``)
  is parsed with that entry point's own argument parser; its dataset is loaded, its supernet or
  config read, the search space checked against the space the trial will build, and the tuner's
  draw turned into a valid pair; our tuner's objectives and constraints must be keys the trial
  reports;
- the port must be free.

:func:`launch_experiment` runs the check, then ``nnictl create``, and watches the experiment for a
few seconds: if the manager reports ERROR it is stopped again and the dispatcher's error is raised.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Mapping
from nni_bigLittle.errors import BigLittleError

__all__ = ['ExperimentCheckError', 'check_experiment', 'launch_experiment', 'port_is_free']

TRIAL_CODES = ('evaluate', 'train', 'supernet')
_TRIAL_MODULE = re.compile(r'^nni_bigLittle\.trial_code\.(\w+)$')


class ExperimentCheckError(BigLittleError, ValueError):
    """An experiment config that would fail once started; the message says what to change."""


def port_is_free(port: int) -> bool:
    """Whether the NNI manager could listen on ``port`` (it binds every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # like node's server: a port in TIME_WAIT after a stopped experiment is free, a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(('', int(port)))
        except OSError:
            return False
    return True


def _nni_config(path: Path):
    from nni.experiment.config import ExperimentConfig
    from nni_bigLittle.app.config import ConfigError, load_config
    try:
        raw = load_config(path)
    except ConfigError as err:
        raise ExperimentCheckError(str(err)) from None
    if 'trainingServicePlatform' in raw:
        raise ExperimentCheckError(f'{path} is in the legacy (v1) format; use the v2 format of NNI 3.0.')
    try:
        config = ExperimentConfig.load(str(path)).canonical_copy()  # paths resolved, search space read
    except Exception as err:  # NNI raises ValueError / AssertionError / TypeError for schema problems
        raise ExperimentCheckError(f'{path}: NNI rejects the config: {type(err).__name__}: {err}') from None
    return config


def _build_tuner(config) -> Any:
    """The tuner as NNI's dispatcher builds it."""
    from nni.tools.package_utils.tuner_factory import (
        create_builtin_class_instance, create_customized_class_instance)
    from nni.tools.package_utils.config_manager import get_all_algo_meta
    tuner = config.tuner
    if tuner is None:
        raise ExperimentCheckError('The experiment has no tuner.')
    try:
        if tuner.class_name is None:
            known = sorted(m.name for m in get_all_algo_meta() if m.algo_type == 'tuner')
            if tuner.name.lower() not in {name.lower() for name in known}:
                raise ExperimentCheckError(
                    f'Unknown tuner {tuner.name!r}. Built-in and registered tuners: {", ".join(known)}. '
                    'Register ours with `nnictl algo register --meta experiments/algo_meta.yml`, or use '
                    'codeDirectory + className: nni_bigLittle.strategies.tuner.BigLittleEvolution.')
            return create_builtin_class_instance(tuner.name, tuner.class_args, 'tuners')
        return create_customized_class_instance({'codeDirectory': str(tuner.code_directory),
                                                 'className': tuner.class_name, 'classArgs': tuner.class_args})
    except ExperimentCheckError:
        raise
    except (ImportError, AttributeError) as err:
        raise ExperimentCheckError(f'The tuner class cannot be loaded: {type(err).__name__}: {err}') from None
    except Exception as err:
        raise ExperimentCheckError(f'The tuner rejects its classArgs {tuner.class_args}: '
                                   f'{type(err).__name__}: {err}') from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # an argparse error is a config error, not an exit
        raise ExperimentCheckError(f'trialCommand: {message}')


def _parse_trial(command: str) -> tuple[str, argparse.Namespace] | None:
    """``(trial code name, parsed arguments)`` when the command runs one of our trial entry points."""
    words = shlex.split(command)
    if '-m' not in words or words.index('-m') + 1 >= len(words):
        return None
    at = words.index('-m')
    module = words[at + 1]
    if not module.startswith('nni_bigLittle.'):
        return None
    match = _TRIAL_MODULE.match(module)
    if match is None or match.group(1) not in TRIAL_CODES:
        raise ExperimentCheckError(f'trialCommand runs {module}, which is not a trial entry point; use one of '
                                   f'{", ".join("nni_bigLittle.trial_code." + n for n in TRIAL_CODES)}.')
    name = match.group(1)
    import importlib
    parser = importlib.import_module(module).build_parser()
    parser.__class__ = _Parser
    return name, parser.parse_args(words[at + 2:])


def _reported_keys(args: argparse.Namespace, name: str) -> set[str]:
    devices = [d.strip() for d in args.devices.split(',') if d.strip()]
    keys = {'default', 'accuracy', 'little_acc', 'big_acc', 'escalation_rate', 'threshold', 'expected_macs',
            'little_macs', 'big_macs'} | {f'latency_ms_{d}' for d in devices}
    if getattr(args, 'energy', False):
        from nni_bigLittle.evaluation import energy_devices
        keys |= {f'energy_mj_{d}' for d in energy_devices(devices)}
    if name == 'train':
        keys |= {'epoch', 'train_loss'}
    if name == 'supernet':
        keys |= {'smallest_big_acc', 'epoch'}
    return keys


def _in(folder: Path, value: str | None) -> str | None:
    if value is None or Path(value).is_absolute():
        return value
    return str(folder / value)


def _check_trial(name: str, args: argparse.Namespace, code_dir: Path, search_space: Mapping[str, Any]):
    """The spec the trial builds (``None`` for the supernet trial) after checking its inputs."""
    from nni_bigLittle.data import DataError, load_dataset
    from nni_bigLittle.search_spaces.hpo import SearchSpaceError, check_search_space
    for device in [d.strip() for d in getattr(args, 'devices', '').split(',') if d.strip()]:
        from nni_bigLittle.evaluation.pairs import _predictor
        try:
            _predictor(device, 'latency')
        except (KeyError, ValueError) as err:
            raise ExperimentCheckError(f'trialCommand --devices: {err}') from None
    if name == 'supernet':
        from nni_bigLittle.app.config import ConfigError, TrainConfig, load_config, set_dotted
        try:
            config = load_config(_in(code_dir, args.config))
            for key, entry in search_space.items():
                set_dotted(config, key, entry['_value'][0])
            cfg = TrainConfig.from_mapping(config)
            load_dataset(cfg.dataset, _in(code_dir, cfg.data_root), val_size=cfg.val_size, augment='none')
        except (ConfigError, DataError) as err:
            raise ExperimentCheckError(f'The supernet trial cannot run: {err}') from None
        return None
    try:
        splits = load_dataset(args.dataset, _in(code_dir, args.data_root), augment='none')
    except (DataError, ValueError) as err:
        raise ExperimentCheckError(f'The trials cannot load their data: {err}') from None
    if name == 'evaluate':
        from nni_bigLittle.evaluation import load_supernet
        from nni_bigLittle.trial_code.evaluate import supernet_file
        from nni_bigLittle.trial_code.common import TrialError
        try:
            spec = load_supernet(supernet_file(_in(code_dir, args.supernet))).spec
        except (TrialError, FileNotFoundError, ValueError) as err:
            raise ExperimentCheckError(f'The evaluate trial has no supernet: {err}') from None
        allowed_extra: set[str] = set()
    else:
        from nni_bigLittle.search_spaces.hpo import parse_space_options
        from nni_bigLittle.search_spaces.presets import get_preset
        from nni_bigLittle.trial_code.train import TUNABLE
        try:
            spec = get_preset(args.preset, num_classes=splits.num_classes, **parse_space_options(args.space_option))
        except ValueError as err:
            raise ExperimentCheckError(f'The train trial\'s space: {err}') from None
        allowed_extra = set(TUNABLE)
    if spec.num_classes != splits.num_classes:
        raise ExperimentCheckError(f'The supernet has {spec.num_classes} classes, {args.dataset} has '
                                   f'{splits.num_classes}.')
    try:
        extra = check_search_space(spec, search_space)
    except SearchSpaceError as err:
        raise ExperimentCheckError(str(err)) from None
    unknown = sorted(set(extra) - allowed_extra)
    if unknown:
        raise ExperimentCheckError(f'The search space has parameters {unknown} the {name} trial does not take '
                                   f'(it takes the space\'s labels{" and " + str(sorted(allowed_extra)) if allowed_extra else ""}).')
    return spec


def check_experiment(path: str | os.PathLike, port: int | None = None) -> dict[str, Any]:
    """Check an experiment YAML (see the module docstring). Returns a summary; raises
    :class:`ExperimentCheckError` with a clear message otherwise. Starts no NNI manager."""
    import nni_bigLittle._nni_compat  # noqa: F401
    from nni_bigLittle.search_spaces.hpo import sample_from_parameters
    path = Path(path)
    config = _nni_config(path)
    if port is not None and not port_is_free(port):
        raise ExperimentCheckError(f'Port {port} is in use (another NNI experiment or program); pick another --port '
                                   '(or stop it: nnictl stop --port ' + str(port) + ').')
    search_space = config.search_space or {}
    tuner = _build_tuner(config)
    try:
        tuner.update_search_space(search_space)
    except Exception as err:
        raise ExperimentCheckError(f'The tuner rejects the search space: {type(err).__name__}: {err}') from None
    try:
        draw = tuner.generate_parameters(0)
    except Exception as err:
        raise ExperimentCheckError(f'The tuner cannot draw parameters: {type(err).__name__}: {err}') from None
    summary: dict[str, Any] = {'config': str(path), 'tuner': type(tuner).__name__, 'parameters': len(search_space),
                               'trial': None}
    code_dir = Path(config.trial_code_directory)
    parsed = _parse_trial(config.trial_command)
    if parsed is not None:
        name, args = parsed
        spec = _check_trial(name, args, code_dir, search_space)
        summary['trial'] = name
        if spec is not None:
            try:
                sample_from_parameters(spec, draw)
            except ValueError as err:
                raise ExperimentCheckError(f'The tuner\'s first draw does not fit the trial\'s space: {err}') from None
            tuner_spec = getattr(tuner, 'spec', None)
            if tuner_spec is not None and tuner_spec != spec:
                raise ExperimentCheckError('The tuner\'s space (classArgs preset / num_classes / space_options) differs '
                                           'from the space the trials build; make them the same.')
        wanted = [key for key, _ in getattr(tuner, 'objectives', [])] + list(getattr(tuner, 'constraints', {}))
        missing = sorted(set(wanted) - _reported_keys(args, name))
        if missing:
            raise ExperimentCheckError(f'The tuner needs metric keys {missing} that the {name} trial does not report; '
                                       'add the device to the trial\'s --devices (latency_ms_<device>) or change the '
                                       'objectives / constraints.')
    return summary


def _nnictl() -> list[str]:
    candidate = Path(sys.executable).parent / 'nnictl'
    return [str(candidate)] if candidate.exists() else ['nnictl']


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/nni/check-status', timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def launch_experiment(path: str | os.PathLike, port: int, settle_s: float = 25.0) -> str:
    """Check, then ``nnictl create --config path --port port``; watch the manager for ``settle_s``
    seconds and, if it reports ERROR, stop it and raise with its error. Returns the experiment id."""
    summary = check_experiment(path, port)
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore:pkg_resources is deprecated:UserWarning'}
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')  # trials use this python
    done = subprocess.run([*_nnictl(), 'create', '--config', str(path), '--port', str(port)], env=env,
                          capture_output=True, text=True, timeout=120)
    output = re.sub(r'\x1b\[[0-9;]*m', '', done.stdout + done.stderr)
    match = re.search(r'Experiment ID:\s*(\w+)', output)
    if done.returncode != 0 or match is None:
        raise ExperimentCheckError(f'nnictl create failed (exit {done.returncode}):\n{output.strip()}')
    experiment_id = match.group(1)
    deadline = time.time() + settle_s
    while time.time() < deadline:
        status = _status(port)
        if status is not None and status.get('status') == 'ERROR':
            subprocess.run([*_nnictl(), 'stop', experiment_id], env=env, capture_output=True, timeout=120)
            raise ExperimentCheckError(f'Experiment {experiment_id} failed right after starting: '
                                       f'{"; ".join(status.get("errors") or [])}; it was stopped again.')
        time.sleep(1.0)
    print(f'[experiment] {summary["config"]}: tuner {summary["tuner"]}, trial {summary["trial"] or "(custom)"}; '
          f'id {experiment_id}, web UI http://127.0.0.1:{port}\n[experiment] stop it with: nnictl stop {experiment_id}')
    return experiment_id
