"""The search stage: NSGA-II over a trained supernet, one Pareto front of operating points per device, and the
picks across a front that later stages take."""
from __future__ import annotations

import os
import time
from typing import Any

from nni_bigLittle.app.config import SEARCH_DEFAULTS, ConfigError
from nni_bigLittle.app.runs import RunFolder, environment
from nni_bigLittle.app.stages.inputs import run_data, trained_supernet

__all__ = ['search_stage', 'front_record', 'pick_across_front', 'format_fronts']


def search_stage(run_dir: str | os.PathLike, progress: bool = True, **options: Any) -> dict[str, Any]:
    """NSGA-II on the trained supernet of a co-training run, one search per device sharing one cache of
    subnet outputs; writes ``<run>/search/<device>/front.{json,csv}``. Resumes per device."""
    from nni_bigLittle.strategies.evolution import SubnetCache, search_supernet
    unknown = sorted(set(options) - set(SEARCH_DEFAULTS))
    if unknown:
        raise ConfigError(f'Unknown search option(s) {unknown}; valid: {sorted(SEARCH_DEFAULTS)}.')
    opts = {**SEARCH_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    run = RunFolder(run_dir)
    supernet = trained_supernet(run)
    _, calibration, val_loader, _ = run_data(run)
    cache = SubnetCache(supernet, calibration, val_loader)
    started = time.time()
    results = {}
    # the pairs co-training trains at every step seed the first population: random draws almost never
    # reach the largest pairs, the most accurate end of the front
    from nni_bigLittle.strategies.cotraining import max_pair, min_pair
    from nni_bigLittle.strategies.evolution import DEFAULT_ESCALATION_GRID, ESCALATION_LABEL
    spec = supernet.spec
    initial = [{**max_pair(spec, fork), ESCALATION_LABEL: rate} for fork in spec.forks
               for rate in (0.3, max(DEFAULT_ESCALATION_GRID))]
    initial.append({**min_pair(spec, len(spec.trunk) // 2), ESCALATION_LABEL: 0.3})
    initial = initial[:opts['population']]
    for device in opts['devices']:
        result = search_supernet(supernet, calibration, val_loader, device=device, metric=opts['metric'],
                                 population=opts['population'], generations=opts['generations'],
                                 budget=opts['budget'], run_dir=run.search_dir(device), seed=opts['seed'],
                                 cache=cache, initial=initial, progress=progress)
        results[device] = {'front_size': len(result.front), 'evaluations': result.evaluations,
                           'objective': result.objective}
        print(f'[search] {device}: {len(result.front)} models on the front ({result.objective} vs accuracy)')
        for record in result.front:
            print(f'  acc {record["accuracy"]:.4f}  {result.objective} {record[result.objective]:.3f}  '
                  f'escalation {record["escalation_rate"]:.2f}  policy {record["policy"]}')
    status = {'done': True, 'options': opts, 'devices': results, 'cache_subnets': cache.computed,
              'wall_s': round(time.time() - started, 1), 'environment': environment()}
    run.update_status(search=status)
    return status


def front_record(run: RunFolder, device: str, pick: str = 'accurate') -> dict[str, Any]:
    """The searched front's ``pick`` model of ``device`` ('middle' or 'accurate', of :func:`pick_across_front`'s
    three)."""
    if pick not in ('middle', 'accurate'):
        raise ValueError(f"pick must be 'middle' or 'accurate', got {pick!r}.")
    summary = run.front(device)
    picks = pick_across_front(summary['front'], summary['objective'], 3)
    return picks[-1] if pick == 'accurate' else picks[1 if len(picks) > 1 else 0]


def pick_across_front(front: list[dict[str, Any]], objective: str, count: int = 3) -> list[dict[str, Any]]:
    """``count`` front models spread over the cost axis: cheapest, most accurate, and evenly between."""
    ordered = sorted(front, key=lambda r: r[objective])
    if len(ordered) <= count:
        return ordered
    picks = [round(i * (len(ordered) - 1) / (count - 1)) for i in range(count)]
    return [ordered[i] for i in dict.fromkeys(picks)]


def format_fronts(run_dir: str | os.PathLike) -> str:
    """The searched Pareto fronts of a run as text tables (one per device)."""
    run = RunFolder(run_dir)
    out = []
    for device in run.searched_devices():
        summary = run.front(device)
        objective = summary['objective']
        out.append(f'Pareto front for {device} ({len(summary["front"])} models, validation):')
        out.append(f'  {"accuracy":>8}  {objective:>28}  {"escalation":>10}  {"little_acc":>10}  {"big_acc":>8}  policy')
        for r in sorted(summary['front'], key=lambda r: r[objective]):
            out.append(f'  {r["accuracy"]:8.4f}  {r[objective]:28.3f}  {r["escalation_rate"]:10.2f}  '
                       f'{r["little_acc"]:10.4f}  {r["big_acc"]:8.4f}  {r["policy"]}')
    return '\n'.join(out)
