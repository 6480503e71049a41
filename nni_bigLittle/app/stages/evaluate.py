"""The report stage of the pipeline: test-split numbers of models across each searched front, next to the
largest and smallest static subnets."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nni_bigLittle.app.runs import RunFolder, environment
from nni_bigLittle.app.stages.inputs import run_data, trained_supernet
from nni_bigLittle.app.stages.search import pick_across_front

__all__ = ['evaluate_stage', 'write_table']


def evaluate_stage(run_dir: str | os.PathLike, count: int = 3) -> dict[str, Any]:
    """Test-split numbers of ``count`` models across each device's front (little, big and dynamic
    accuracy at the calibrated threshold, escalation rate, expected MACs, predicted latency) next to
    the largest and smallest static subnets; writes ``<run>/results/front_models.{csv,md}``."""
    import json
    from nni_bigLittle.nn.costs import arch_costs
    from nni_bigLittle.evaluation import collect_outputs, operating_point
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    from nni_bigLittle.strategies.evolution import build_model
    run = RunFolder(run_dir)
    supernet = trained_supernet(run)
    _, calibration, _, test_loader = run_data(run)
    spec = supernet.spec
    rows = []
    searched = run.searched_devices()
    if not searched:
        raise FileNotFoundError(f'{run.path} has no search results; run `nni-biglittle search {run.path}` first.')
    profilers = {d: BigLittleCostProfiler(spec, d, build_expression=False) for d in searched}

    def costs(sample, p):
        arch = spec.decode(sample)
        out = {'expected_mmacs': arch_costs(arch).expected_macs(p) / 1e6}
        for d, prof in profilers.items():
            out[f'latency_ms_{d}'] = prof.breakdown(sample, escalation_rate=p)['expected']
        return out

    for device in searched:
        summary = run.front(device)
        objective = summary['objective']
        for rank, record in enumerate(pick_across_front(summary['front'], objective, count)):
            model = build_model(supernet, record, calibration)
            point = operating_point(collect_outputs(model, test_loader), model.router)
            rows.append({'model': f'dynamic ({device} front #{rank + 1})', 'searched_for': device,
                         'policy': record['policy'], 'threshold': record['threshold'],
                         'val_accuracy': record['accuracy'], 'test_little_acc': point.little_acc,
                         'test_big_acc': point.big_acc, 'test_dynamic_acc': point.accuracy,
                         'test_escalation_rate': point.escalation_rate,
                         **costs(record['sample'], point.escalation_rate), 'sample': json.dumps(record['sample'])})
    for name, sample in (('static largest', spec.largest()), ('static smallest', spec.smallest())):
        model = supernet.freeze(sample)
        recalibrate_batchnorm(model, calibration)
        point = operating_point(collect_outputs(model.eval(), test_loader), 'max_softmax', threshold=1.0)
        rows.append({'model': name, 'searched_for': '', 'policy': 'always big', 'threshold': 1.0,
                     'val_accuracy': '', 'test_little_acc': point.little_acc, 'test_big_acc': point.big_acc,
                     'test_dynamic_acc': point.big_acc, 'test_escalation_rate': 1.0,
                     **_static_costs(spec, sample, profilers), 'sample': json.dumps(sample)})
    out = run.results_dir
    out.mkdir(exist_ok=True)
    write_table(rows, out / 'front_models')
    run.update_status(evaluate={'done': True, 'rows': len(rows), 'environment': environment()})
    return {'rows': rows}


def _static_costs(spec, sample, profilers) -> dict[str, float]:
    """A static big network: the big path alone, no router, no little network."""
    from nni_bigLittle.nn.costs import arch_costs
    out = {'expected_mmacs': arch_costs(spec.decode(sample)).big_macs / 1e6}
    for d, prof in profilers.items():
        out[f'latency_ms_{d}'] = prof.breakdown(sample)['big']
    return out


def write_table(rows: list[dict[str, Any]], stem: Path) -> None:
    import csv
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix('.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    shown = [k for k in keys if k != 'sample']
    fmt = lambda v: f'{v:.4f}' if isinstance(v, float) else str(v)  # noqa: E731
    lines = ['| ' + ' | '.join(shown) + ' |', '|' + '---|' * len(shown)]
    lines += ['| ' + ' | '.join(fmt(r.get(k, '')) for k in shown) + ' |' for r in rows]
    stem.with_suffix('.md').write_text('\n'.join(lines) + '\n')
