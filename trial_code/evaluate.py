"""Trial: a pair with weights inherited from a trained supernet (seconds per trial).

    python -m nni_bigLittle.trial_code.evaluate --supernet runs/cifar10_sandwich --dataset cifar10 \
        --data-root ../shared/data/cifar10 --devices raspberry_pi_4,jetson_nano_trt_fp32

The trial's parameters are the space's labels (``nni-biglittle space export``, same preset and
options as the supernet's space). The pair is frozen from the supernet (``supernet.pt`` of a cotrain
run folder, a ``BigLittleSpace.save`` file, or a co-training checkpoint), its batch norms
re-calibrated on seeded training batches, and evaluated on the seeded validation split. An invalid
draw (little not cheaper than big) is repaired first (``search_spaces.hpo``). The final result is a
dict: ``default`` (the documented objective, see ``common.DEFAULT_OBJECTIVE_DOC``), ``accuracy``,
``little_acc``, ``big_acc``, ``escalation_rate``, ``threshold``, ``expected_macs`` (millions),
``latency_ms_<device>`` and, with ``--energy``, ``energy_mj_<device>``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nni_bigLittle.trial_code import common


def supernet_file(path: str) -> Path:
    """``supernet.pt`` of a run folder, or the file itself."""
    from nni_bigLittle.app.runs import RunFolder
    given = Path(path)
    if given.is_dir():
        if RunFolder(given).supernet_path.is_file():
            return RunFolder(given).supernet_path
        raise common.TrialError(f'{given} holds no supernet.pt; finish its co-training first '
                                f'(`nni-biglittle cotrain CONFIG --run-dir {given}`).')
    if not given.is_file():
        raise common.TrialError(f'No supernet at {given}: give a cotrain run folder, a supernet.pt or a checkpoint.')
    return given


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m nni_bigLittle.trial_code.evaluate', description=__doc__.split('\n')[0])
    parser.add_argument('--supernet', required=True, help='cotrain run folder, supernet.pt or co-training checkpoint')
    parser.add_argument('--calib-batches', type=int, default=8, help='batch-norm re-calibration batches (default 8)')
    common.add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.setup(args)
    from nni_bigLittle.evaluation import evaluate_pair, load_supernet
    from nni_bigLittle.search_spaces.hpo import sample_from_parameters
    path = supernet_file(args.supernet)
    supernet = load_supernet(path)
    params = common.trial_parameters(args, supernet.spec.random_sample)
    sample, extra, repaired = sample_from_parameters(supernet.spec, params)
    if extra:
        raise common.TrialError(f'The evaluate trial takes only the space\'s labels; unknown parameters {sorted(extra)}.')
    if repaired:
        common._logger.info('The drawn pair was invalid (little not cheaper than big); repaired to %s', sample)
    metrics = evaluate_pair(supernet.freeze(sample), supernet=path, calib_batches=args.calib_batches, report=False,
                            **common.evaluation_options(args))
    common.report_final(metrics)
    return 0


if __name__ == '__main__':
    sys.exit(common.run_main(main))
