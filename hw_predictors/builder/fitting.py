"""Fitting and validating: the two-stage calibration (isolated kernels -> in-network costs, network-level cache
term), the per-kernel regressors and their held-out metrics, the validation summary and the report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import ForestModel, KernelLatencyPredictor, network_term_value, \
    regression_metrics
from nni_bigLittle.hw_predictors.builder.config import BuildConfig
from nni_bigLittle.hw_predictors.builder.kernel_configs import KernelConfig, boundary_elements
from nni_bigLittle.hw_predictors.builder.profiling import _now, _Session


# ============================================================================================ calibration


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


_MU_GRID = tuple(round(float(m), 2) for m in np.arange(0.4, 3.01, 0.1))
_WIDTH_GRID = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)


def _fit_with_cache_term(t: np.ndarray, offset: np.ndarray, base: np.ndarray, w: np.ndarray
                         ) -> tuple[np.ndarray, float | None, float | None, float, float]:
    """``t ≈ offset + base · coef [+ c · w · σ((w - μ)/width)]`` by least squares on relative errors.

    (μ, width) come from a grid and the cache term may be left out; the candidate with the lowest
    leave-one-out mean relative error wins. Returns (coef, μ or None, width or None, its LOO error,
    the LOO error without the cache term)."""
    n = len(t)
    y = t - offset

    def solve(x, idx):
        coef, *_ = np.linalg.lstsq(x[idx] / t[idx, None], y[idx] / t[idx], rcond=None)
        return coef

    def loo(x):
        pred = np.empty(n)
        for i in range(n):
            pred[i] = offset[i] + x[i] @ solve(x, np.arange(n) != i)
        return float(np.mean(np.abs(pred - t) / t))

    plain = loo(base)
    best = (plain, None, None, base)
    for mu in _MU_GRID:
        for width in _WIDTH_GRID:
            x = np.c_[base, w * _sigmoid((w - mu) / width)]
            if solve(x, np.arange(n))[-1] <= 0:
                continue  # weights streaming from L3 cannot make a network faster
            err = loo(x)
            if err < best[0]:
                best = (err, mu, width, x)
    err, mu, width, x = best
    coef = solve(x, np.arange(n))
    if mu is None:
        coef = np.append(coef, 0.0)
    return coef, mu, width, err, plain


def _cache_term(c: float, mu: float, width: float) -> dict[str, Any]:
    return {'kind': 'weight_streaming', 'ms_per_mb': c, 'center_mb': mu, 'width_mb': width,
            'formula': 'ms_per_mb * W * sigmoid((W - center_mb) / width_mb), W = weight MB (fp32 params)',
            'why': 'weights that no longer fit in the per-core L2 cache stream from L3 on every inference'}


@dataclass
class Calibration:
    """Stage A, from measured kernels:
    ``T_net = overhead + Σ_k [T_iso(k) - a - b·boundary(k)] + c·W·σ((W - μ)/w)``
    (ms, MB, million elements). ``a`` and ``b`` turn isolated measurements into in-network kernel costs."""
    overhead: float = 0.0
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0
    mu: float = 1.5
    width: float = 0.2
    run_overhead_ms: float = 0.0   # measured session.run cost of a one-element graph (for reference)
    block: int = 16                # NCHWc channel block of this CPU (boundary_elements)
    n_networks: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def in_network(self, kernel: Kernel, isolated_ms: float, floor: float = 0.05) -> float:
        """A kernel's in-network cost from its isolated measurement (never below ``floor`` of it)."""
        return max(isolated_ms - self.a - self.b * boundary_elements(kernel, self.block), floor * isolated_ms)

    def network_term(self) -> dict[str, Any]:
        return _cache_term(self.c, self.mu, self.width)


@dataclass
class NetworkCalibration:
    """Stage B, from the fitted kernel models: ``T_net = overhead + scale · Σ_k model(k) + c·W·σ((W - μ)/w)``,
    fitted on the calibration networks with the models' predictions (it absorbs what the models smooth away)."""
    overhead: float = 0.0
    scale: float = 1.0
    c: float = 0.0
    mu: float = 1.5
    width: float = 0.2
    n_networks: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def network_term(self) -> dict[str, Any]:
        return _cache_term(self.c, self.mu, self.width)


