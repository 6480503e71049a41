"""The local predictor builder (``nni-biglittle predictor build-local``): kernel configurations and their
standalone modules, the prior, the calibration fit, and a real tiny build (profile, fit, refine, validate,
save, load, predict) with its resume from the measurement cache. Nothing timing-based is asserted beyond
positive, finite numbers."""
import json
import math
import random

import numpy as np
import pytest

from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels, block_kernel
from nni_bigLittle.hw_predictors.builder import (
    PROFILED_TYPES, BuildConfig, BuildError, KernelConfig, MeasurementCache, boundary_elements,
    build_local_predictor, network_specs, network_term_ms, perturb, predict_latency_ms, prior_configs, weight_mb,
)
from nni_bigLittle.hw_predictors.builder.fitting import _fit_calibration, _fit_network_calibration
from nni_bigLittle.hw_predictors.kernels import detect_kernels
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor
from nni_bigLittle.search_spaces.presets import get_preset

ONE_OF_EACH = [
    KernelConfig('mbconv', 8, 16, 24, 5, 2, hidden=96, squeeze=24, act='hswish'),
    KernelConfig('mbconv', 4, 32, 32, 3, 1, hidden=64, act='relu', residual=True),
    KernelConfig('conv-bn-act', 32, 3, 16, 3, 2, act='hswish'),
    KernelConfig('conv-bn-act', 4, 40, 128, 1, 1, act='hswish'),
    KernelConfig('dwconv-bn-act', 8, 48, 48, 7, 1, act='relu'),
    KernelConfig('se', 4, 64, 64, squeeze=16, act='relu'),
    KernelConfig('global-pool', 2, 256, 256),
    KernelConfig('fc', 1, 256, 10),
    KernelConfig('add', 8, 24, 24),
    KernelConfig('eltwise', 1, 10, 10),
]


@pytest.mark.parametrize('cfg', ONE_OF_EACH, ids=lambda c: c.key())
def test_standalone_module_is_exactly_its_kernel(cfg):
    kernels = detect_kernels(cfg.module(), 'torch', cfg.input_shape)
    assert [k.type for k in kernels] == [cfg.type]
    assert KernelConfig.from_kernel(kernels[0]) == cfg
    assert kernels[0].out_hw == cfg.out_hw
    if cfg.type == 'mbconv':
        expected = block_kernel(cfg.block_config(), cfg.hw)[0]
        assert kernels[0].features() == expected.features()


def test_every_network_kernel_has_a_profilable_config():
    spec = get_preset('cifar')
    for seed in range(5):
        ak = arch_kernels(spec.decode(spec.random_sample(random.Random(seed))))
        for k in list(ak.little_path) + list(ak.big) + list(ak.router):
            cfg = KernelConfig.from_kernel(k)
            assert cfg is not None and cfg.type == k.type
            for part in k.parts:
                assert KernelConfig.from_kernel(part) is not None


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match='residual'):
        KernelConfig('mbconv', 8, 16, 24, 3, 1, hidden=32, residual=True)
    with pytest.raises(ValueError, match='Cannot profile'):
        KernelConfig('pool', 8, 16, 16)
    with pytest.raises(ValueError, match='act'):
        KernelConfig('conv-bn-act', 8, 16, 16, act='silu')


def test_prior_is_deterministic_and_covers_every_type():
    small = {t: 6 for t in PROFILED_TYPES}
    a, pools = prior_configs(random.Random(3), cifar_archs=3, imagenet_archs=1, n_perturbed=small)
    b, _ = prior_configs(random.Random(3), cifar_archs=3, imagenet_archs=1, n_perturbed=small)
    assert [c.key() for c in a] == [c.key() for c in b]
    assert len({c.key() for c in a}) == len(a)
    assert {c.type for c in a} == set(PROFILED_TYPES)
    assert set(pools) == {'cifar', 'imagenet'}


