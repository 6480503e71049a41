"""The build itself: :func:`build_local_predictor` runs the steps (prior, profiling, calibration, fit and
adaptive refinement, validation, save, report) described in :mod:`nni_bigLittle.hw_predictors.builder`."""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from nni_bigLittle.hw_predictors.kernels import detect_kernels, torch_to_onnx
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor, regression_metrics
from nni_bigLittle.hw_predictors.builder.config import DATA_SOURCE, PREDICTOR_NAME, BuildConfig, BuildError, \
    default_predictor_dir, default_work_dir
from nni_bigLittle.hw_predictors.builder.kernel_configs import PROFILED_TYPES, KernelConfig, _same_features, \
    boundary_elements, nchwc_block_size
from nni_bigLittle.hw_predictors.builder.sampling import _merged_ranges, _refinement_configs, _split, prior_configs
from nni_bigLittle.hw_predictors.builder.profiling import MeasurementCache, _cache_stats, _environment, \
    _kernel_configs_of, _now, _pass_schedule, _Session, _spread, network_specs
from nni_bigLittle.hw_predictors.builder.fitting import BuildResult, _evaluate, _fit_calibration, _fit_models, \
    _fit_network_calibration, _flops_baseline, _fmt, _log_calibration, _pct, _routes, _summary, _summary_text, \
    format_validation_table, network_term_ms, predict_latency_ms, write_report