def network_term_ms(term: dict[str, Any] | None, kernels: Sequence[Kernel]) -> float:
    """The network-level latency term stored in a built predictor's ``metadata['network_term']``.

    A sum of per-kernel costs cannot express it: whether a kernel's weights are still cached depends on
    everything else the network touched since the kernel last ran, i.e. on the whole network.
    """
    return network_term_value(term, kernels)  # the one evaluation the predictor also uses


def predict_latency_ms(predictor: KernelLatencyPredictor, kernels: Sequence[Kernel]) -> float:
    """A built predictor's latency of a whole network: kernels + overhead + the network term."""
    return predictor.predict_kernels(kernels).total  # includes metadata['network_term'] (predictor.network_term)


def _fit_calibration(rows: list[dict[str, float]], run_overhead_ms: float, block: int = 16) -> Calibration:
    """Stage A on rows with ``measured``, ``iso_sum``, ``n_kernels``, ``boundary``, ``weight_mb``."""
    n = len(rows)
    if n < 6:
        return Calibration(overhead=run_overhead_ms, a=run_overhead_ms, run_overhead_ms=run_overhead_ms, block=block,
                           n_networks=n,
                           metrics={'note': f'only {n} calibration networks: a = o = measured run overhead, b = c = 0'})
    t = np.array([r['measured'] for r in rows])
    iso = np.array([r['iso_sum'] for r in rows])
    base = np.c_[np.ones(n), -np.array([r['n_kernels'] for r in rows], float), -np.array([r['boundary'] for r in rows])]
    w = np.array([r['weight_mb'] for r in rows])
    coef, mu, width, err, plain = _fit_with_cache_term(t, iso, base, w)
    if coef[2] < 0:  # reorders cannot make an isolated kernel faster: too few or too noisy networks
        coef, mu, width, err, plain = _fit_with_cache_term(t, iso, base[:, :2], w)
        coef = np.r_[coef[:2], 0.0, coef[2:]]
    cal = Calibration(overhead=float(coef[0]), a=float(coef[1]), b=float(coef[2]), c=float(coef[3]),
                      mu=mu if mu is not None else 1.5, width=width if width is not None else 0.2,
                      run_overhead_ms=run_overhead_ms, block=block, n_networks=n)
    fitted = iso + base @ coef[:3] + cal.c * w * _sigmoid((w - cal.mu) / cal.width)
    cal.metrics = {'loo_mape': 100 * err, 'no_cache_term_loo_mape': 100 * plain,
                   'fit': regression_metrics(t, fitted), 'isolated_sum': regression_metrics(t, iso)}
    return cal


def _fit_network_calibration(rows: list[dict[str, float]], stage_a: Calibration) -> NetworkCalibration:
    """Stage B on rows with ``measured``, ``model_sum``, ``weight_mb``; with fewer than 6 networks, or a
    fit that makes no physical sense, stage A's overhead and cache term are kept (scale 1)."""
    n = len(rows)
    fallback = NetworkCalibration(overhead=stage_a.overhead, c=stage_a.c, mu=stage_a.mu, width=stage_a.width,
                                  n_networks=n)
    if n < 6:
        fallback.metrics = {'note': f'only {n} calibration networks: stage A kept, scale 1'}
        return fallback
    t = np.array([r['measured'] for r in rows])
    base = np.c_[np.ones(n), [r['model_sum'] for r in rows]]
    w = np.array([r['weight_mb'] for r in rows])
    coef, mu, width, err, plain = _fit_with_cache_term(t, np.zeros(n), base, w)
    if not 0.5 < coef[1] < 2.0:
        fallback.metrics = {'note': f'stage B gave scale {coef[1]:.3g} (too noisy or too few kernels): stage A kept'}
        return fallback
    ncal = NetworkCalibration(overhead=float(coef[0]), scale=float(coef[1]), c=float(coef[2]),
                              mu=mu if mu is not None else 1.5, width=width if width is not None else 0.2,
                              n_networks=n)
    fitted = base @ coef[:2] + ncal.c * w * _sigmoid((w - ncal.mu) / ncal.width)
    ncal.metrics = {'loo_mape': 100 * err, 'no_cache_term_loo_mape': 100 * plain, 'fit': regression_metrics(t, fitted)}
    return ncal


# ============================================================================================ kernel models


