"""``nni-biglittle bench``: a deployment bundle and baseline ONNX models measured side by side, in one run.

Rows, all over the same images and batch size:

- ``dynamic``: the bundle's runtime (``little.onnx``, then ``big_tail.onnx`` on the escalated rows) at the
  calibrated threshold;
- ``dynamic (If graph)``: ``dynamic.onnx``, one graph with an ``If`` node (batch 1 only);
- ``never escalate``: the runtime with a threshold no input is below, so the router and the dispatch are
  all it adds to ``little.onnx alone``: one ``session.run`` and an argmax, the floor of the little network
  (these two are also timed call by call, alternating, for the overhead check);
- ``big.onnx (static)``: the pair's big network on every input, the static model the pair replaces;
- every ``--baseline NAME=PATH.onnx``.

Timings interleave: each of ``rounds`` rounds runs every row over all images, the row order rotating from
round to round, so drift on a shared machine (turbo, other processes) spreads over all rows instead of
landing on one. Per call: p50 / p90 / mean, throughput. Peak memory is measured per row in a fresh
process (``run_bundle.py --memory-probe``), since one process's peak cannot be split between rows.
With a latency predictor (``local_cpu_ort``, built on this machine by ``nni-biglittle predictor
build-local``), each bundle row also gets the predicted latency at the escalation rate it measured.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nni_bigLittle.deploy import run_bundle
from nni_bigLittle.deploy.run_bundle import BigLittleRuntime, BundleError
from nni_bigLittle.nn.router import NEVER

__all__ = ['bench', 'format_bench', 'write_bench']

REFERENCE_ROW = 'little.onnx alone'


def _session_row(path: Path, threads: int | None) -> Callable[[np.ndarray], tuple[np.ndarray, None]]:
    import onnxruntime as ort
    if not path.is_file():
        raise FileNotFoundError(f'baseline model {path} does not exist.')
    session = ort.InferenceSession(str(path), run_bundle.session_options(threads), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name

    def call(x: np.ndarray):
        return session.run(None, {name: x})[0].argmax(1), None
    return call


def _predicted(manifest: Mapping[str, Any], predictor: str | None) -> Callable[[float], dict[str, float]] | None:
    """``p -> CostBreakdown`` of the bundle's pair under ``predictor`` (None when it cannot be costed)."""
    if predictor is None or not manifest.get('spec'):
        return None
    from nni_bigLittle.evaluation.pairs import _profiler
    from nni_bigLittle.search_spaces.spec import SpaceSpec
    arch = SpaceSpec.from_dict(manifest['spec']).decode(manifest['sample'])
    profiler = _profiler(predictor, 'latency')
    return lambda p: profiler.breakdown(arch, p)


