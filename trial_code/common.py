"""What the trial entry points share: arguments, the trial's parameters, reporting.

Inside an NNI experiment (the manager sets ``NNI_PLATFORM``) the parameters come from
``nni.get_next_parameter()`` and metrics go to the manager. Run by hand, a trial takes its parameters
from ``--params`` (a JSON object, or ``@file.json``) or draws a valid random sample (``--seed``), and
prints its metrics, so the same command can be tried before an experiment is launched.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from nni_bigLittle.errors import BigLittleError

_logger = logging.getLogger('nni_bigLittle.trial')

# The documented scalarised objective of every trial's dict metric (``default``): the dynamic model's
# validation accuracy at the calibrated threshold, or with --latency-target T MnasNet's reward
# accuracy * (latency / T) ** -0.07 on --latency-device (nni_bigLittle.evaluation.pair_metrics).
DEFAULT_OBJECTIVE_DOC = ('default = dynamic validation accuracy at the calibrated threshold; with --latency-target T '
                         '(ms), MnasNet\'s reward accuracy * (latency / T) ** -0.07')


class TrialError(BigLittleError, ValueError):
    """A trial that cannot run as configured; the message says what to change."""


def in_nni() -> bool:
    return bool(os.environ.get('NNI_PLATFORM'))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--dataset', default='digits', help='digits | cifar10 | cifar100 | fashion_mnist | imagefolder')
    parser.add_argument('--data-root', default=None, help='data folder or file (default: the usual places)')
    parser.add_argument('--devices', default='raspberry_pi_4',
                        help='comma-separated predictors for latency_ms_<device> (default raspberry_pi_4)')
    parser.add_argument('--target-escalation', default='0.3',
                        help='calibrate the router threshold to this escalation rate on validation (default 0.3); '
                             '"none" uses the sampled router/threshold')
    parser.add_argument('--latency-target', type=float, default=None,
                        help='ms: default becomes MnasNet\'s reward on the first device')
    parser.add_argument('--energy', action='store_true', help='add energy_mj_<device> where a predictor exists')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--val-size', type=float, default=None, help='validation split: count or fraction')
    parser.add_argument('--limit-val-batches', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--params', default=None,
                        help='outside NNI: the parameters as a JSON object or @file.json (default: a random valid '
                             'sample drawn with --seed)')


def evaluation_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`nni_bigLittle.evaluation.evaluate_pair` from the common arguments."""
    devices = tuple(d.strip() for d in args.devices.split(',') if d.strip())
    escalation = None if str(args.target_escalation).lower() == 'none' else float(args.target_escalation)
    val_size = args.val_size
    if val_size is not None and val_size >= 1:
        val_size = int(val_size)
    return dict(dataset=args.dataset, data_root=args.data_root, devices=devices, target_escalation=escalation,
                latency_target=args.latency_target, energy=args.energy, batch_size=args.batch_size,
                val_size=val_size, limit_val_batches=args.limit_val_batches, seed=args.seed)


def setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format='[%(asctime)s] %(levelname)s %(name)s: %(message)s')
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    import nni_bigLittle._nni_compat  # noqa: F401  (NNI import order)


def trial_parameters(args: argparse.Namespace, draw: Callable[[random.Random], dict[str, Any]]) -> dict[str, Any]:
    """The trial's parameter dict: NNI's inside an experiment, else ``--params`` or ``draw(rng)``."""
    if in_nni():
        import nni
        from nni.runtime.trial_command_channel import get_default_trial_command_channel
        global _TRIAL_CHANNEL
        params = nni.get_next_parameter()
        if params is None:
            raise TrialError('NNI gave this trial no parameters.')
        _TRIAL_CHANNEL = get_default_trial_command_channel()
        return dict(params)
    if args.params:
        text = args.params
        if text.startswith('@'):
            path = Path(text[1:])
            if not path.is_file():
                raise TrialError(f'--params file {path} does not exist.')
            text = path.read_text()
        try:
            params = json.loads(text)
        except json.JSONDecodeError as err:
            raise TrialError(f'--params is not valid JSON ({err.msg} at column {err.colno}).') from None
        if not isinstance(params, dict):
            raise TrialError('--params must be a JSON object {label: value}.')
        return params
    params = draw(random.Random(args.seed))
    _logger.info('Not inside an NNI experiment and no --params: a random valid sample (seed %d).', args.seed)
    return params


# The trial's channel to the NNI manager. A NasExperiment run inside the trial (the supernet trial)
# swaps NNI's default channel for its own while it trains, so per-epoch reports go through this one.
_TRIAL_CHANNEL = None


def report_intermediate(metrics: Mapping[str, float]) -> None:
    if in_nni():
        import nni
        from nni.runtime.trial_command_channel import (
            get_default_trial_command_channel, set_default_trial_command_channel)
        current = get_default_trial_command_channel()
        set_default_trial_command_channel(_TRIAL_CHANNEL or current)
        try:
            nni.report_intermediate_result(dict(metrics))
        finally:
            set_default_trial_command_channel(current)
    else:
        print('intermediate ' + json.dumps(dict(metrics), sort_keys=True), flush=True)


def report_final(metrics: Mapping[str, float]) -> None:
    if in_nni():
        import nni
        nni.report_final_result(dict(metrics))
    print('final ' + json.dumps(dict(metrics), sort_keys=True), flush=True)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a trial's ``main``; a configuration error prints one clear line and exits 2 (the trial
    fails in NNI with that line at the end of its stderr)."""
    from nni_bigLittle.data import DataError
    try:
        return main(argv)
    except (TrialError, DataError, ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr, flush=True)
        return 2