def _fit_models(session: _Session, cal: Calibration, cfgs: Sequence[KernelConfig],
                make_regressor: Callable[[], Any]) -> dict[str, ForestModel]:
    by_type: dict[str, tuple[list[Kernel], list[float]]] = {}
    for c in cfgs:
        k = session.kernels[c.key()]
        ks, ys = by_type.setdefault(c.type, ([], []))
        ks.append(k)
        ys.append(cal.in_network(k, session.iso[c.key()]))
    models = {}
    for kernel_type, (ks, ys) in by_type.items():
        if len(ks) >= 3:
            models[kernel_type] = ForestModel.fit(ks, ys, make_regressor())
    return models


def _evaluate(session: _Session, cal: Calibration, models: dict[str, ForestModel], cfgs: Sequence[KernelConfig]
              ) -> tuple[dict[str, Any], list[tuple[float, KernelConfig]]]:
    """Held-out metrics per type and overall, on in-network targets and on the isolated measurements;
    plus (relative error, configuration) pairs."""
    metrics: dict[str, Any] = {}
    errors: list[tuple[float, KernelConfig]] = []
    all_t, all_p, all_ti, all_pi = [], [], [], []
    by_type: dict[str, list[KernelConfig]] = {}
    for c in cfgs:
        by_type.setdefault(c.type, []).append(c)
    for kernel_type, group in sorted(by_type.items()):
        if kernel_type not in models:
            continue
        ks = [session.kernels[c.key()] for c in group]
        iso = np.array([session.iso[c.key()] for c in group])
        target = np.array([cal.in_network(k, t) for k, t in zip(ks, iso)])
        pred = models[kernel_type].predict(ks)
        pred_iso = pred + np.array([cal.a + cal.b * boundary_elements(k, cal.block) for k in ks])
        m = regression_metrics(target, pred)
        m['isolated'] = regression_metrics(iso, pred_iso)
        metrics[kernel_type] = m
        # nn-Meter picks refinement points by the error on the kernel measurements themselves
        errors += [(float(abs(p - t) / t), c) for p, t, c in zip(pred_iso, iso, group)]
        all_t += list(target)
        all_p += list(pred)
        all_ti += list(iso)
        all_pi += list(pred_iso)
    if all_t:
        metrics['all'] = regression_metrics(all_t, all_p)
        metrics['all']['isolated'] = regression_metrics(all_ti, all_pi)
    return metrics, errors


def _routes(models: dict[str, Any]) -> dict[str, str]:
    return {t: t for t in models}


# ============================================================================================ validation and report


@dataclass
class BuildResult:
    predictor: KernelLatencyPredictor
    path: Path | None
    calibration: Calibration
    rounds: list[dict[str, Any]]
    kernel_metrics: dict[str, Any]
    validation: list[dict[str, Any]]
    summary: dict[str, Any]
    environment: dict[str, Any]
    n_new_measurements: int
    n_cached_measurements: int
    elapsed_s: float
    network_calibration: NetworkCalibration | None = None
    report_files: list[Path] = field(default_factory=list)


def _log_calibration(log, cal: Calibration, label: str) -> None:
    if cal.metrics.get('loo_mape') is None:
        log(f'    {label} calibration: {cal.metrics.get("note")}')
        return
    log(f'    {label} calibration (stage A, {cal.n_networks} networks, measured kernels): isolated kernels sum to '
        f'{cal.metrics["isolated_sum"]["mape"]:.0f} % off; overhead {1000 * cal.overhead:.2f} us, per kernel '
        f'a = {1000 * cal.a:.2f} us (one-element graph {1000 * cal.run_overhead_ms:.2f} us), boundary '
        f'b = {cal.b:.3f} ms per M elements, cache term {cal.c:.4f} ms/MB x sigmoid((W - {cal.mu:.2f}) / '
        f'{cal.width:.2f}); leave-one-out MAPE {cal.metrics["loo_mape"]:.2f} % '
        f'({cal.metrics["no_cache_term_loo_mape"]:.2f} % without the cache term)')