def bench(bundle: str | os.PathLike, *, data: str | os.PathLike | None = None,
          baselines: Mapping[str, str | os.PathLike] | None = None, threads: int | None = 1, batch_size: int = 1,
          images: int | None = 500, rounds: int = 5, warmup: int = 20, predictor: str | None = 'local_cpu_ort',
          memory: bool = True, energy: bool = True, progress: bool = True) -> dict[str, Any]:
    """Measure the rows described in the module docstring; returns rows, checks and the environment.
    With ``energy``, each row's energy per image is metered where a meter exists (RAPL for the CPU
    package, tegrastats on a Jetson board); otherwise ``energy_note`` says why there is none."""
    from nni_bigLittle.hw_predictors.predictor import PredictorError
    bundle = Path(bundle)
    if batch_size < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f'need batch_size >= 1, rounds >= 1, warmup >= 0; got {batch_size}, {rounds}, {warmup}.')
    runtime = BigLittleRuntime(bundle, threads=threads)
    data = Path(data) if data is not None else bundle / 'data.npz'
    if not data.exists():
        raise FileNotFoundError(f'no data to run: {data} does not exist; pass --data (an .npz or an image folder).')
    x, labels = run_bundle.load_data(data, runtime.manifest, images)
    rows: dict[str, Callable[[np.ndarray], Any]] = {'dynamic': runtime.predict}
    if batch_size == 1 and (bundle / 'dynamic.onnx').is_file():
        rows['dynamic (If graph)'] = runtime.predict_dynamic
    rows['never escalate'] = lambda b: runtime.predict(b, NEVER)
    rows[REFERENCE_ROW] = lambda b: (runtime.little.run(None, {'input': b})[0].argmax(1), None)
    if (bundle / 'big.onnx').is_file():
        rows['big.onnx (static)'] = _session_row(bundle / 'big.onnx', threads)
    probes = {'dynamic': 'split', 'dynamic (If graph)': 'dynamic', 'never escalate': 'never', REFERENCE_ROW: 'little',
              'big.onnx (static)': 'big'}
    for name, path in (baselines or {}).items():
        if name in rows:
            raise ValueError(f'baseline name {name!r} is taken by a bundle row; choose another.')
        rows[name] = _session_row(Path(path), threads)
        probes[name] = str(Path(path).resolve())

    names = list(rows)
    batches = [np.ascontiguousarray(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    for name in names:  # lazy allocations, caches
        for b in batches[:warmup]:
            rows[name](b)
    times = {name: [] for name in names}
    outputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=rounds * len(names), desc='bench (rows x rounds)', unit='row')
    meter, energy_note = _energy_meter(energy)
    joules = {name: 0.0 for name in names}
    clock = time.perf_counter
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call, spent, preds, escs = rows[name], times[name], [], []
            if meter is not None:
                meter.start()
            for b in batches:
                began = clock()
                pred, esc = call(b)
                spent.append((clock() - began) * 1e3)
                if r == 0:
                    preds.append(pred)
                    escs.append(esc)
            if meter is not None:
                joules[name] += meter.stop(len(x)).joules
            if r == 0:
                outputs[name] = (np.concatenate(preds), None if escs[0] is None else np.concatenate(escs))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()

    cost = None
    prediction_note = None
    if batch_size != 1:
        prediction_note = 'latency predictors are for batch 1; none predicted'
    else:
        try:
            cost = _predicted(runtime.manifest, predictor)
            if cost is None and predictor is not None:
                prediction_note = 'the manifest holds no space spec to cost the pair with'
        except PredictorError as err:
            prediction_note = f'no {predictor} predictor here ({str(err).split(". ")[0]}); build it with ' \
                              '`nni-biglittle predictor build-local`'
    results = []
    for name in names:
        pred, esc = outputs[name]
        stats = run_bundle.latency_stats(times[name], images=rounds * len(x))
        row = {'row': name, 'images': int(len(x)), 'escalation_rate': None if esc is None else float(esc.mean()),
               'accuracy': None if labels is None else float((pred == labels).mean()), **stats}
        if meter is not None:
            row['energy_mj'] = joules[name] * 1e3 / (rounds * len(x))  # measured, whole package / board
        if cost is not None and name in ('dynamic', 'dynamic (If graph)', 'never escalate', REFERENCE_ROW,
                                         'big.onnx (static)'):
            p = row['escalation_rate'] or 0.0
            breakdown = cost(p)
            predicted = breakdown['big'] if name == 'big.onnx (static)' else \
                breakdown['expected'] if name.startswith('dynamic') else breakdown['little'] + breakdown['router']
            row['predicted_ms'] = float(predicted)
            row['prediction_error'] = float(row['mean_ms'] / predicted - 1.0)
        results.append(row)
    reference = next(r for r in results if r['row'] == REFERENCE_ROW)['mean_ms']
    for row in results:
        row['vs_little_alone'] = row['mean_ms'] / reference
    if memory:
        for row in results:
            row.update(_memory(bundle, probes[row['row']], data, threads, images, batch_size))
    by_name = {r['row']: r for r in results}
    paired = _paired(rows['never escalate'], rows[REFERENCE_ROW], batches, rounds)
    checks = {'dispatch_overhead': paired['mean_ratio'] - 1.0, 'dispatch_overhead_median': paired['median_ratio'] - 1.0,
              'dispatch_overhead_calls': paired['calls']}
    if 'prediction_error' in by_name['dynamic']:
        checks['dynamic_prediction_error'] = by_name['dynamic']['prediction_error']
    return {'bundle': bundle.name, 'data': data.name, 'threshold': runtime.threshold, 'batch_size': batch_size,
            'rounds': rounds, 'warmup': warmup, 'threads': threads, 'predictor': predictor if cost else None,
            'prediction_note': prediction_note, 'energy_meter': None if meter is None else meter.name,
            'energy_note': energy_note, 'rows': results, 'checks': checks,
            'environment': _environment(threads)}


def _energy_meter(wanted: bool):
    """``(backend or None, note)``: a CPU-side energy meter (RAPL, tegrastats), or why there is none."""
    if not wanted:
        return None, 'not requested'
    from nni_bigLittle.hw_predictors.energy import detect_energy_backends
    found = {backend.name: (backend, ok, reason) for backend, ok, reason in detect_energy_backends()}
    for name in ('RAPL', 'tegrastats'):  # NVML meters a GPU, which these ONNX Runtime CPU sessions do not use
        backend, ok, _ = found[name]
        if ok:
            return backend, f'measured with {name}'
    return None, 'no energy meter here (' + '; '.join(f'{n}: {found[n][2]}' for n in ('RAPL', 'tegrastats')) + ')'


def _paired(first: Callable, second: Callable, batches: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Two rows timed call by call on the same batch, alternating which goes first: the finest side-by-side
    comparison, for a difference (the router and dispatch) far smaller than the drift between rounds."""
    clock = time.perf_counter
    a, b = [], []
    for r in range(rounds):
        for i, batch in enumerate(batches):
            order = ((first, a), (second, b)) if (i + r) % 2 == 0 else ((second, b), (first, a))
            for call, spent in order:
                began = clock()
                call(batch)
                spent.append(clock() - began)
    return {'mean_ratio': float(np.mean(a) / np.mean(b)), 'median_ratio': float(np.median(a) / np.median(b)),
            'calls': len(a)}


def _memory(bundle: Path, row: str, data: Path, threads, images, batch_size) -> dict[str, float | None]:
    command = [sys.executable, str(Path(run_bundle.__file__)), '--memory-probe', row, '--bundle', str(bundle),
               '--data', str(data), '--batch-size', str(batch_size)]
    if threads is not None:
        command += ['--threads', str(threads)]
    if images is not None:
        command += ['--limit', str(images)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BundleError(f'memory probe of {row!r} failed: {done.stderr.strip()[-500:]}')
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    peak, before = probe['peak_rss_mb'], probe['before_sessions_mb']
    return {'peak_rss_mb': peak, 'model_rss_mb': None if peak is None else peak - before}


def _environment(threads: int | None) -> dict[str, Any]:
    import nni_bigLittle
    env = run_bundle.environment(threads)
    env['nni_bigLittle'] = nni_bigLittle.__version__
    env['command'] = 'nni-biglittle bench ' + ' '.join(sys.argv[2:]) if sys.argv[1:2] == ['bench'] else None
    return env


def _fmt(value, spec: str, missing: str = '–') -> str:
    return missing if value is None else format(value, spec)


def format_bench(result: Mapping[str, Any]) -> str:
    """The result as Markdown: the side-by-side table, the two checks, the environment."""
    lines = [f'Bundle `{result["bundle"]}` on `{result["data"]}`: batch {result["batch_size"]}, '
             f'{result["rounds"]} interleaved rounds over {result["rows"][0]["images"]} images '
             f'({result["warmup"]} warm-up calls per row), {result["threads"] or "default"} intra-op thread(s), '
             f'router threshold {result["threshold"]:.4g}.', '']
    has_pred = any('predicted_ms' in r for r in result['rows'])
    has_mem = any('peak_rss_mb' in r for r in result['rows'])
    head = ['row', 'accuracy', 'escalation', 'p50 ms', 'p90 ms', 'mean ms', 'images/s', f'× {REFERENCE_ROW}']
    if has_pred:
        head += [f'predicted ms ({result["predictor"]})', 'measured vs predicted']
    if has_mem:
        head += ['peak RSS MB', 'model RSS MB']
    has_energy = any('energy_mj' in r for r in result['rows'])
    if has_energy:
        head += [f'energy mJ/image (measured, {result["energy_meter"]})']
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' + '---:|' * (len(head) - 1)]
    for r in result['rows']:
        cells = [r['row'], _fmt(r['accuracy'], '.4f'), _fmt(r['escalation_rate'], '.3f'), f'{r["p50_ms"]:.3f}',
                 f'{r["p90_ms"]:.3f}', f'{r["mean_ms"]:.3f}', f'{r["throughput_per_s"]:.1f}',
                 f'{r["vs_little_alone"]:.3f}']
        if has_pred:
            cells += [_fmt(r.get('predicted_ms'), '.3f'), _fmt(r.get('prediction_error'), '+.1%')]
        if has_mem:
            cells += [_fmt(r.get('peak_rss_mb'), '.1f'), _fmt(r.get('model_rss_mb'), '.1f')]
        if has_energy:
            cells.append(_fmt(r.get('energy_mj'), '.3f'))
        lines.append('| ' + ' | '.join(cells) + ' |')
    checks = result['checks']
    lines += ['', f'- Router and dispatch overhead (never escalate vs {REFERENCE_ROW}, timed call by call, alternating, '
                  f'{checks["dispatch_overhead_calls"]} calls each): mean {checks["dispatch_overhead"]:+.2%}, median '
                  f'{checks["dispatch_overhead_median"]:+.2%}']
    if 'dynamic_prediction_error' in checks:
        lines.append(f'- Dynamic model, measured mean vs {result["predictor"]} prediction at the measured escalation '
                     f'rate: {checks["dynamic_prediction_error"]:+.1%}')
    elif result.get('prediction_note'):
        lines.append(f'- No latency prediction: {result["prediction_note"]}')
    if not has_energy and result.get('energy_note'):
        lines.append(f'- Energy: {result["energy_note"]}')
    env = result['environment']
    lines += ['', f'Environment: {env["cpu"]} ({env["cpu_count"]} logical CPUs{", " + env["board"] if env["board"] else ""}'
                  f'), {env["system"]}; Python {env["python"]}, numpy {env["numpy"]}, ONNX Runtime {env["onnxruntime"]} '
                  f'({", ".join(env["providers"])}), nni_bigLittle {env["nni_bigLittle"]}; load average at the end '
                  f'{env["load_average"]}.']
    if env.get('command'):
        lines.append(f'Command: `{env["command"]}`')
    return '\n'.join(lines) + '\n'


def write_bench(result: Mapping[str, Any], out: str | os.PathLike) -> list[Path]:
    """``bench.json`` and ``bench.md`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'bench.json').write_text(json.dumps(result, indent=1) + '\n')
    (out / 'bench.md').write_text('# Deployment benchmark\n\n' + format_bench(result))
    return [out / 'bench.json', out / 'bench.md']


def parse_baselines(items: Sequence[str] | None) -> dict[str, str]:
    baselines = {}
    for item in items or []:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise ValueError(f'--baseline needs NAME=PATH.onnx, got {item!r}.')
        baselines[name] = path
    return baselines
