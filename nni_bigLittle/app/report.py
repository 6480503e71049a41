"""Costing the rows of the results report: every model, ours or a baseline, as parts run with probabilities.

A row of the report is a list of ``(part, probability)``: a static network is one part run always; our
dynamic pair is its little path (with the router) always and its big tail with the escalation rate; a
cascade is the small network always and the large one with its escalation rate; a BranchyNet model is
its segments, each with the share of inputs that reach it. Each part is costed once, the same way for
every model, so rows compare on equal terms:

- MACs and parameters from the kernels detected in the part (``hw_predictors.kernels``);
- latency *measured* on this machine: the part exported to ONNX and timed with ONNX Runtime (batch 1,
  1 intra-op thread, as ``local_cpu_ort`` was built);
- latency *predicted* for each named device, and energy predicted where an energy predictor exists;
- weights in MB (fp32).

The row's figure is the probability-weighted sum (its expected cost).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from nni_bigLittle.nn.router import escalation_mask

__all__ = ['Part', 'PartCoster', 'expected_costs', 'top_k']


@dataclass
class Part:
    """A module run on inputs of ``input_shape`` (batch 1); ``key`` names it in the cost cache."""
    key: str
    module: nn.Module
    input_shape: tuple[int, ...]


class _FirstOutput(nn.Module):
    """Parts whose forward returns a tuple (features for the next part) are costed on all their outputs,
    but exported with plain tensors only."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor):
        out = self.module(x)
        return tuple(out) if isinstance(out, (tuple, list)) else out


@dataclass
class PartCoster:
    """Costs parts once each (see the module docstring); ``measure=False`` skips the ONNX Runtime timings."""
    devices: Sequence[str] = ('raspberry_pi_4', 'jetson_nano_trt_fp32')
    energy_devices: Sequence[str] = ('jetson_nano_trt_fp32',)
    measure: bool = True
    repeats: int = 200
    cache: dict[str, dict[str, float]] = field(default_factory=dict)

    def cost(self, part: Part) -> dict[str, float]:
        if part.key in self.cache:
            return self.cache[part.key]
        from nni_bigLittle.hw_predictors.devices import load_predictor
        from nni_bigLittle.hw_predictors.kernels import detect_kernels, torch_to_onnx
        module = _FirstOutput(part.module).eval()
        kernels = detect_kernels(module, 'torch', part.input_shape)
        params = sum(p.numel() for p in part.module.parameters())
        costs = {'macs': float(sum(k.flops for k in kernels)), 'params': float(params),
                 'weights_mb': params * 4 / 1e6}
        for device in self.devices:
            costs[f'latency_ms_{device}'] = float(load_predictor(device).predict(module, 'torch', part.input_shape))
        for device in self.energy_devices:
            costs[f'energy_mj_{device}'] = float(load_predictor(device, metric='energy').predict(
                module, 'torch', part.input_shape))
        if self.measure:
            from nni_bigLittle.hw_predictors.profilers import OnnxRuntimeProfiler
            with torch.no_grad():
                onnx_bytes = torch_to_onnx(module, part.input_shape)
            result = OnnxRuntimeProfiler(threads=1, warmup=20, repeats=self.repeats).profile(onnx_bytes)
            costs['latency_ms_measured'] = float(result.median_ms)
        self.cache[part.key] = costs
        return costs


def expected_costs(coster: PartCoster, parts: Sequence[tuple[Part, float]]) -> dict[str, float]:
    """The probability-weighted sum of the parts' costs; parameters and weights count every distinct part once
    (a model holds all its parts, whichever an input runs)."""
    total: dict[str, float] = {}
    seen = set()
    for part, probability in parts:
        costs = coster.cost(part)
        for name, value in costs.items():
            if name in ('params', 'weights_mb'):
                if part.key not in seen:
                    total[name] = total.get(name, 0.0) + value
            else:
                total[name] = total.get(name, 0.0) + probability * value
        seen.add(part.key)
    return total


def module_key(prefix: str, module: nn.Module) -> str:
    """A cache key that changes with the module's weights (two parts with equal names but other weights differ)."""
    digest = hashlib.sha1()
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes()[:4096])
    return f'{prefix}:{digest.hexdigest()[:12]}'


def top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of inputs whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[1])
    best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((best == labels[:, None]).any(1).mean())