def _flops_baseline(rows: list[dict[str, float]]) -> tuple[float, float]:
    """``T = α + β · MMACs`` fitted on the calibration networks (relative error), the FLOPs-only baseline."""
    if len(rows) < 2:
        return 0.0, 0.0
    t = np.array([r['measured'] for r in rows])
    x = np.c_[np.ones(len(rows)), [r['macs'] / 1e6 for r in rows]]
    coef, *_ = np.linalg.lstsq(x / t[:, None], np.ones(len(rows)), rcond=None)
    return float(coef[0]), float(coef[1])


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    t = [r['measured_ms'] for r in rows]
    out = regression_metrics(t, [r['predicted_ms'] for r in rows])
    out['kernel_sum_only'] = regression_metrics(t, [r['kernel_sum_ms'] for r in rows])
    out['flops_baseline'] = regression_metrics(t, [r['flops_baseline_ms'] for r in rows])
    for part in ('little', 'big'):
        sub = [r for r in rows if r['part'] == part]
        if sub:
            out[part] = regression_metrics([r['measured_ms'] for r in sub], [r['predicted_ms'] for r in sub])
    out['max_pass_spread'] = float(max(r['pass_spread'] for r in rows))
    out['median_pass_spread'] = float(np.median([r['pass_spread'] for r in rows]))
    return out


def _fmt(x) -> str:
    return 'n/a' if x is None else f'{x:.2f}'


def _pct(x) -> str:
    return 'n/a' if x is None else f'{100 * x:.0f} %'


def _summary_text(summary: dict[str, Any]) -> str:
    if not summary:
        return 'no validation networks'
    fb, ks = summary['flops_baseline'], summary['kernel_sum_only']
    return (f'validation on {summary["n"]} networks: {100 * summary["within_10"]:.1f} % within ±10 % '
            f'({100 * summary["within_5"]:.1f} % within ±5 %), MAPE {summary["mape"]:.2f} %, '
            f'Spearman {summary.get("spearman", float("nan")):.3f}; without the network term '
            f'{100 * ks["within_10"]:.1f} % / MAPE {ks["mape"]:.2f} %; FLOPs-only baseline '
            f'{100 * fb["within_10"]:.1f} % / MAPE {fb["mape"]:.2f} % / '
            f'Spearman {fb.get("spearman", float("nan")):.3f}')


def format_validation_table(rows: list[dict[str, Any]]) -> str:
    head = (f'{"network":<28} {"MMACs":>6} {"W MB":>5} {"measured":>9} {"predicted":>9} {"error":>7} '
            f'{"kern.sum":>9} {"FLOPs-lin":>9} {"FL err":>7}  (ms)')
    lines = [head, '-' * len(head)]
    for r in rows:
        lines.append(f'{r["network"]:<28} {r["mmacs"]:>6.2f} {r["weight_mb"]:>5.2f} {r["measured_ms"]:>9.4f} '
                     f'{r["predicted_ms"]:>9.4f} {r["error_pct"]:>+6.1f}% {r["kernel_sum_ms"]:>9.4f} '
                     f'{r["flops_baseline_ms"]:>9.4f} {r["flops_baseline_error_pct"]:>+6.1f}%')
    return '\n'.join(lines)


_CSV_FIELDS = ('network', 'part', 'seed', 'n_kernels', 'mmacs', 'weight_mb', 'measured_ms', 'passes', 'pass_spread',
               'predicted_ms', 'error_pct', 'kernel_sum_ms', 'network_term_ms', 'kernel_sum_error_pct',
               'flops_baseline_ms', 'flops_baseline_error_pct')


