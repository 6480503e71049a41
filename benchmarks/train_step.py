"""Training-step time of the largest cifar-preset network, measured side by side in one run.

Compares, at batch 128 on 32x32 inputs: the frozen ``BigLittleModel`` vs the weight-shared
supernet running the same subnet, each in NCHW and channels-last memory format; and the cost of
``space.activate(sample)``. Prints ratios and appends flat records with the environment to
``benchmarks/results/train_step.csv``.

    .venv/bin/python benchmarks/train_step.py --threads 2
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def environment(threads: int) -> dict:
    from nni_bigLittle.app.runs import environment as run_environment
    env = run_environment(threads)
    return {'date': env['date'][:10], **{key: env.get(key, '') for key in ('cpu', 'logical_cpus', 'threads', 'python', 'torch', 'nni', 'nni_bigLittle')}}


def time_steps(model, x, y, warmup: int, repeat: int) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        little, big = model(x)
        loss = F.cross_entropy(big, y) + F.cross_entropy(little, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'train_step.csv'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from nni_bigLittle.nn.costs import arch_costs
    from nni_bigLittle.search_spaces import BigLittleSpace
    space = BigLittleSpace('cifar', num_classes=10).train()
    sample = space.largest()
    macs = arch_costs(space.spec.decode(sample)).big.macs
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))

    records = []
    env = environment(args.threads)
    space.activate(sample)
    for name, build in (('frozen', lambda: space.freeze(sample).train()), ('supernet', lambda: space)):
        for fmt in ('nchw', 'channels_last'):
            model = build()
            memory = torch.channels_last if fmt == 'channels_last' else torch.contiguous_format
            model = model.to(memory_format=memory)
            times = time_steps(model, x.contiguous(memory_format=memory), y, args.warmup, args.repeat)
            median = statistics.median(times)
            records.append({**env, 'model': name, 'memory_format': fmt, 'batch': args.batch,
                            'big_mmacs': round(macs / 1e6, 2), 'step_median_s': round(median, 4),
                            'step_min_s': round(min(times), 4), 'step_max_s': round(max(times), 4),
                            'epoch_45k_min': round(median * 45000 / args.batch / 60, 2)})
            space.to(memory_format=torch.contiguous_format)

    start = time.perf_counter()
    for seed in range(20):
        space.activate(space.random(random_state=seed))
    activate_s = (time.perf_counter() - start) / 20

    base = records[0]['step_median_s']
    print(f"largest cifar big network: {records[0]['big_mmacs']} MMACs, batch {args.batch}, "
          f"{args.threads} threads, {env['cpu']}")
    for r in records:
        print(f"  {r['model']:<8} {r['memory_format']:<13} step {r['step_median_s']:.3f} s "
              f"(x{r['step_median_s'] / base:.2f} of frozen nchw)  -> {r['epoch_45k_min']:.1f} min per 45k epoch")
    print(f'  random sample + activate: {activate_s * 1000:.1f} ms')
    for r in records:
        r['activate_ms'] = round(activate_s * 1000, 1)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with out.open('a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        if new:
            writer.writeheader()
        writer.writerows(records)
    print(f'appended {len(records)} records to {out}')


if __name__ == '__main__':
    main()