def test_perturbations_stay_in_the_observed_ranges():
    _, pools = prior_configs(random.Random(0), cifar_archs=6, imagenet_archs=0, n_perturbed={})
    pool = pools['cifar']
    ranges = pool.ranges('mbconv')
    rng = random.Random(1)
    for _ in range(200):
        base = rng.choice(pool.observed['mbconv'])
        for small in (False, True):
            cfg = perturb(base, rng, ranges, small=small)
            if cfg is None:
                continue
            assert cfg.hw in ranges['hw'] and cfg.kernel in (3, 5, 7)
            assert ranges['channels'][0] <= cfg.cin <= ranges['channels'][1]
            assert cfg.hidden % 8 == 0 and cfg.act in ('relu', 'hswish')
            assert not cfg.residual or (cfg.cin == cfg.cout and cfg.stride == 1)


def test_calibration_recovers_a_known_model():
    rng = np.random.default_rng(0)
    truth = dict(o=0.004, a=0.006, b=0.4, c=0.03, mu=1.5, width=0.2)
    rows = []
    for _ in range(40):
        n, be, w, iso = rng.integers(6, 20), rng.uniform(0.01, 0.1), rng.uniform(0.05, 3.0), rng.uniform(0.2, 0.5)
        t = truth['o'] + iso - truth['a'] * n - truth['b'] * be + \
            truth['c'] * w / (1 + math.exp(-(w - truth['mu']) / truth['width']))
        rows.append({'measured': t, 'iso_sum': iso, 'n_kernels': int(n), 'boundary': be, 'weight_mb': w})
    cal = _fit_calibration(rows, run_overhead_ms=0.006)
    assert cal.a == pytest.approx(truth['a'], rel=1e-3)
    assert cal.b == pytest.approx(truth['b'], rel=1e-3)
    assert cal.c == pytest.approx(truth['c'], rel=1e-3)
    assert cal.mu == pytest.approx(truth['mu']) and cal.width == pytest.approx(truth['width'])
    assert cal.metrics['loo_mape'] < 1e-6
    # too few networks: the measured run overhead, nothing fitted
    few = _fit_calibration(rows[:3], run_overhead_ms=0.006)
    assert few.a == few.overhead == 0.006 and few.b == few.c == 0.0
    # stage B: overhead + scale * (sum of model predictions) + cache term
    for r in rows:
        r['model_sum'] = r['iso_sum']
        w = r['weight_mb']
        r['measured'] = 0.003 + 1.1 * r['model_sum'] + 0.02 * w / (1 + math.exp(-(w - 1.2) / 0.1))
    ncal = _fit_network_calibration(rows, cal)
    assert (ncal.overhead, ncal.scale, ncal.c) == pytest.approx((0.003, 1.1, 0.02), rel=1e-3)
    assert (ncal.mu, ncal.width) == pytest.approx((1.2, 0.1))
    kept = _fit_network_calibration(rows[:4], cal)
    assert (kept.overhead, kept.scale, kept.c) == (cal.overhead, 1.0, cal.c)


def test_network_term_and_boundary():
    spec = get_preset('cifar')
    ak = arch_kernels(spec.decode(spec.random_sample(random.Random(0))))
    term = {'kind': 'weight_streaming', 'ms_per_mb': 0.04, 'center_mb': 1.5, 'width_mb': 0.2}
    w = weight_mb(ak.big)
    assert w > 0
    assert network_term_ms(term, ak.big) == pytest.approx(0.04 * w / (1 + math.exp(-(w - 1.5) / 0.2)))
    assert network_term_ms(None, ak.big) == 0.0
    stem = ak.stem
    assert boundary_elements(stem) == pytest.approx(stem.bytes_out / 4 / 1e6)  # the image is not reordered
    assert boundary_elements(ak.little_head[1]) == 0.0  # the global pool is not a convolution


def _tiny_config(tmp_path, **overrides):
    settings = dict(
        work_dir=tmp_path / 'work', out=tmp_path / 'local_cpu_ort.npz', report_dir=tmp_path / 'report',
        validate=2, calibrate=3, cifar_archs=1, imagenet_archs=0, n_perturbed={t: 2 for t in PROFILED_TYPES},
        part_caps={t: 2 for t in PROFILED_TYPES}, rounds=1, refine_top=3, refine_neighbors=1,
        kernel_warmup=2, kernel_repeats=5, kernel_min_time_s=0.0, network_warmup=2, network_repeats=10,
        network_min_time_s=0.0, network_passes=2, budget_minutes=10, progress=False, seed=5)
    settings.update(overrides)
    return BuildConfig(**settings)