def write_report(result: BuildResult, report_dir: str | Path, config: BuildConfig | None = None) -> list[Path]:
    """``validation.csv`` (one row per network, environment columns) and ``README.md`` in ``report_dir``."""
    import csv
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    env = result.environment
    meta = result.predictor.metadata
    created = meta.get('created', _now())
    csv_path = folder / 'validation.csv'
    env_cols = {'cpu_model': env['cpu_model'], 'threads': env['threads'], 'onnxruntime': env['onnxruntime'],
                'torch': env['torch'], 'python': env['python'], 'date': created}
    with open(csv_path, 'w', newline='', encoding='utf-8') as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_CSV_FIELDS) + list(env_cols))
        writer.writeheader()
        for r in result.validation:
            writer.writerow({**{k: (round(r[k], 6) if isinstance(r[k], float) else r[k]) for k in _CSV_FIELDS},
                             **env_cols})
    cal = result.calibration
    s = result.summary
    km = result.kernel_metrics
    lines = [
        '# Local CPU latency predictor (`local_cpu_ort`): validation',
        '',
        f'Built by `nni-biglittle predictor build-local` on {created[:10]}: nn-Meter\'s method (kernel prior from our '
        'spaces + perturbations, random forest per kernel type, adaptive refinement) with a calibration of what an '
        'isolated kernel measurement misses, validated end to end on random frozen networks never used in fitting.',
        '',
        '## Environment',
        '',
        f'- CPU: {env["cpu_model"]} ({env["cpu_count"]} logical CPUs, {env["machine"]}), {env["system"]}',
        f'- ONNX Runtime {env["onnxruntime"]}, CPUExecutionProvider, {env["threads"]} intra-op thread(s), '
        'sequential execution, all graph optimizations; batch 1, fp32',
        f'- torch {env["torch"]}, numpy {env["numpy"]}, scikit-learn {env["sklearn"]}, Python {env["python"]}, '
        f'nni_bigLittle {env["nni_bigLittle"]}',
        f'- measurements: {meta["build"].get("kernel_measurements", 0)} isolated kernel and '
        f'{meta["build"].get("network_measurements", 0)} end-to-end network measurements made over '
        f'{meta["build"].get("measurement_span_min", float("nan")):.1f} min (wall clock, from the measurement '
        f'cache); load average during the network passes {_load_text(meta["build"].get("load_during_networks"))} '
        '(a shared 2-core machine: other jobs ran meanwhile)',
        f'- this run: {result.elapsed_s / 60:.1f} min, {result.n_new_measurements} new measurements '
        f'(the rest from the cache); seed {meta["build"]["seed"]}, {meta["n_measurements"]} kernel '
        'configurations in the final fit',
        f'- command: `{_command_line(config)}`' if config is not None else '',
        '',
        '## Summary',
        '',
    ]
    if s:
        lines += [
            '| predictor | networks | within ±10 % | within ±5 % | MAPE | Spearman |',
            '|---|---:|---:|---:|---:|---:|',
            _md_row('kernels + overhead + network term (`KernelLatencyPredictor.predict`)', s),
            _md_row('kernels + overhead only (without the network term)', s['kernel_sum_only']),
            _md_row('FLOPs-only linear baseline (fitted on the calibration networks)', s['flops_baseline']),
        ]
        for part in ('little', 'big'):
            if part in s:
                lines.append(_md_row(f'  {part} networks only (full predictor)', s[part]))
        lines += ['', f'Spread between the pass medians of a network (max / min - 1): median '
                  f'{100 * s.get("median_pass_spread", float("nan")):.1f} %, largest {100 * s["max_pass_spread"]:.1f} %. '
                  f'{100 * s.get("kernels_profiled_exactly", float("nan")):.0f} % of the validation networks\' kernels '
                  'have a configuration that was profiled (the prior samples the space the networks come from); '
                  'the networks themselves were never measured for fitting.', '']
    ncal = result.network_calibration
    lines += [
        '## Method',
        '',
        f'- Prior: kernel configurations of random `cifar` samples (little paths and big networks, with the parts of '
        f'their MBConv blocks) and of `imagenet` samples, plus random perturbations within the observed ranges; '
        f'each profiled as a standalone module (exported to ONNX, batch norm folded) whose detected kernel must '
        f'be exactly the one meant. {meta["n_measurements"]} configurations in the final fit.',
        f'- Stage A, {cal.n_networks} calibration networks (cifar seeds {min(meta["build"]["calibration_seeds"])}..'
        f'{max(meta["build"]["calibration_seeds"])}, half of them chosen to spread the big networks\' weight sizes) '
        f'measured end to end and kernel by kernel: overhead {1000 * cal.overhead:.2f} µs per inference, '
        f'a = {1000 * cal.a:.2f} µs per isolated kernel (a one-element graph costs '
        f'{1000 * cal.run_overhead_ms:.2f} µs '
        f'per `session.run`), b = {cal.b:.3f} ms per million boundary elements (the NCHWc reorders an isolated '
        f'convolution pays and a network does not), cache term {cal.c:.4f} ms/MB · W · σ((W − {cal.mu:.2f} MB)/'
        f'{cal.width:.2f} MB) for weights beyond the L2 cache. Kernel models are fitted on '
        f'`T_iso − a − b · boundary` (in-network costs).',
    ]
    if cal.metrics.get('loo_mape') is not None:
        lines.append(f'  With their measured kernels, the plain sum of isolated kernels is off by '
                     f'{cal.metrics["isolated_sum"]["mape"]:.1f} % (MAPE); stage A leave-one-out '
                     f'{cal.metrics["loo_mape"]:.2f} % ({cal.metrics["no_cache_term_loo_mape"]:.2f} % without the '
                     'cache term).')
    if ncal is not None and ncal.metrics.get('loo_mape') is not None:
        lines.append(f'- Stage B, the same networks predicted by the fitted kernel models: '
                     f'latency = {1000 * ncal.overhead:.2f} µs + {ncal.scale:.4f} · Σ kernels + {ncal.c:.4f} ms/MB '
                     f'· W · σ((W − {ncal.mu:.2f})/{ncal.width:.2f}); leave-one-out MAPE '
                     f'{ncal.metrics["loo_mape"]:.2f} %. '
                     'The scale is folded into the kernel models, the constant is the predictor\'s `overhead`, the '
                     'cache term is `metadata["network_term"]`.')
    lines.append('- Networks are measured in passes spread over the build (start, middle, end; more when the passes '
                 'disagree by more than 8 %), calibration and validation networks interleaved; the median of the '
                 'pass medians counts. Isolated measurements whose median is more than 15 % above their 10th '
                 'percentile (another process took the core) are repeated.')
    if km.get('all'):
        iso = km['all']['isolated']
        lines.append(f'- Kernel test set ({km["all"]["n"]} configurations never fitted): MAPE {iso["mape"]:.2f} %, '
                     f'{100 * iso["within_10"]:.1f} % within ±10 % on the isolated measurements (nn-Meter\'s kernel '
                     f'metric); on the in-network targets MAPE {km["all"]["mape"]:.2f} %.')
    lines += ['', '### Adaptive refinement (errors on the isolated kernel measurements)', '',
              '| round | train kernels | refine MAPE | refine ±10 % | test MAPE | test ±10 % |',
              '|---:|---:|---:|---:|---:|---:|']
    for r in result.rounds:
        lines.append(f'| {r["round"]} | {r["n_train"]} | {_fmt(r["refine_mape"])} % | {_pct(r["refine_within_10"])} | '
                     f'{_fmt(r["test_mape"])} % | {_pct(r["test_within_10"])} |')
    lines += ['', '### Kernel test set per type', '',
              '| type | n | isolated MAPE | isolated within ±10 % | in-network MAPE |', '|---|---:|---:|---:|---:|']
    for t, m in km.items():
        if t != 'all':
            lines.append(f'| {t} | {m["n"]} | {m["isolated"]["mape"]:.2f} % | '
                         f'{100 * m["isolated"]["within_10"]:.1f} % | '
                         f'{m["mape"]:.2f} % |')
    if result.validation:
        lines += ['', '## Per network', '', '```', format_validation_table(result.validation), '```', '',
                  'Rows with environment columns: `validation.csv`.']
    md_path = folder / 'README.md'
    md_path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return [md_path, csv_path]


