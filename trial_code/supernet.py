"""Trial: one co-training run (sandwich or progressive shrinking) as an NNI trial.

    python -m nni_bigLittle.trial_code.supernet --config experiments/cifar10_sandwich.yaml

The trial's parameters override keys of the training config (``nni_bigLittle.app.config``), dotted
for nested keys: ``optimizer.learning_rate``, ``loss.gamma``, ``strategy_options.num_random``,
``batch_size``, ... (an HPO search over the co-training recipe). After every epoch an intermediate
result reports the largest pair's validation numbers, so the web UI draws the curves:
``default`` (= ``accuracy``, the largest pair's dynamic accuracy at 30 % escalation), ``little_acc``,
``big_acc``, ``escalation_rate``, ``smallest_big_acc``, ``train_loss``, ``epoch``. The final result
evaluates the largest pair of the trained supernet like the ``evaluate`` trial (threshold calibrated,
``expected_macs``, ``latency_ms_<device>``, ...) plus ``smallest_big_acc``.

The run folder is ``--run-dir`` (default: ``run`` in the trial's NNI output folder, or
``runs/supernet_trial`` outside NNI); re-running the same trial command resumes it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from nni_bigLittle.trial_code import common


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The dict metric of one epoch row of ``metrics.csv``."""
    out = {'default': float(row['val/largest/dynamic_acc']), 'accuracy': float(row['val/largest/dynamic_acc']),
           'little_acc': float(row['val/largest/little_acc']), 'big_acc': float(row['val/largest/big_acc']),
           'escalation_rate': float(row['val/largest/escalation_rate']),
           'smallest_big_acc': float(row['val/smallest/big_acc']), 'epoch': float(row['epoch']) + 1}
    if row.get('train_loss') not in (None, ''):
        out['train_loss'] = float(row['train_loss'])
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m nni_bigLittle.trial_code.supernet',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--config', required=True, help='training config YAML (e.g. experiments/cifar10_sandwich.yaml)')
    parser.add_argument('--run-dir', default=None, help='run folder (default: <trial output>/run)')
    parser.add_argument('--set', action='append', metavar='KEY=VALUE', help='fixed config override (YAML value)')
    parser.add_argument('--devices', default='raspberry_pi_4', help='comma-separated predictors for the final result')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--params', default=None, help='outside NNI: config overrides as JSON (default: none)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import yaml
    args = build_parser().parse_args(argv)
    args.seed = 0
    common.setup(args)
    from nni_bigLittle.evaluation import evaluate_pair, load_supernet
    from nni_bigLittle.app.config import TrainConfig, load_config, set_dotted
    from nni_bigLittle.app.stages.train import train_supernet
    from nni_bigLittle.app.runs import RunFolder
    config = load_config(args.config)
    for item in args.set or []:
        key, sep, value = item.partition('=')
        if not sep:
            raise common.TrialError(f'--set needs KEY=VALUE, got {item!r}.')
        set_dotted(config, key, yaml.safe_load(value))
    params = common.trial_parameters(args, lambda rng: {})
    for key, value in params.items():
        set_dotted(config, key, value)
    if args.threads is not None:
        config['threads'] = args.threads
    cfg = TrainConfig.from_mapping(config)  # a bad override fails here, before any data is loaded
    if args.run_dir is not None:
        run_dir = Path(args.run_dir)
    elif common.in_nni():
        run_dir = Path(os.environ.get('NNI_OUTPUT_DIR', '.')) / 'run'
    else:
        run_dir = Path('runs') / 'supernet_trial'
    train_supernet(cfg, run_dir, progress=not args.quiet,
                   on_epoch=lambda row: common.report_intermediate(epoch_metrics(row)))
    supernet_path = RunFolder(run_dir).supernet_path
    supernet = load_supernet(supernet_path)
    devices = tuple(d.strip() for d in args.devices.split(',') if d.strip())
    val_size = cfg.val_size
    metrics = evaluate_pair(supernet.freeze(supernet.spec.largest()), dataset=cfg.dataset,
                            data_root=cfg.data_root, supernet=supernet_path, devices=devices,
                            val_size=val_size, seed=cfg.seed, report=False)
    metrics['smallest_big_acc'] = epoch_metrics(RunFolder(run_dir).read_metrics()[-1])['smallest_big_acc']
    metrics['epoch'] = float(cfg.epochs)
    common.report_final(metrics)
    return 0


if __name__ == '__main__':
    sys.exit(common.run_main(main))
