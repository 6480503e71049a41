"""The fit report: held-out metrics next to the FLOPs-only baseline (:func:`format_fit_report`) and
``FIT_REPORT.md`` with the environment, summary and file sizes (:func:`write_fit_report`)."""
from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.devices.common import REBUILD_COMMAND, FitReport

REPORT_NAME = 'FIT_REPORT.md'


# ============================================================================================ reports


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return 'n/a'
    return f'{x:.{digits}g}' if isinstance(x, float) else str(x)


def _row(m: dict[str, Any]) -> list[str]:
    return [_fmt(m.get('rmse')), f'{m["mape"]:.2f} %' if 'mape' in m else 'n/a',
            f'{100 * m["within_5"]:.1f} %' if 'within_5' in m else 'n/a',
            f'{100 * m["within_10"]:.1f} %' if 'within_10' in m else 'n/a', _fmt(m.get('spearman'))]


def format_fit_report(reports: Sequence[FitReport]) -> str:
    """Markdown: held-out metrics of each predictor next to the FLOPs-only baseline, then the notes."""
    lines = ['| predictor | metric | held-out n | ours RMSE | ours MAPE | ours ±5 % | ours ±10 % | ours Spearman '
             '| FLOPs RMSE | FLOPs MAPE | FLOPs ±5 % | FLOPs ±10 % | FLOPs Spearman |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in reports:
        lines.append('| ' + ' | '.join([f'`{r.key}`', f'{r.metric} ({r.unit})', str(r.heldout.get('n', 0)),
                                        *_row(r.heldout), *_row(r.baseline)]) + ' |')
    lines.append('')
    lines.append('RMSE in the predictor\'s unit; MAPE = mean absolute percentage error; ±5 % / ±10 % = share of '
                 'held-out items predicted within 5 % / 10 %; FLOPs = `cost = a·MACs + b` fitted on the same '
                 'training split (least squares weighted by 1/cost).')
    ood = [r for r in reports if r.extra.get('ood')]
    if ood:
        lines += ['', '### Out of distribution: iCAS real networks (Jetson Nano, TensorRT fp32)', '',
                  '| predictor | n | MAPE | ±10 % | Spearman | per network: measured → predicted |',
                  '|---|---:|---:|---:|---:|---|']
        for r in ood:
            o = r.extra['ood']
            per = '; '.join(f'{n} {v["measured"]:.4g} → {v["predicted"]:.4g}' for n, v in o['models'].items())
            lines.append(f'| `{r.key}` | {o["n"]} | {o["mape"]:.1f} % | {100 * o["within_10"]:.0f} % | '
                         f'{_fmt(o.get("spearman"))} | {per} |')
        lines += ['', ood[0].extra['ood'].get('comparison', ''), '']
        for note in dict.fromkeys(n for r in ood for n in r.extra['ood'].get('notes', [])):
            lines.append(f'- {note}')
    for r in reports:
        lines += ['', f'### `{r.key}`', '']
        if r.device:
            lines.append(f'- device: {r.device}')
        lines += [f'- measurements: {r.n}' + (' networks' if r.n_networks else ' kernels'), f'- split: {r.split}']
        if 'by_type' in r.extra:
            for t, m in r.extra['by_type'].items():
                lines.append(f'- held-out {t}: n {m["n"]}, MAPE {m["mape"]:.2f} %, ±10 % {100 * m["within_10"]:.1f} %')
        lines += [f'- {note}' for note in r.notes]
    return '\n'.join(lines)


def _environment() -> dict[str, str]:
    import scipy
    import sklearn
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fh:
            names = [line.split(':', 1)[1].strip() for line in fh if line.startswith('model name')]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return {'cpu': cpu, 'cpu_count': str(os.cpu_count()), 'threads': '1 (scikit-learn n_jobs=1)',
            'python': platform.python_version(), 'numpy': np.__version__, 'scipy': scipy.__version__,
            'scikit-learn': sklearn.__version__, 'platform': platform.platform()}


_CAVEATS = {
    'jetson_nano_trt_fp32': 'per-layer costs are inferred from network totals of plain conv / depthwise-separable '
                            'stacks; on real networks (out of distribution) the error is much larger, see below',
    'raspberry_pi_4': 'the benchmark latencies are exact sums of per-block lookup-table entries over 108 block '
                      'variants, so held-out networks are new combinations of known blocks: near-perfect held-out '
                      'scores say little about new block shapes (leave-one-shape-out block MAPE in the notes)',
    'jetson_nano_tvm': 'few points and a wide throughput spread between similar workloads in the TopHub records',
    'jetson_tx2_tvm': 'few points (33 held out, 3 of them depthwise)',
    'raspberry_pi_3b_tvm': 'few points (42 held out, 2 of them depthwise)',
}


def _summary_lines(reports: Sequence[FitReport]) -> list[str]:
    lines = []
    for r in reports:
        w10 = r.heldout.get('within_10', 0.0)
        verdict = 'good' if w10 >= 0.9 else 'moderate' if w10 >= 0.5 else 'poor'
        gain = r.baseline.get('mape', float('nan')) / max(r.heldout.get('mape', float('nan')), 1e-9)
        line = (f'- `{r.key}`: {verdict} on held-out data ({100 * w10:.1f} % within ±10 %, MAPE '
                f'{r.heldout.get("mape", float("nan")):.2f} %; FLOPs baseline MAPE {r.baseline.get("mape", 0):.2f} %, '
                f'{gain:.1f}x higher)')
        if r.name in _CAVEATS:
            line += f'; caveat: {_CAVEATS[r.name]}'
        if r.extra.get('ood'):
            o = r.extra['ood']
            line += (f'. Real networks (VGG, ResNet, MobileNetV2, EfficientNet, ...): MAPE {o["mape"]:.0f} % on '
                     f'{o["n"]} networks vs 15.5 % (latency) / 15.3 % (energy) reported by iCAS for its own '
                     'predictors')
        lines.append(line + '.')
    return lines


def write_fit_report(reports: Sequence[FitReport], path: str | Path, runtime_s: float | None = None) -> Path:
    """FIT_REPORT.md: the rebuild command, the environment, the table, per-predictor notes and file sizes."""
    path = Path(path)
    env = _environment()
    lines = ['# Bundled predictors: fit report', '',
             'Generated by `rebuild_bundled` (`nni_bigLittle.hw_predictors.devices`). Reproduce from the repository '
             'root with:', '', '```bash', REBUILD_COMMAND, '```', '',
             'With the same scikit-learn version a rebuild gives the same predictions (fixed split and forest seeds, '
             'single-threaded fits); only the `created` date in the metadata changes.', '',
             '## Environment', '']
    lines += [f'- {k}: {v}' for k, v in env.items()]
    if runtime_s is not None:
        lines.append(f'- full rebuild wall time: {runtime_s:.0f} s')
    lines += ['', '## Summary', ''] + _summary_lines(reports)
    lines += ['', '## Held-out accuracy vs a FLOPs-only baseline', '', format_fit_report(reports), '',
              '## Files', '', '| file | size | fit time |', '|---|---:|---:|']
    for r in reports:
        size = r.path.stat().st_size if r.path and Path(r.path).exists() else 0
        lines.append(f'| `{Path(r.path).name if r.path else r.key}` | {size / 1024:.0f} KiB | {r.seconds:.1f} s |')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')
    return path