def build_local_predictor(config: BuildConfig | None = None, log: Callable[[str], None] = print) -> BuildResult:
    """Profile this machine and build its kernel latency predictor (see the package docstring)."""
    config = config or BuildConfig()
    t_start = time.monotonic()
    env = _environment(config.threads)
    work = Path(config.work_dir).expanduser() if config.work_dir else default_work_dir()
    cache = MeasurementCache(work / 'measurements.jsonl', env)
    n_cached_start = len(cache)
    s = _Session(config, cache, log)
    rng = random.Random(config.seed)
    log(f'build-local: {env["cpu_model"]}, {config.threads} thread(s), onnxruntime {env["onnxruntime"]}; '
        f'budget {config.budget_minutes:g} min; work dir {work} ({n_cached_start} cached measurements)')
    load_start = os.getloadavg()
    first_passes, middle_passes, last_passes = _pass_schedule(config.network_passes)
    block = nchwc_block_size()

    # ---------------------------------------------------------------- 0. run overhead
    run_overhead = s.measure_probe()
    log(f'[0] session.run of a one-element graph: {1000 * run_overhead:.2f} us')

    # ---------------------------------------------------------------- 1. networks (first pass), calibration kernels
    cal_seeds, val_seeds = config.calibration_seeds(), config.validation_seeds()
    cal_nets = network_specs('cifar', cal_seeds)
    used = {json.dumps(n.arch.sample, sort_keys=True) for n in cal_nets}
    val_nets = [n for n in network_specs('cifar', val_seeds) if json.dumps(n.arch.sample, sort_keys=True) not in used]
    all_nets = cal_nets + val_nets
    cal_kernel_cfgs = _kernel_configs_of(cal_nets)
    t_phase = time.monotonic()
    log(f'[1] {len(cal_nets)} calibration networks (cifar seeds {min(cal_seeds) if cal_seeds else "-"}..'
        f'{max(cal_seeds) if cal_seeds else "-"}) and {len(val_nets)} validation networks (seeds '
        f'{val_seeds[0] if val_seeds else "-"}..{val_seeds[-1] if val_seeds else "-"}), measured end to end in '
        f'{config.network_passes} pass(es) spread over the build; the {len(cal_kernel_cfgs)} distinct kernels of the '
        'calibration networks in isolation')
    s.measure_networks(all_nets, 'networks, first pass', first_passes)
    t_net_pass = (time.monotonic() - t_phase)
    s.measure_kernels(cal_kernel_cfgs, 'calibration kernels', strict=True)
    for net in cal_nets:  # the standalone module's kernel must be the network's kernel
        for k in net.kernels:
            if not _same_features(s.kernels[KernelConfig.from_kernel(k).key()], k):
                raise BuildError(f'{net.name}: the standalone kernel of {k.describe()} has other features.')
    kernel_reps = 2 if config.network_passes >= 2 else 1

    def calibration_rows(passes: Iterable[int] = range(64), reps: int = kernel_reps) -> list[dict[str, float]]:
        rows = []
        for net in cal_nets:
            iso = [float(np.mean(s.kernel_reps(KernelConfig.from_kernel(k), reps))) for k in net.kernels]
            rows.append({'name': net.name, 'measured': float(np.median(s.network_medians(net, passes))),
                         'iso_sum': float(sum(iso)), 'n_kernels': len(net.kernels),
                         'boundary': sum(boundary_elements(k, block) for k in net.kernels), 'weight_mb': net.weight_mb,
                         'macs': net.macs})
        return rows

    # only what the first pass measured, so that a resumed build (whose cache holds later passes) refines the same
    cal = _fit_calibration(calibration_rows(first_passes, 1), run_overhead, block)
    _log_calibration(log, cal, 'preliminary')

    # time kept for the remaining network passes, the repeated calibration kernels and the fits
    t_kernels = (time.monotonic() - t_phase - t_net_pass) / max(1, len(cal_kernel_cfgs))
    reserve = 20.0 + 1.2 * (t_net_pass * (len(middle_passes) + len(last_passes) + 1)
                            + (t_kernels * len(cal_kernel_cfgs) if kernel_reps > 1 else 0.0))

    # ---------------------------------------------------------------- 2. prior
    prior, pools = prior_configs(rng, config.cifar_archs, config.imagenet_archs, config.timm_models,
                                 config.n_perturbed, config.part_caps, exclude_seeds=set(val_seeds) | set(cal_seeds))
    cal_keys = {c.key() for c in cal_kernel_cfgs}
    # the calibration networks' kernels are fitted too (they are the most frequent configurations of the
    # space); they stay out of the held-out refinement and test sets
    train, refine_set, test_set = _split([c for c in prior if c.key() not in cal_keys], config.holdout, rng)
    train = cal_kernel_cfgs + train
    counts = {t: sum(c.type == t for c in prior) for t in PROFILED_TYPES}
    log(f'[2] prior: {len(prior)} configurations from {", ".join(pools)} ({counts}); '
        f'{len(train)} train / {len(refine_set)} refine / {len(test_set)} test')
    refine_budget = 0.25 * max(0.0, s.left() - reserve)
    until = s.deadline - reserve - refine_budget
    # held-out sets first (they are small and every round needs them), then training configurations
    refine_set = s.measure_kernels(refine_set, 'refine set', until)
    test_set = s.measure_kernels(test_set, 'test set', until)
    chunks = [train[i::len(middle_passes) + 1] for i in range(len(middle_passes) + 1)]
    measured: set[str] = set()
    for i, chunk in enumerate(chunks):  # the middle network passes are spread over the prior's profiling
        measured |= {c.key() for c in s.measure_kernels(chunk, f'prior {i + 1}/{len(chunks)}', until)}
        if i < len(middle_passes):
            s.measure_networks(all_nets, f'networks, pass {middle_passes[i] + 1}', [middle_passes[i]])
    train = [c for c in train if c.key() in measured]

    # ---------------------------------------------------------------- 3. fit + adaptive refinement
    factory = config.make_regressor
    rounds: list[dict[str, Any]] = []
    seen = {c.key() for c in train} | {c.key() for c in refine_set} | {c.key() for c in test_set} | cal_keys
    ranges = _merged_ranges(pools)
    refine_rng = random.Random(config.seed + 1)
    log(f'[3] fit and adaptive refinement ({config.rounds} rounds, {config.refine_top} worst x '
        f'{config.refine_neighbors} neighbours; errors on the isolated kernel measurements)')
    for rnd in range(config.rounds + 1):
        models = _fit_models(s, cal, train, factory)
        ref_metrics, errors = _evaluate(s, cal, models, refine_set)
        test_metrics, _ = _evaluate(s, cal, models, test_set)
        row = {'round': rnd, 'n_train': len(train)}
        for name, m in (('refine', ref_metrics), ('test', test_metrics)):
            iso_m = m.get('all', {}).get('isolated', {})
            row[f'{name}_mape'] = iso_m.get('mape')
            row[f'{name}_within_10'] = iso_m.get('within_10')
        row['test_by_type'] = {t: {'mape': m['isolated']['mape'], 'within_10': m['isolated']['within_10']}
                               for t, m in test_metrics.items() if t != 'all'}
        rounds.append(row)
        log(f'    round {rnd}: {len(train)} train kernels; refine set MAPE {_fmt(row["refine_mape"])} % '
            f'(±10 %: {_pct(row["refine_within_10"])}); test set MAPE {_fmt(row["test_mape"])} % '
            f'(±10 %: {_pct(row["test_within_10"])})')
        if rnd == config.rounds or s.left() < reserve + 10:
            if rnd < config.rounds:
                log('    time budget reached: no more refinement rounds')
            break
        new = _refinement_configs(errors, ranges, refine_rng, seen, config.refine_top, config.refine_neighbors)
        if not new:
            log('    no configuration left to refine')
            break
        train = train + s.measure_kernels(new, f'refinement round {rnd + 1}', s.deadline - reserve)

    # ---------------------------------------------------------------- 4. last pass, final calibration and fit
    if last_passes:
        s.measure_networks(all_nets, 'networks, last pass', last_passes)
    if kernel_reps > 1:
        for cfg in s.tqdm(cal_kernel_cfgs, desc='calibration kernels, again'):
            s.remeasure_kernel(cfg, 1)
    # a network whose pass medians disagree by more than 8 % gets up to two more passes
    extra = max(first_passes + middle_passes + last_passes) + 1
    for attempt in range(2):
        noisy = [n for n in all_nets
                 if _spread(s.network_medians(n)) > 0.08 and len(s.network_medians(n)) < extra + 1 + attempt]
        if noisy:
            s.measure_networks(noisy, f'networks, extra pass {attempt + 1}', [extra + attempt])
    cal_rows = calibration_rows()
    cal = _fit_calibration(cal_rows, run_overhead, block)
    _log_calibration(log, cal, 'final')
    final_cfgs = train + refine_set
    models = _fit_models(s, cal, final_cfgs, factory)
    kernel_metrics, _ = _evaluate(s, cal, models, test_set)
    missing = [t for t in PROFILED_TYPES if t not in models]
    if missing:
        log(f'    note: no model for {missing} (too few measurements); they fall back to their parts or are uncovered')
    plain = KernelLatencyPredictor(models, _routes(models), {}, overhead=0.0)
    for r, net in zip(cal_rows, cal_nets):
        r['model_sum'] = float(plain.predict_kernels(net.kernels).total)
    ncal = _fit_network_calibration(cal_rows, cal)
    log(f'    stage B (kernel models on the calibration networks): overhead {1000 * ncal.overhead:.2f} us, '
        f'scale {ncal.scale:.4f}, cache term {ncal.c:.4f} ms/MB x sigmoid((W - {ncal.mu:.2f}) / {ncal.width:.2f}); '
        f'leave-one-out MAPE {_fmt(ncal.metrics.get("loo_mape"))} %')
    for m in models.values():
        m.bias += math.log(ncal.scale)
    predictor = KernelLatencyPredictor(models, _routes(models), {'network_term': ncal.network_term()},
                                       overhead=ncal.overhead)

    # ---------------------------------------------------------------- 5. validation
    validation: list[dict[str, Any]] = []
    baseline = _flops_baseline(cal_rows)
    for net in val_nets:
        measured = s.network_medians(net)
        full = predictor.predict_kernels(net.kernels).total  # kernels + overhead + network term
        term = network_term_ms(ncal.network_term(), net.kernels)
        validation.append({
            'network': net.name, 'part': net.part, 'seed': net.seed, 'n_kernels': len(net.kernels),
            'mmacs': net.macs / 1e6, 'weight_mb': net.weight_mb, 'measured_ms': float(np.median(measured)),
            'passes': len(measured), 'pass_spread': _spread(measured), 'predicted_ms': full,
            'kernel_sum_ms': full - term, 'network_term_ms': term,
            'flops_baseline_ms': baseline[0] + baseline[1] * net.macs / 1e6})
    for r in validation:
        for key, col in (('error_pct', 'predicted_ms'), ('kernel_sum_error_pct', 'kernel_sum_ms'),
                         ('flops_baseline_error_pct', 'flops_baseline_ms')):
            r[key] = 100 * (r[col] - r['measured_ms']) / r['measured_ms']
    if val_nets:  # the ONNX route (what NNI's NnMeterProfiler hands over) must see the same kernels
        first = val_nets[0]
        onnx_kernels = detect_kernels(torch_to_onnx(first.module(), first.input_shape), 'onnx')
        if abs(predict_latency_ms(predictor, onnx_kernels) - validation[0]['predicted_ms']) > 1e-9:
            log('    warning: kernels detected on the ONNX export predict differently from arch_kernels')
    summary = _summary(validation)
    if val_nets:
        fitted_keys = {c.key() for c in final_cfgs}
        val_kernels = [KernelConfig.from_kernel(k) for n in val_nets for k in n.kernels]
        summary['kernels_profiled_exactly'] = float(np.mean([c.key() in fitted_keys for c in val_kernels]))
    summary_cal = regression_metrics([r['measured'] for r in cal_rows],
                                     [predict_latency_ms(predictor, n.kernels) for n in cal_nets]) if cal_rows else {}

    # ---------------------------------------------------------------- 6. metadata, save, report
    elapsed = time.monotonic() - t_start
    load_end = os.getloadavg()
    metadata = {
        'name': PREDICTOR_NAME,
        'device': f'{env["cpu_model"]} ({env["cpu_count"]} logical CPUs), {config.threads} thread(s)',
        'cpu_model': env['cpu_model'], 'threads': config.threads,
        'runtime': f'onnxruntime {env["onnxruntime"]} (CPUExecutionProvider, all graph optimizations)',
        'precision': 'fp32', 'metric': 'latency', 'unit': 'ms', 'batch': 1,
        'data_source': DATA_SOURCE, 'n_measurements': len(final_cfgs),
        'fit_metrics': {
            'kernel_test': kernel_metrics,
            'heldout_within_10': kernel_metrics.get('all', {}).get('isolated', {}).get('within_10'),
            'refinement_rounds': [{k: v for k, v in r.items() if k != 'test_by_type'} for r in rounds],
            'calibration_networks': summary_cal,
            'validation_networks': summary,
        },
        'calibration': {'kernels': {k: v for k, v in asdict(cal).items()},
                        'networks': {k: v for k, v in asdict(ncal).items()}},
        'network_term': ncal.network_term(),
        'environment': env,
        'package_version': env['nni_bigLittle'],
        'created': _now(),
        'build': {'seed': config.seed, 'budget_minutes': config.budget_minutes, 'elapsed_s': round(elapsed, 1),
                  'calibration_seeds': sorted(cal_seeds),
                  'validation_seeds': [val_seeds[0], val_seeds[-1]] if val_seeds else [],
                  'network_passes': config.network_passes,
                  'regressor': config.regressor if config.regressor_factory is None else 'custom',
                  'load_average_start': load_start[0], 'load_average_end': load_end[0],
                  **_cache_stats(cache)},
        'notes': [
            'Kernel models predict in-network costs: isolated measurements minus the per-run overhead a and the '
            'NCHWc boundary reorders b (stage A, calibrated on separate networks with their measured kernels), '
            'then scaled and given a per-inference overhead fitted on the same networks with the models\' '
            'predictions (stage B).',
            'metadata["network_term"] is a network-level L2 weight-streaming term; KernelLatencyPredictor.predict '
            'adds it once per network (the NNI expression / expectation, being sums of kernels, leave it out).',
            f'Batch 1, {config.threads} ONNX Runtime thread(s); measured on a shared machine (load average '
            f'{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end).',
        ],
    }
    predictor.metadata.update(metadata)
    out = Path(config.out).expanduser() if config.out else default_predictor_dir() / f'{PREDICTOR_NAME}.npz'
    path = predictor.save(out)
    result = BuildResult(predictor, path, cal, rounds, kernel_metrics, validation, summary, env,
                         n_new_measurements=cache.new, n_cached_measurements=n_cached_start,
                         elapsed_s=time.monotonic() - t_start, network_calibration=ncal)
    log(f'[4] saved {path} ({len(final_cfgs)} kernel measurements in the fit, {cache.new} new measurements this '
        f'run, {result.elapsed_s / 60:.1f} min)')
    if validation:
        log(format_validation_table(validation))
        log(_summary_text(summary))
    if config.report_dir:
        result.report_files = write_report(result, config.report_dir, config)
        log(f'    report: {", ".join(str(p) for p in result.report_files)}')
    return result
