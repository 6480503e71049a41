"""Latency-target search (LightNAS) on the Raspberry Pi 4 predictor: three targets, one search each.

The targets are spread over ``[profile(space.smallest()), profile(space.largest())]`` of the
cifar-preset space on the device (inside the achievable range that
:func:`nni_bigLittle.strategies.latency_target.latency_range` finds, which is wider: the dearest
valid pair is not ``largest()``); each search is ONE run of
:func:`~nni_bigLittle.strategies.latency_target.search_latency_target` on a CIFAR-10 subset (the
weights train on one part, the architecture on another, DARTS's split). Prints a table and writes
``benchmarks/results/latency_target/results.csv`` (flat records with the environment) and a
``README.md`` there with the command and the table.

    .venv/bin/python benchmarks/latency_target.py --threads 1

Run from the repository root (the data path defaults to ``../shared/data/cifar10/cifar10.npz``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

RESULTS = Path('benchmarks') / 'results' / 'latency_target'
FIELDS = ['target_fraction', 'target_ms', 'exported_ms', 'relative_error', 'within_tolerance', 'argmax_ms',
          'argmax_error', 'repaired_labels', 'repair_cost_nats', 'lam', 'expected_ms', 'expected_error',
          'tempered_ms', 'epochs', 'arch_steps', 'wall_s', 'low_ms', 'high_ms', 'smallest_ms', 'largest_ms',
          'tolerance', 'escalation_rate', 'device', 'relaxation', 'latency_temperature', 'damping', 'lam_lr',
          'arc_learning_rate', 'batch', 'train_images', 'arch_images', 'seed', 'date', 'cpu', 'logical_cpus',
          'threads', 'load_avg_1min', 'python', 'torch', 'nni', 'pytorch_lightning', 'nni_bigLittle']


def environment(threads: int) -> dict:
    from nni_bigLittle.app.runs import environment as run_environment
    env = run_environment(threads)
    return {'date': env['date'][:10], **{key: env.get(key, '') for key in ('cpu', 'logical_cpus', 'threads', 'python', 'torch', 'nni', 'pytorch_lightning', 'nni_bigLittle', 'load_avg_1min')}}


def loaders(data: str, train_images: int, arch_images: int, batch: int, seed: int):
    from nni.nas.evaluator.pytorch import DataLoader

    from nni_bigLittle.data import load_dataset
    splits = load_dataset('cifar10', root=data, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(splits.train), generator=generator).tolist()
    weights = torch.utils.data.Subset(splits.train, order[:train_images])
    arch = torch.utils.data.Subset(splits.train, order[train_images:train_images + arch_images])
    return (DataLoader(weights, batch_size=batch, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(arch, batch_size=batch, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(seed + 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--data', default=str(Path('..') / 'shared' / 'data' / 'cifar10' / 'cifar10.npz'))
    parser.add_argument('--device', default='raspberry_pi_4')
    parser.add_argument('--fractions', type=float, nargs='+', default=[0.15, 0.5, 0.85],
                        help='targets as fractions of [profile(smallest()), profile(largest())]')
    parser.add_argument('--train-images', type=int, default=2560, help='CIFAR-10 images training the weights')
    parser.add_argument('--arch-images', type=int, default=2560, help='CIFAR-10 images training the architecture')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--epochs', type=int, default=4)
    parser.add_argument('--steps-per-epoch', type=int, default=12,
                        help='architecture+weight steps per epoch (Lightning limit_train_batches)')
    parser.add_argument('--relaxation', default='gumbel')
    parser.add_argument('--lam-lr', type=float, default=None)
    parser.add_argument('--arc-learning-rate', type=float, default=None)
    parser.add_argument('--latency-temperature', type=float, nargs='+', default=None,
                        help='initial and final temperature of the constrained distribution (one value: fixed)')
    parser.add_argument('--damping', type=float, default=None,
                        help='augmented-Lagrangian weight rho (default: the strategy\'s, 0 = plain LightNAS)')
    parser.add_argument('--tolerance', type=float, default=0.05)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=str(RESULTS))
    parser.add_argument('--no-write', action='store_true', help='print the table only')
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')
    logging.getLogger('nni').setLevel(logging.ERROR)
    logging.getLogger('pytorch_lightning').setLevel(logging.ERROR)
    logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)

    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    from nni_bigLittle.search_spaces import BigLittleSpace
    from nni_bigLittle.strategies import latency_target as lt

    torch.manual_seed(args.seed)
    base = BigLittleSpace('cifar', num_classes=10)
    profiler = BigLittleCostProfiler(base, args.device, build_expression=False)
    start = time.perf_counter()
    rng = lt.latency_range(profiler)
    smallest, largest = profiler.profile(base.smallest()), profiler.profile(base.largest())
    print(f'{args.device}: smallest() {smallest:.3f} ms, largest() {largest:.3f} ms; achievable range '
          f'[{rng.low:.3f}, {rng.high:.3f}] ms (coordinate search, {time.perf_counter() - start:.1f} s)', flush=True)
    train, arch = loaders(args.data, args.train_images, args.arch_images, args.batch, args.seed)
    env = environment(args.threads)
    options = {}
    if args.lam_lr is not None:
        options['lam_lr'] = args.lam_lr
    if args.arc_learning_rate is not None:
        options['arc_learning_rate'] = args.arc_learning_rate
    if args.damping is not None:
        options['damping'] = args.damping
    if args.latency_temperature is not None:
        lt_args = args.latency_temperature
        options['latency_temperature'] = lt_args[0] if len(lt_args) == 1 else tuple(lt_args)

    rows = []
    for fraction in args.fractions:
        target = smallest + fraction * (largest - smallest)
        space = copy.deepcopy(base)
        begin = time.perf_counter()
        result = lt.search_latency_target(space, train, arch, target, profiler, epochs=args.epochs,
                                          tolerance=args.tolerance, relaxation=args.relaxation, seed=args.seed,
                                          trainer_kwargs={'limit_train_batches': args.steps_per_epoch},
                                          **options)
        wall = time.perf_counter() - begin
        row = {'target_fraction': fraction, 'target_ms': target, 'exported_ms': result.latency,
               'relative_error': result.relative_error, 'within_tolerance': result.within_tolerance,
               'argmax_ms': result.argmax_latency, 'argmax_error': result.argmax_latency / target - 1.0,
               'repaired_labels': ' '.join(f'{k}:{a}->{b}' for k, (a, b) in result.repaired.items()),
               'repair_cost_nats': result.repair_cost, 'lam': result.lam, 'expected_ms': result.expected_latency,
               'expected_error': result.expected_latency / target - 1.0,
               'tempered_ms': result.history[-1]['tempered_latency'], 'epochs': len(result.history),
               'arch_steps': len(result.steps), 'wall_s': wall, 'low_ms': rng.low, 'high_ms': rng.high,
               'smallest_ms': smallest, 'largest_ms': largest, 'tolerance': args.tolerance,
               'escalation_rate': result.escalation_rate, 'device': args.device, **result.settings,
               'batch': args.batch, 'train_images': args.train_images, 'arch_images': args.arch_images,
               'seed': args.seed, **env}
        rows.append(row)
        print(f'target {target:.3f} ms: exported {result.latency:.3f} ms ({100 * result.relative_error:+.2f} %), '
              f'argmax {result.argmax_latency:.3f} ms, LAT(alpha) {result.expected_latency:.3f} ms, '
              f'lam {result.lam:+.3f}, repaired {result.repaired or "-"}, {wall:.0f} s', flush=True)
        for record in result.history:
            print('   epoch {epoch}: LAT {expected_latency:.3f} ({expected_error:+.2%}), '
                  'LAT at t={latency_temperature:.2f} {tempered_latency:.3f}, argmax {argmax_latency:.3f} '
                  '({argmax_error:+.2%}), lam {lam:+.3f}'
                  .format(**record), flush=True)

    table = format_table(rows)
    print(table)
    if args.no_write:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'results.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row[key] for key in FIELDS})
    command = 'python benchmarks/latency_target.py ' + ' '.join(sys.argv[1:])
    (out / 'README.md').write_text(readme(command.strip(), env, rows, table, rng, smallest, largest, args))
    print(f'wrote {out / "results.csv"} and {out / "README.md"}')


def format_table(rows: list[dict]) -> str:
    lines = ['| target (ms) | exported (ms) | rel. error | argmax (ms) | repaired labels (nats) | lam '
             '| LAT(alpha) (ms) | LAT_t (ms) | epochs | arch steps | wall (s) |',
             '|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['target_ms']:.3f} | {r['exported_ms']:.3f} | {100 * r['relative_error']:+.2f} % "
                     f"| {r['argmax_ms']:.3f} ({100 * r['argmax_error']:+.2f} %) "
                     f"| {len(r['repaired_labels'].split()) if r['repaired_labels'] else 0} "
                     f"({r['repair_cost_nats']:.2f}) "
                     f"| {r['lam']:+.3f} | {r['expected_ms']:.3f} | {r['tempered_ms']:.3f} | {r['epochs']} "
                     f"| {r['arch_steps']} | {r['wall_s']:.0f} |")
    return '\n'.join(lines)


def readme(command: str, env: dict, rows: list[dict], table: str, rng, smallest: float, largest: float,
           args) -> str:
    landed = sum(bool(r['within_tolerance']) for r in rows)
    return f"""# Latency-target search (LightNAS) on the Raspberry Pi 4 predictor

