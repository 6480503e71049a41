"""``nni-biglittle``: the command line of nni_bigLittle.

Subcommands so far: ``space show`` / ``space sample`` (inspect the search space), ``data info``
(check a dataset and its splits). Later subcommands (run, predictor, export, bench, report)
plug in here.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

__all__ = ['main', 'build_parser']


def _space_from_args(args):
    from nni_bigLittle.search_spaces.presets import get_preset
    return get_preset(args.preset, num_classes=args.num_classes, resolution=args.resolution)


def cmd_space_show(args) -> int:
    from nni_bigLittle.costs import arch_costs
    spec = _space_from_args(args)
    choices = spec.choices()
    print(f'BigLittleSpace preset={spec.name!r} resolution={spec.resolution} classes={spec.num_classes}')
    print(f'{len(choices)} labelled choices, {math.prod(len(v) for v in choices.values()):.3e} raw combinations')
    width = max(len(label) for label in choices)
    for label, values in choices.items():
        print(f'  {label:<{width}}  {list(values)}')
    for name, sample in (('largest', spec.largest()), ('smallest', spec.smallest())):
        costs = arch_costs(spec.decode(sample))
        print(f'{name:>8}: big {costs.big.macs / 1e6:.2f} MMACs / {costs.big.params / 1e6:.2f} M params, '
              f'little {costs.little.macs / 1e6:.2f} MMACs')
    return 0


def cmd_space_sample(args) -> int:
    import random
    from nni_bigLittle.costs import arch_costs
    spec = _space_from_args(args)
    sample = spec.random_sample(random.Random(args.seed))
    costs = arch_costs(spec.decode(sample))
    record = {
        'sample': sample,
        'little_macs': costs.little.macs, 'big_tail_macs': costs.big_tail.macs, 'big_macs': costs.big.macs,
        'router_macs': costs.router.macs, 'little_params': costs.little.params,
        'big_tail_params': costs.big_tail.params, 'router_params': costs.router.params,
        f'expected_macs@{args.escalation}': costs.expected_macs(args.escalation),
    }
    print(json.dumps(record, indent=2))
    return 0


def cmd_data_info(args) -> int:
    import numpy as np
    from nni_bigLittle.data import load_dataset
    splits = load_dataset(args.name, args.root, resolution=args.resolution, val_size=args.val_size, seed=args.seed)
    print(f'{splits.name}: {splits.num_classes} classes at {splits.resolution}x{splits.resolution} '
          f'(source: {splits.source})')
    for part in ('train', 'val', 'test'):
        labels = getattr(splits, part).labels.numpy()
        counts = np.bincount(labels, minlength=splits.num_classes)
        print(f'  {part:<5} {len(labels):>6} images, per class min {counts.min()} / max {counts.max()}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nni_bigLittle import __version__
    parser = argparse.ArgumentParser(prog='nni-biglittle', description=__doc__.splitlines()[0])
    parser.add_argument('--version', action='version', version=f'nni_bigLittle {__version__}')
    sub = parser.add_subparsers(dest='command', required=True)

    space = sub.add_parser('space', help='inspect the big/little search space')
    space_sub = space.add_subparsers(dest='space_command', required=True)
    for name, fn, help_text in (('show', cmd_space_show, 'list the labelled choices and the extreme networks'),
                                ('sample', cmd_space_sample, 'draw a valid random sample and print its costs')):
        p = space_sub.add_parser(name, help=help_text)
        p.add_argument('--preset', default='cifar', help='cifar or imagenet (default: cifar)')
        p.add_argument('--num-classes', type=int, default=None)
        p.add_argument('--resolution', type=int, default=None)
        p.set_defaults(func=fn)
        if name == 'sample':
            p.add_argument('--seed', type=int, default=0)
            p.add_argument('--escalation', type=float, default=0.3,
                           help='escalation rate for the expected MACs (default 0.3)')

    data = sub.add_parser('data', help='datasets')
    data_sub = data.add_subparsers(dest='data_command', required=True)
    info = data_sub.add_parser('info', help='load a dataset and print its splits')
    info.add_argument('name', help='digits, cifar10, cifar100, fashion_mnist or imagefolder')
    info.add_argument('--root', default=None, help='data folder or file (default: $NNI_BIGLITTLE_DATA, ~/.cache)')
    info.add_argument('--resolution', type=int, default=None)
    info.add_argument('--val-size', type=float, default=None, help='validation size: count or fraction')
    info.add_argument('--seed', type=int, default=0)
    info.set_defaults(func=cmd_data_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, 'val_size', None) is not None and args.val_size >= 1:
        args.val_size = int(args.val_size)
    from nni_bigLittle.data import DataError
    try:
        return args.func(args)
    except (DataError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