@pytest.fixture(scope='module')
def tiny_build(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('build_local')
    lines = []
    result = build_local_predictor(_tiny_config(tmp_path), log=lines.append)
    return tmp_path, result, lines


def test_tiny_build_profiles_fits_validates_and_saves(tiny_build):
    tmp_path, result, lines = tiny_build
    assert result.path == tmp_path / 'local_cpu_ort.npz' and result.path.exists()
    assert result.n_new_measurements > 30
    assert len(result.rounds) >= 1 and any('round 0' in line for line in lines)
    predictor = KernelLatencyPredictor.load(result.path)
    meta = predictor.metadata
    assert meta['name'] == 'local_cpu_ort' and meta['metric'] == 'latency' and meta['unit'] == 'ms'
    assert meta['precision'] == 'fp32' and meta['threads'] == 1 and meta['runtime'].startswith('onnxruntime')
    assert meta['data_source'].startswith('profiled on this machine')
    for key in ('kernel_test', 'refinement_rounds', 'validation_networks', 'calibration_networks'):
        assert key in meta['fit_metrics']
    assert meta['network_term']['kind'] == 'weight_streaming'
    # the kernel types of our networks all have a model
    for kernel_type in ('mbconv', 'conv-bn-act', 'global-pool', 'fc'):
        assert predictor.routes.get(kernel_type) == kernel_type
    # predict an unseen little network
    spec = get_preset('cifar')
    arch = spec.decode(spec.random_sample(random.Random(123)))
    kernels = arch_kernels(arch).little_path
    prediction = predictor.predict_kernels(kernels)
    assert not prediction.uncovered
    total = predict_latency_ms(predictor, kernels)
    assert math.isfinite(total) and total > 0 and total >= prediction.total
    # validation rows and the report
    assert len(result.validation) == 4  # 2 seeds x (little, big)
    for row in result.validation:
        assert row['measured_ms'] > 0 and math.isfinite(row['predicted_ms']) and row['predicted_ms'] > 0
    assert 0.0 <= result.summary['within_10'] <= 1.0
    readme, csv_path = result.report_files
    assert 'within ±10 %' in readme.read_text() and 'onnxruntime' in csv_path.read_text().splitlines()[0]
    assert len(csv_path.read_text().splitlines()) == 1 + len(result.validation)


def test_second_build_resumes_from_the_cache(tiny_build):
    tmp_path, first, _ = tiny_build
    second = build_local_predictor(_tiny_config(tmp_path, report_dir=None, out=tmp_path / 'again.npz'),
                                   log=lambda line: None)
    assert second.n_new_measurements == 0
    assert second.n_cached_measurements >= first.n_new_measurements
    assert [r['measured_ms'] for r in second.validation] == [r['measured_ms'] for r in first.validation]
    assert np.allclose([r['predicted_ms'] for r in second.validation], [r['predicted_ms'] for r in first.validation])


def test_cache_from_another_machine_is_refused(tiny_build):
    tmp_path, _, _ = tiny_build
    path = tmp_path / 'work' / 'measurements.jsonl'
    header = json.loads(path.read_text().splitlines()[0])
    env = dict(header['environment'], cpu_model='Some Other CPU')
    with pytest.raises(BuildError, match='cpu_model'):
        MeasurementCache(path, env)


def test_network_specs_are_the_frozen_parts():
    nets = network_specs('cifar', [7])
    assert [n.part for n in nets] == ['little', 'big']
    for net in nets:
        detected = detect_kernels(net.module(), 'torch', net.input_shape)
        assert [k.features() for k in detected] == [k.features() for k in net.kernels]


def test_cli_has_build_local():
    from nni_bigLittle.app.cli import build_parser, cmd_predictor_build_local
    args = build_parser().parse_args(['predictor', 'build-local', '--budget-minutes', '2', '--validate', '5',
                                      '--work-dir', 'w', '--report-dir', 'r', '--no-imagenet'])
    assert args.func is cmd_predictor_build_local
    assert (args.budget_minutes, args.validate, args.threads, args.seed) == (2.0, 5, 1, 0)