Three targets spread over [`profile(smallest())`, `profile(largest())`] of `BigLittleSpace('cifar', num_classes=10)` on
`{args.device}` (expected dynamic latency at escalation rate {rows[0]['escalation_rate'] if rows else 0.3}),
one search per target (`strategies/latency_target.py`, `search_latency_target`). {landed} of
{len(rows)} exported architectures are within ±{100 * args.tolerance:.0f} % of their target.

Command (from the repository root):

    {command}

Environment: {env['cpu']}, {env['logical_cpus']} logical CPUs, {env['threads']} torch thread(s)
(other jobs shared the machine: 1-minute load average {env['load_avg_1min']} at the start, so wall
times are inflated), Python {env['python']}, torch {env['torch']},
NNI {env['nni']}, pytorch-lightning {env['pytorch_lightning']}, nni_bigLittle
{env['nni_bigLittle']}, {env['date']}.

Range: `space.smallest()` {smallest:.3f} ms, `space.largest()` {largest:.3f} ms; the achievable
range found by coordinate search is [{rng.low:.3f}, {rng.high:.3f}] ms (the cheapest and dearest
valid pairs are not those two: the fork and the escalation weighting matter). Targets at
fractions {', '.join(f'{r["target_fraction"]:g}' for r in rows)} of [smallest, largest].