def feature_shapes(modules: Sequence[nn.Module], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The input shape of each of ``modules`` run in turn (each returns ``(logits, features)`` or features)."""
    shapes, x = [], torch.zeros(input_shape)
    with torch.no_grad():
        for module in modules:
            shapes.append(tuple(x.shape))
            out = module.eval()(x)
            x = out[1] if isinstance(out, (tuple, list)) else out
    return shapes


# ---------------------------------------------------------------------------------------------------------
# collect: the rows of a co-training run (and a baselines run), costed; needs the weights
# ---------------------------------------------------------------------------------------------------------
OPERATING_POINTS = (0.25, 0.5, 0.75)  # escalation rates (ours, cascade) / shares reaching the final head (exits)
STATIC_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)  # Once-for-All style static subnets: every choice at this quantile
REPORT_FORMAT = 'nni_bigLittle.report/1'


def _scaled_sample(spec, t: float) -> dict[str, Any]:
    """Every choice of the space at quantile ``t`` of its options (0: smallest, 1: largest)."""
    from nni_bigLittle.search_spaces.spec import make_valid
    sample = {label: options[int(round(t * (len(options) - 1)))] for label, options in spec.choices().items()}
    return sample if spec.check(sample) is None else make_valid(spec, sample)


def _row(family: str, name: str, logits: np.ndarray, labels: np.ndarray, parts, coster: PartCoster,
         **extra: Any) -> dict[str, Any]:
    row = {'family': family, 'model': name, 'top1': float((logits.argmax(1) == labels).mean()),
           'top5': top_k(logits, labels, 5), **extra}
    row.update(expected_costs(coster, parts))
    row['parts'] = [{'part': part.key, 'probability': float(p)} for part, p in parts]
    return row


def _ours(run, device: str, coster: PartCoster, progress: bool) -> tuple[list[dict[str, Any]], int]:
    from nni_bigLittle.evaluation import collect_outputs, operating_point
    from nni_bigLittle.deploy.export import _LittleGraph
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    from nni_bigLittle.app.stages.inputs import run_data, trained_supernet
    from nni_bigLittle.app.stages.search import front_record
    from nni_bigLittle.strategies.evolution import build_model
    record = front_record(run, device, 'accurate')
    supernet = trained_supernet(run)
    _, calibration, val_loader, test_loader = run_data(run)
    model = build_model(supernet, record, calibration)
    shape = (1, 3, model.arch.resolution, model.arch.resolution)
    with torch.no_grad():
        fork_shape = (1, *model.fork_features(torch.zeros(shape)).shape[1:])
    little = Part(module_key('ours/little+router', model), _LittleGraph(model), shape)
    tail = Part(module_key('ours/big_tail', model), model.big_tail_module(), fork_shape)
    big = Part(module_key('ours/big', model), model.big_path(), shape)
    val, test = collect_outputs(model, val_loader), collect_outputs(model, test_loader)
    labels = test.targets.numpy()
    little_logits, big_logits = test.little_logits.numpy(), test.big_logits.numpy()
    where = f'{device} front, most accurate'
    rows = [_row('ours', 'Ours (little)', little_logits, labels, [(little, 1.0)], coster, source=where),
            _row('ours', 'Ours (big)', big_logits, labels, [(big, 1.0)], coster, source=where)]
    for target in OPERATING_POINTS:
        threshold = operating_point(val, model.router, target_escalation=target).threshold
        point = operating_point(test, model.router, threshold=threshold)
        escalated = escalation_mask(test.confidence(model.router.policy, getattr(model.router, 'mlp', None)), threshold)
        logits = np.where(escalated[:, None], big_logits, little_logits)
        rows.append(_row('ours', f'Ours (dynamic, {point.escalation_rate:.0%} escalated)', logits, labels,
                         [(little, 1.0), (tail, point.escalation_rate)], coster, source=where,
                         escalation_rate=point.escalation_rate, threshold=threshold, policy=model.router.policy))
    spec = supernet.spec
    for t in STATIC_SCALES:
        static = supernet.freeze(_scaled_sample(spec, t))
        recalibrate_batchnorm(static, calibration)
        outputs = collect_outputs(static.eval(), test_loader)
        part = Part(module_key(f'ours/static{t}', static), static.big_path(), shape)
        rows.append(_row('supernet static', f'Supernet static subnet (scale {t:g})', outputs.big_logits.numpy(),
                         outputs.targets.numpy(), [(part, 1.0)], coster, source='Once-for-All style: every choice '
                         f'at quantile {t:g}, batch norm re-calibrated'))
    return rows, model.arch.resolution


def _entropy(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(1)


def _exit_index(heads: list[np.ndarray], threshold: float) -> np.ndarray:
    """BranchyNet's rule: the first exit whose softmax entropy is below ``threshold``; the final head otherwise."""
    index = np.full(len(heads[0]), len(heads) - 1)
    for k in range(len(heads) - 2, -1, -1):
        index = np.where(_entropy(heads[k]) < threshold, k, index)
    return index


def _baselines(folder, coster: PartCoster, resolution: int) -> list[dict[str, Any]]:
    from nni_bigLittle.app.baselines import EarlyExitNetwork, create_baseline
    from nni_bigLittle.app.runs import RunFolder
    from nni_bigLittle.evaluation import PairOutputs, operating_point
    root = folder / 'baselines'
    cfg = RunFolder(folder).config()
    shape = (1, 3, resolution, resolution)
    rows, outputs, parts = [], {}, {}
    for name in cfg['models']:
        if not (root / name / 'outputs.npz').is_file():
            continue  # not trained (yet): the report says which rows are missing
        with np.load(root / name / 'outputs.npz') as data:
            outputs[name] = {k: data[k] for k in data.files}
        status = json.loads((root / name / 'status.json').read_text())
        num_classes = outputs[name]['test_logits_0'].shape[1]
        model = create_baseline(name, num_classes, resolution, cfg['exit_stages'])
        model.load_state_dict(torch.load(root / name / 'model.pt', map_location='cpu'))
        model.eval()
        if isinstance(model, EarlyExitNetwork):
            segments = model.segments()
            parts[name] = [Part(module_key(f'{name}/segment{k}', s), s, sh)
                           for k, (s, sh) in enumerate(zip(segments, feature_shapes(segments, shape)))]
        else:
            parts[name] = [Part(module_key(name, model), model, shape)]
            final = outputs[name]['test_logits_0']
            rows.append(_row('static baseline', f'{name} (timm, static)', final, outputs[name]['test_labels'],
                             [(parts[name][0], 1.0)], coster, source=f'{status["epochs"]} epochs, same recipe'))
    if 'mobilenetv3_small' in outputs and 'mobilenetv3_large' in outputs:
        small, large = outputs['mobilenetv3_small'], outputs['mobilenetv3_large']
        pair = {s: PairOutputs(torch.from_numpy(small[f'{s}_logits_0']), None, torch.from_numpy(large[f'{s}_logits_0']),
                               torch.from_numpy(small[f'{s}_labels'])) for s in ('val', 'test')}
        for target in OPERATING_POINTS:
            threshold = operating_point(pair['val'], 'max_softmax', target_escalation=target).threshold
            point = operating_point(pair['test'], 'max_softmax', threshold=threshold)
            escalated = escalation_mask(pair['test'].confidence('max_softmax'), threshold)
            logits = np.where(escalated[:, None], large['test_logits_0'], small['test_logits_0'])
            rows.append(_row('cascade', f'Cascade MNv3-S → L ({point.escalation_rate:.0%} escalated)', logits,
                             small['test_labels'], [(parts['mobilenetv3_small'][0], 1.0),
                                                    (parts['mobilenetv3_large'][0], point.escalation_rate)],
                             coster, escalation_rate=point.escalation_rate, threshold=threshold,
                             source='independently trained, max-softmax threshold calibrated on validation'))
    name = 'branchynet_mobilenetv3_large'
    if name in outputs:
        out = outputs[name]
        heads = {s: [out[f'{s}_logits_{k}'] for k in range(len(parts[name]))] for s in ('val', 'test')}
        candidates = np.unique(np.concatenate([_entropy(h) for h in heads['val'][:-1]]))
        for target in OPERATING_POINTS:
            reach = np.array([(_exit_index(heads['val'], t) == len(heads['val']) - 1).mean() for t in
                              candidates[::max(1, len(candidates) // 400)]])
            threshold = float(candidates[::max(1, len(candidates) // 400)][int(np.abs(reach - target).argmin())])
            index = _exit_index(heads['test'], threshold)
            logits = np.stack(heads['test'])[index, np.arange(len(index))]
            reached = [float((index >= k).mean()) for k in range(len(parts[name]))]
            rows.append(_row('early exit', f'BranchyNet MNv3-L ({reached[-1]:.0%} to the final head)', logits,
                             out['test_labels'], list(zip(parts[name], reached)), coster, threshold=threshold,
                             escalation_rate=reached[-1], source='exits trained jointly, entropy threshold '
                                                                 'calibrated on validation'))
    return rows


def collect_report(run_dir, baselines_dir=None, device: str = 'raspberry_pi_4', measure: bool = True,
                   progress: bool = True) -> dict[str, Any]:
    """Every row of the results table with its accuracy and costs, written to ``<run>/results/report.json``
    (a text record: ``nni-biglittle records`` copies it, ``render_report`` needs nothing else)."""
    from nni_bigLittle.app.runs import RunFolder, environment
    run = RunFolder(run_dir)
    coster = PartCoster(measure=measure)
    rows, resolution = _ours(run, device, coster, progress)
    missing = []
    if baselines_dir is not None:
        base = Path(baselines_dir)
        rows += _baselines(base, coster, resolution)
        cfg = RunFolder(base).config()
        missing = [m for m in cfg['models'] if not (base / 'baselines' / m / 'outputs.npz').is_file()]
    report = {'format': REPORT_FORMAT, 'run': run.path.name, 'device_front': device,
              'baselines_run': None if baselines_dir is None else Path(baselines_dir).name,
              'baselines_missing': missing, 'operating_points': list(OPERATING_POINTS), 'rows': rows,
              'parts': coster.cache, 'measured': measure,
              'measurement': 'ONNX Runtime, CPUExecutionProvider, batch 1, 1 intra-op thread, median of '
                             f'{coster.repeats} runs per part' if measure else None,
              'environment': environment(),
              'command': 'nni-biglittle ' + ' '.join(sys.argv[1:]) if sys.argv[1:2] == ['report'] else None}
    out = run.results_dir
    out.mkdir(exist_ok=True)
    (out / 'report.json').write_text(json.dumps(report, indent=1) + '\n')
    return report


# ---------------------------------------------------------------------------------------------------------
# render: table, plots and headline from report.json records alone (no weights, no data)
# ---------------------------------------------------------------------------------------------------------
COLUMNS = (('model', 'model'), ('family', 'family'), ('top1', 'Top-1'), ('top5', 'Top-5'),
           ('mmacs', 'MACs (M, expected)'), ('params_m', 'params (M)'),
           ('latency_ms_measured', 'latency ms, this machine (measured)'),
           ('latency_ms_jetson_nano_trt_fp32', 'latency ms, Jetson Nano (predicted)'),
           ('latency_ms_raspberry_pi_4', 'latency ms, Raspberry Pi 4 (predicted)'),
           ('weights_mb', 'memory MB (fp32 weights)'),
           ('energy_mj_jetson_nano_trt_fp32', 'energy mJ, Jetson Nano (predicted)'))
LATENCIES = (('latency_ms_measured', 'this machine (measured)'),
             ('latency_ms_jetson_nano_trt_fp32', 'Jetson Nano (predicted)'),
             ('latency_ms_raspberry_pi_4', 'Raspberry Pi 4 (predicted)'))


def load_report(folder) -> dict[str, Any]:
    """``report.json`` of a run folder or of its committed records (``results/report.json`` or ``report.json``)."""
    folder = Path(folder)
    for path in (folder / 'results' / 'report.json', folder / 'report.json', folder):
        if path.is_file():
            report = json.loads(path.read_text())
            if report.get('format') != REPORT_FORMAT:
                raise ValueError(f'{path} is not a {REPORT_FORMAT} record.')
            return report
    raise FileNotFoundError(f'{folder} holds no results/report.json; run `nni-biglittle report collect {folder}` '
                            'where its weights are.')


def table_rows(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for report in reports:
        for row in report['rows']:
            rows.append({**row, 'mmacs': row['macs'] / 1e6, 'params_m': row['params'] / 1e6,
                         'run': report['run']})
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    keys = [k for k, _ in COLUMNS if any(k in r for r in rows)]
    head = [dict(COLUMNS)[k] for k in keys]
    lines = ['| ' + ' | '.join(head) + ' |', '|---|---|' + '---:|' * (len(keys) - 2)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append('–' if v is None else f'{v:.4f}' if k in ('top1', 'top5') else
                         f'{v:.3f}' if isinstance(v, float) else str(v))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _plot(rows: list[dict[str, Any]], x: str, xlabel: str, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    frame = pd.DataFrame([r for r in rows if r.get(x) is not None])
    if frame.empty:
        return
    fig, ax = plt.subplots(figsize=(7.5, 5))
    sns.scatterplot(data=frame, x=x, y='top1', hue='family', style='family', s=70, ax=ax)
    for family, group in frame.groupby('family'):
        ordered = group.sort_values(x)
        if len(ordered) > 1 and family in ('ours', 'cascade', 'early exit', 'supernet static'):
            ax.plot(ordered[x], ordered['top1'].cummax(), alpha=0.35, linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('Top-1 (test)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def headline(rows: list[dict[str, Any]]) -> list[str]:
    """The README's two comparisons per latency column, or why one cannot be made."""
    lines = []
    static = [r for r in rows if r['family'] in ('static baseline', 'supernet static')]
    dynamic = [r for r in rows if r['family'] == 'ours' and 'escalation_rate' in r]
    cascades = sorted((r for r in rows if r['family'] == 'cascade'), key=lambda r: r['escalation_rate'])
    for key, where in LATENCIES:
        if not any(key in r for r in rows):
            continue
        if static:
            best = max(static, key=lambda r: r['top1'])
            reach = [r for r in dynamic if r['top1'] >= best['top1']]
            if reach:
                fastest = min(reach, key=lambda r: r[key])
                lines.append(f'- {where}: at the best static model\'s accuracy ({best["model"]}, {best["top1"]:.4f}), '
                             f'our fastest dynamic operating point that reaches it ({fastest["model"]}) takes '
                             f'{fastest[key] / best[key]:.2f}× its latency ({fastest[key]:.3f} vs {best[key]:.3f} ms).')
            else:
                top = max(dynamic, key=lambda r: r['top1']) if dynamic else None
                lines.append(f'- {where}: no dynamic operating point of ours reaches the best static model\'s accuracy '
                             f'({best["model"]}, {best["top1"]:.4f})' + (f'; our best is {top["top1"]:.4f} at '
                                                                          f'{top[key]:.3f} ms.' if top else '.'))
        if cascades:
            cascade = cascades[len(cascades) // 2]
            within = [r for r in dynamic if r[key] <= cascade[key]]
            if within:
                ours = max(within, key=lambda r: r['top1'])
                lines.append(f'- {where}: at the cascade\'s latency ({cascade["model"]}, {cascade[key]:.3f} ms), our '
                             f'most accurate dynamic point within it ({ours["model"]}) is '
                             f'{100 * (ours["top1"] - cascade["top1"]):+.1f} points Top-1 '
                             f'({ours["top1"]:.4f} vs {cascade["top1"]:.4f}).')
            else:
                lines.append(f'- {where}: none of our dynamic operating points is as fast as the cascade '
                             f'({cascade["model"]}, {cascade[key]:.3f} ms).')
    return lines


def render_report(folders: Sequence[str], out) -> list[Path]:
    """Table (CSV, Markdown), Pareto plots (PNG) and the headline of the ``report.json`` records in ``folders``."""
    import csv
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = [load_report(f) for f in folders]
    rows = table_rows(reports)
    written = []
    keys = [k for k, _ in COLUMNS if any(k in r for r in rows)] + ['escalation_rate', 'threshold', 'source', 'run']
    with open(out / 'table.csv', 'w', newline='') as fh:
        writer = csv.DictWriter(fh, keys, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    written.append(out / 'table.csv')
    plots = [(key, f'latency (ms), {where}', f'pareto_{key.replace("latency_ms_", "latency_")}.png')
             for key, where in LATENCIES]
    plots += [('mmacs', 'MACs (M, expected per input)', 'pareto_macs.png'),
              ('energy_mj_jetson_nano_trt_fp32', 'energy (mJ), Jetson Nano (predicted)', 'pareto_energy_nano.png')]
    for key, label, name in plots:
        if any(r.get(key) is not None for r in rows):
            _plot(rows, key, label, out / name)
            written.append(out / name)
    missing = sorted({m for r in reports for m in r.get('baselines_missing', [])})
    text = ['# Results', '', _markdown(rows), '## Headline', '', *headline(rows), '']
    if missing:
        text += [f'Not in this table yet (not trained): {", ".join(missing)}.', '']
    for report, folder in zip(reports, folders):
        ablations = sorted((Path(folder) / 'results').glob('ablation_*.md')) if (Path(folder) / 'results').is_dir() \
            else []
        if ablations:
            text += [f'## Ablations ({report["run"]})', '']
            for path in ablations:
                text += [f'### {path.stem.replace("_", " ")}', '', path.read_text(), '']
    env = reports[0]['environment']
    commands = [r['command'] for r in reports if r.get('command')]
    text += ['## How these numbers were made', '', *[f'- Collected with `{c}`.' for c in commands],
             f'- Runs: {", ".join(sorted({r["run"] for r in reports}))}; baselines: '
             f'{", ".join(sorted({str(r["baselines_run"]) for r in reports}))}.',
             f'- Measured latency: {reports[0].get("measurement") or "not measured"}.',
             '- Predicted latency and energy: the bundled device predictors, every part of a model costed as one '
             'invocation; dynamic and cascade rows are expected costs at the measured escalation rate.',
             f'- Environment: {json.dumps(env)}', '']
    (out / 'README.md').write_text('\n'.join(text))
    written.append(out / 'README.md')
    return written