def _load_text(loads) -> str:
    return 'n/a' if not loads else f'{loads[0]:.1f} / {loads[1]:.1f} / {loads[2]:.1f} (min / median / max)'


def _command_line(config: BuildConfig) -> str:
    """The CLI call that repeats this build (paths left out: they are the defaults or machine-specific)."""
    parts = ['nni-biglittle predictor build-local', f'--threads {config.threads}',
             f'--budget-minutes {config.budget_minutes:g}', f'--validate {config.validate}',
             f'--calibrate {config.calibrate}', f'--rounds {config.rounds}', f'--passes {config.network_passes}',
             f'--seed {config.seed}']
    if config.regressor != 'random-forest':
        parts.append(f'--regressor {config.regressor}')
    if not config.imagenet_archs:
        parts.append('--no-imagenet')
    parts += [f'--timm {m}' for m in config.timm_models]
    if config.report_dir:
        parts.append('--report-dir benchmarks/results/local_cpu_ort')
    return ' '.join(parts)


def _md_row(name: str, m: dict[str, Any]) -> str:
    return (f'| {name} | {m["n"]} | {100 * m["within_10"]:.1f} % | {100 * m["within_5"]:.1f} % | {m["mape"]:.2f} % | '
            f'{m.get("spearman", float("nan")):.3f} |')