Search: {args.relaxation} relaxation, {args.epochs} epochs of {args.steps_per_epoch} steps (one
architecture step on a batch of {args.batch} of the {args.arch_images} architecture images, one
weight step on a batch of the {args.train_images} weight images), CIFAR-10 subset of the official
training split, seed {args.seed}; lam_lr {rows[0]['lam_lr']}, damping {rows[0]['damping']}, latency
temperature {rows[0]['latency_temperature']}, arc_learning_rate {rows[0]['arc_learning_rate']}.

{table}

- *exported*: `profiler.profile(sample)` of the exported sample; *argmax*: of the argmax
  architecture before the export's projection (`repaired labels`: how many labels the projection
  changed; 0 = the search's argmax landed by itself).
- *repaired labels (nats)*: the preference (`log softmax(alpha)`) the projection gave up; a
  small value means it only settled near-tied labels.
- *lam*: the final Lagrange multiplier (positive: the constraint pushed towards cheaper choices);
  *LAT(alpha)*: the expected latency of the final distribution `softmax(alpha)`; *LAT_t*: the
  constrained one, under `softmax(alpha / t)` at the final latency temperature.
- The router threshold is not searched (fixed escalation rate); calibrate it afterwards.
- Full records, with the environment: `results.csv`.
"""


if __name__ == '__main__':
    main()
