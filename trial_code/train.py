"""Trial: train the drawn pair from scratch for N epochs (an intermediate result per epoch).

    python -m nni_bigLittle.trial_code.train --preset cifar --dataset digits --epochs 3

The trial's parameters are the labels of ``BigLittleSpace(--preset, --space-option ...)``
(``nni-biglittle space export`` with the same preset and options) and, optionally,
``learning_rate`` and ``weight_decay`` (add them to the search-space JSON to tune them with the
architecture). The pair is trained with the joint loss (``nni_bigLittle.nn.losses``), SGD with Nesterov
momentum and a cosine schedule, on the seeded training split, and measured on the validation split
after every epoch. Results are dicts with the keys of the ``evaluate`` trial plus ``epoch`` and
``train_loss``; ``default`` is the documented objective (``common.DEFAULT_OBJECTIVE_DOC``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from nni_bigLittle.search_spaces.hpo import parse_space_options
from nni_bigLittle.trial_code import common

TUNABLE = {'learning_rate': 'lr', 'weight_decay': 'weight_decay'}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m nni_bigLittle.trial_code.train', description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='cifar', help='space preset (default cifar)')
    parser.add_argument('--space-option', action='append', metavar='KEY=VALUE',
                        help='SpaceSpec override (YAML value), repeatable; the same as given to space export')
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--lr', type=float, default=0.05, help='learning rate unless the parameters hold learning_rate')
    parser.add_argument('--weight-decay', type=float, default=4e-5)
    parser.add_argument('--limit-train-batches', type=int, default=None)
    common.add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs < 1:
        raise common.TrialError(f'--epochs must be >= 1, got {args.epochs}.')
    common.setup(args)
    import torch
    from nni_bigLittle.evaluation.pairs import _splits, evaluate_pair
    from nni_bigLittle.search_spaces import BigLittleSpace
    from nni_bigLittle.search_spaces.hpo import sample_from_parameters
    options = common.evaluation_options(args)
    space_options = parse_space_options(args.space_option)
    # the classes come from the data; loading it first also fails early on a missing dataset
    splits = _splits(args.dataset, args.data_root, args.seed, 'standard', options['val_size'],
                     space_options.get('resolution', 32))
    torch.manual_seed(args.seed)
    space = BigLittleSpace(args.preset, num_classes=splits.num_classes, **space_options)
    params = common.trial_parameters(args, space.spec.random_sample)
    sample, extra, repaired = sample_from_parameters(space.spec, params)
    unknown = sorted(set(extra) - set(TUNABLE))
    if unknown:
        raise common.TrialError(f'Unknown parameters {unknown}: the train trial tunes the space\'s labels and '
                                f'{sorted(TUNABLE)}.')
    if repaired:
        common._logger.info('The drawn pair was invalid (little not cheaper than big); repaired to %s', sample)
    hyper = {'lr': args.lr, 'weight_decay': args.weight_decay}
    hyper.update({TUNABLE[key]: float(value) for key, value in extra.items()})
    model = space.freeze(sample).train()
    metrics = evaluate_pair(model, epochs=args.epochs, limit_train_batches=args.limit_train_batches, report=False,
                            on_epoch=common.report_intermediate, **hyper, **options)
    common.report_final(metrics)
    return 0


if __name__ == '__main__':
    sys.exit(common.run_main(main))
