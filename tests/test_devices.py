"""Bundled device predictors: loading, metadata, sanity of predictions, reproducible rebuilds, data errors."""
import json
import math
import random
import shutil

import numpy as np
import pytest

from conftest import SHARED_DATA
from nni_bigLittle.hw_predictors import devices
from nni_bigLittle.hw_predictors.devices import fitting, tvm_tophub_jetson_rpi
from nni_bigLittle.hw_predictors.devices import (
    BUNDLED_DIR, DEVICES, LatencyDataError, build_predictor, list_bundled, load_predictor, predict_totals, predictor_filename,
    rebuild_bundled,
)
from nni_bigLittle.hw_predictors.kernels import detect_kernels, torch_to_onnx
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor, PredictorError

LATENCY_DATA = SHARED_DATA / 'latency'
needs_data = pytest.mark.skipif(not (LATENCY_DATA / devices.TOPHUB_DIR).is_dir(),
                                reason=f'shared latency data not found at {LATENCY_DATA} '
                                       '(set NNI_BIGLITTLE_SHARED_DATA to the folder holding latency/)')
SPECS = sorted(DEVICES.values(), key=lambda s: s.key)
METADATA_KEYS = ('name', 'device', 'runtime', 'precision', 'metric', 'unit', 'data_source', 'n_measurements',
                 'n_networks', 'fit_metrics', 'package_version', 'created', 'notes')
METRIC_KEYS = ('n', 'rmse', 'mape', 'within_5', 'within_10', 'spearman')


@pytest.fixture(scope='module')
def model_kernels():
    """Kernels (from PyTorch and from the ONNX export) of three reference models."""
    import timm
    import torch

    from nni_bigLittle.nn.model import BigLittleModel
    from nni_bigLittle.search_spaces.presets import get_preset
    torch.manual_seed(0)
    spec = get_preset('cifar', num_classes=10)
    big_little = BigLittleModel.from_sample(spec, spec.random_sample(random.Random(0))).eval()
    models = {'mobilenetv3_small_100': (timm.create_model('mobilenetv3_small_100').eval(), (1, 3, 224, 224)),
              'mobilenetv3_large_100': (timm.create_model('mobilenetv3_large_100').eval(), (1, 3, 224, 224)),
              'big_little_cifar': (big_little, (1, 3, 32, 32))}
    out = {}
    for name, (module, shape) in models.items():
        out[name, 'torch'] = detect_kernels(module, 'torch', shape)
        out[name, 'onnx'] = detect_kernels(torch_to_onnx(module, shape), 'onnx')
    return out


@pytest.fixture(scope='module')
def bundled():
    return {spec.key: load_predictor(spec.name, spec.metric) for spec in SPECS}


# --------------------------------------------------------------------------------------------- bundled files


def test_every_bundled_predictor_exists_and_loads(bundled):
    for spec in SPECS:
        assert (BUNDLED_DIR / spec.filename).is_file(), spec.filename
        predictor = bundled[spec.key]
        assert predictor.metric == spec.metric and predictor.name == spec.name
        assert (BUNDLED_DIR / spec.filename).stat().st_size < 3 * 2 ** 20, f'{spec.filename} is over 3 MB'
    assert (BUNDLED_DIR / devices.REPORT_NAME).is_file()


def test_bundled_metadata_is_complete(bundled):
    from packaging.version import Version
    from nni_bigLittle import __version__
    for key, predictor in bundled.items():
        m = predictor.metadata
        missing = [k for k in METADATA_KEYS if k not in m]
        assert not missing, (key, missing)
        assert Version(m['package_version']) <= Version(__version__)  # the version that fitted it
        assert m['unit'] == ('mJ' if m['metric'] == 'energy' else 'ms')
        assert m['n_measurements'] > 100 and isinstance(m['notes'], list) and len(m['notes']) >= 3
        fit = m['fit_metrics']
        assert fit['split'] and isinstance(fit['split'], str)
        for part in ('heldout', 'flops_baseline'):
            assert all(k in fit[part] for k in METRIC_KEYS), (key, part, fit[part])
            assert fit[part]['n'] > 20 and math.isfinite(fit[part]['mape'])
        assert fit['heldout']['n'] == fit['flops_baseline']['n']
        text = json.dumps(m)
        assert '/work/' not in text and '/tmp/' not in text, f'{key}: absolute machine path in metadata'


def test_list_bundled_rows():
    rows = list_bundled()
    assert {(r['name'], r['metric']) for r in rows} == {(s.name, s.metric) for s in SPECS}
    for r in rows:
        for k in ('name', 'device', 'metric', 'unit', 'data_source', 'n_measurements', 'heldout_within_10', 'path'):
            assert k in r, (r['name'], k)
        assert 0.0 <= r['heldout_within_10'] <= 1.0


def test_predictions_positive_finite_and_ordered(bundled, model_kernels):
    for key, predictor in bundled.items():
        values = {}
        for name in ('mobilenetv3_small_100', 'mobilenetv3_large_100', 'big_little_cifar'):
            total = predictor.predict_kernels(model_kernels[name, 'torch']).total
            assert math.isfinite(total) and total > 0, (key, name, total)
            values[name] = total
        assert values['mobilenetv3_large_100'] > values['mobilenetv3_small_100'], (key, values)
        assert values['mobilenetv3_small_100'] > values['big_little_cifar'], (key, values)


def test_torch_and_onnx_kernels_agree_within_one_percent(bundled, model_kernels):
    for key, predictor in bundled.items():
        for name in ('mobilenetv3_small_100', 'big_little_cifar'):
            a = predictor.predict_kernels(model_kernels[name, 'torch']).total
            b = predictor.predict_kernels(model_kernels[name, 'onnx']).total
            assert abs(a - b) <= 0.01 * a, (key, name, a, b)


def test_coverage_as_documented(bundled, model_kernels):
    kernels = model_kernels['mobilenetv3_large_100', 'torch']
    # Raspberry Pi 4 and the TensorRT predictors price every kernel type; TopHub ones leave elementwise uncovered.
    for key in ('raspberry_pi_4', 'jetson_nano_trt_fp32', 'jetson_nano_trt_fp32.energy'):
        assert bundled[key].predict_kernels(kernels).uncovered == [], key
    for key in ('jetson_nano_tvm', 'jetson_tx2_tvm', 'raspberry_pi_3b_tvm'):
        uncovered = bundled[key].predict_kernels(kernels).uncovered
        assert uncovered and all(k.type in ('add', 'act', 'eltwise', 'pool', 'global-pool', 'concat')
                                 for k in uncovered)


def test_predict_totals_matches_predict_kernels(bundled, model_kernels):
    nets = [model_kernels[name, 'torch'] for name in ('mobilenetv3_small_100', 'big_little_cifar')]
    for key, predictor in bundled.items():
        fast = predict_totals(predictor, nets)
        slow = [predictor.predict_kernels(net).total for net in nets]
        np.testing.assert_allclose(fast, slow, rtol=1e-12, err_msg=key)


# --------------------------------------------------------------------------------------------- lookup


def test_filenames():
    assert predictor_filename('raspberry_pi_4') == 'raspberry_pi_4.npz'
    assert predictor_filename('jetson_nano_trt_fp32', 'energy') == 'jetson_nano_trt_fp32.energy.npz'
    with pytest.raises(PredictorError):
        predictor_filename('x', 'power')


def test_load_predictor_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.USER_DIR_ENV, str(tmp_path / 'user'))
    bundled_pi4 = load_predictor('raspberry_pi_4')
    assert bundled_pi4.metadata['name'] == 'raspberry_pi_4'
    # a user file of the same name wins over the bundled one
    user = KernelLatencyPredictor(bundled_pi4.models, bundled_pi4.routes,
                                  dict(bundled_pi4.metadata, device='my own Pi 4'), bundled_pi4.overhead)
    user.save(tmp_path / 'user' / 'raspberry_pi_4.npz')
    assert load_predictor('raspberry_pi_4').metadata['device'] == 'my own Pi 4'
    # an explicit path wins over names
    path = shutil.copy(BUNDLED_DIR / 'jetson_tx2_tvm.npz', tmp_path / 'any_name.npz')
    assert load_predictor(path).metadata['name'] == 'jetson_tx2_tvm'
    assert load_predictor(str(path)).metadata['name'] == 'jetson_tx2_tvm'
    assert load_predictor('jetson_nano_trt_fp32', metric='energy').unit == 'mJ'


def test_unknown_predictor_lists_available(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.USER_DIR_ENV, str(tmp_path))
    with pytest.raises(PredictorError) as err:
        load_predictor('jetson_orin')
    assert 'raspberry_pi_4' in str(err.value) and 'jetson_nano_trt_fp32.energy' in str(err.value)
    with pytest.raises(PredictorError):
        load_predictor('raspberry_pi_4', metric='energy')  # no energy data for the Pi 4
    with pytest.raises(PredictorError, match='No predictor file'):
        load_predictor(tmp_path / 'missing.npz')
    with pytest.raises(PredictorError, match='known'):
        rebuild_bundled(tmp_path, out_dir=tmp_path / 'out', names=['jetson_orin'])


# --------------------------------------------------------------------------------------------- malformed data


def _tophub_rows(**overrides):
    row = {'device': 'jetson_tx2', 'op_type': 'conv', 'batch': 1, 'input_h': 14, 'input_w': 14, 'cin': 64,
           'cout': 64, 'kernel_h': 3, 'kernel_w': 3, 'stride': 1, 'dilation': 1, 'groups': 1, 'output_h': 14,
           'output_w': 14, 'macs': 14 * 14 * 64 * 64 * 9, 'latency_ms': 0.1, 'is_best_template_for_shape': 1}
    row.update(overrides)
    return row


def _write_csv(path, rows, drop=()):
    import pandas as pd
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).drop(columns=list(drop)).to_csv(path, index=False)
    return path


def test_missing_data_folder_or_file_is_a_clear_error(tmp_path):
    with pytest.raises(LatencyDataError, match='not a folder'):
        rebuild_bundled(tmp_path / 'nowhere', out_dir=tmp_path / 'out')
    with pytest.raises(LatencyDataError) as err:
        build_predictor('jetson_tx2_tvm', tmp_path)
    assert devices.TOPHUB_FILE in str(err.value) and 'not found' in str(err.value)


def test_csv_missing_a_column_is_a_clear_error(tmp_path):
    path = _write_csv(tmp_path / devices.TOPHUB_DIR / devices.TOPHUB_FILE, [_tophub_rows()] * 5, drop=['latency_ms'])
    with pytest.raises(LatencyDataError) as err:
        build_predictor('jetson_tx2_tvm', tmp_path)
    assert str(path) in str(err.value) and "'latency_ms'" in str(err.value)


def test_csv_with_bad_values_is_a_clear_error(tmp_path):
    _write_csv(tmp_path / devices.TOPHUB_DIR / devices.TOPHUB_FILE, [_tophub_rows(latency_ms='fast')] * 5)
    with pytest.raises(LatencyDataError, match="'latency_ms' must be numeric"):
        build_predictor('jetson_tx2_tvm', tmp_path)
    _write_csv(tmp_path / 'b' / devices.TOPHUB_DIR / devices.TOPHUB_FILE, [_tophub_rows(macs=1)] * 5)
    with pytest.raises(LatencyDataError, match='macs'):
        build_predictor('jetson_tx2_tvm', tmp_path / 'b')
    fbnet = {f'layer{i}_op': 'k3_e1' for i in range(22)}
    _write_csv(tmp_path / devices.FBNET_DIR / devices.FBNET_FILE,
               [dict(fbnet, arch_id=0, latency_ms=20.0), dict(fbnet, arch_id=1, layer3_op='k7_e4', latency_ms=30.0)])
    with pytest.raises(LatencyDataError, match="k7_e4"):
        build_predictor('raspberry_pi_4', tmp_path)
    _write_csv(tmp_path / devices.ICAS_DIR / 'icas_jetson_nano_convnets_tidy.csv',
               [{'subset': 'x', 'model_name': 'm', 'layers_json': '[]', 'latency_ms': 1.0}])
    with pytest.raises(LatencyDataError, match='total_params'):
        build_predictor('jetson_nano_trt_fp32', tmp_path)


def test_synthetic_tophub_builds(tmp_path):
    """A small well-formed table fits end to end (no shared data needed)."""
    rng = random.Random(0)
    rows = []
    for i in range(40):
        hw, c, k = rng.choice([7, 14, 28, 56]), rng.choice([16, 32, 64, 128]), rng.choice([1, 3])
        rows.append(_tophub_rows(input_h=hw, input_w=hw, output_h=hw, output_w=hw, cin=c, cout=2 * c, kernel_h=k,
                                 kernel_w=k, macs=hw * hw * 2 * c * c * k * k, latency_ms=1e-7 * hw * hw * c * c * k * k
                                 + 0.01))
    for i in range(10):
        hw, c = rng.choice([7, 14, 28]), rng.choice([32, 64, 128])
        rows.append(_tophub_rows(op_type='dwconv', input_h=hw, input_w=hw, output_h=hw, output_w=hw, cin=c, cout=c,
                                 groups=c, macs=hw * hw * c * 9, latency_ms=1e-6 * hw * hw * c + 0.01))
    _write_csv(tmp_path / devices.TOPHUB_DIR / devices.TOPHUB_FILE, rows)
    predictor, report = build_predictor('jetson_tx2_tvm', tmp_path)
    assert report.heldout['n'] == 10 and report.heldout['mape'] < 50
    assert predictor.metadata['fit_metrics']['heldout'] == report.heldout


# --------------------------------------------------------------------------------------------- rebuilds from data


@needs_data
@pytest.mark.parametrize('name', ['jetson_tx2_tvm', 'raspberry_pi_3b_tvm'])
def test_tophub_rebuild_reproduces_bundled(name, tmp_path, bundled, model_kernels):
    reports = rebuild_bundled(LATENCY_DATA, out_dir=tmp_path, names=[name], progress=False)
    assert [r.key for r in reports] == [name] and not (tmp_path / devices.REPORT_NAME).exists()
    rebuilt = load_predictor(tmp_path / f'{name}.npz')
    shipped = bundled[name]
    assert rebuilt.routes == shipped.routes
    for kernels in model_kernels.values():
        assert rebuilt.predict_kernels(kernels).total == shipped.predict_kernels(kernels).total
    # the held-out metrics in the shipped metadata are the ones the rebuild recomputes
    assert shipped.metadata['fit_metrics']['heldout'] == reports[0].heldout
    assert shipped.metadata['fit_metrics']['flops_baseline'] == reports[0].baseline
    assert rebuilt.metadata['fit_metrics'] == shipped.metadata['fit_metrics']


@needs_data
def test_tophub_heldout_recomputed_independently(bundled):
    """Refit on the training shapes by hand and score the held-out shapes: the stored numbers come out."""
    data = devices.load_tophub(str(LATENCY_DATA.resolve()), 'raspberry_pi_3b')
    train, test = fitting._split(len(data.kernels))
    stored = bundled['raspberry_pi_3b_tvm'].metadata
    choice = stored['depthwise_model']['choice']
    model = tvm_tophub_jetson_rpi._fit_tophub([data.kernels[i] for i in train], data.costs[train], choice, {})
    values = [model.predict_kernels([data.kernels[i]]).total for i in test]
    recomputed = fitting._metrics(data.costs[test], values)
    assert recomputed == stored['fit_metrics']['heldout']


@needs_data
def test_icas_loader_and_energy_calibration():
    import pandas as pd
    root = str(LATENCY_DATA.resolve())
    latency = devices.load_icas(root, 'latency')
    energy = devices.load_icas(root, 'energy')
    assert len(latency.networks) == len(energy.networks) == 12534
    tidy = pd.read_csv(LATENCY_DATA / devices.ICAS_DIR / 'icas_jetson_nano_convnets_tidy.csv')
    tidy = tidy[tidy['latency_ms'].notna()]
    np.testing.assert_array_equal(latency.targets, tidy['latency_ms'].to_numpy())
    ratio = energy.targets / tidy['gpu_energy_per_inference'].to_numpy()
    assert 1.0 < np.median(ratio) < 1.03  # ~1 tegrastats sample per second: mW·sample ≈ mJ
    macs = np.array([sum(k.flops for k in net) for net in latency.networks[:200]])
    # the tidy MACs follow torchinfo (bias adds included): ours (no bias adds) are a little smaller
    assert np.all(macs <= tidy['total_macs'].to_numpy()[:200]) and np.all(macs > 0.99 * tidy['total_macs'][:200])


@needs_data
@pytest.mark.slow
def test_full_rebuild_reproduces_all_bundled(tmp_path, bundled, model_kernels):
    reports = rebuild_bundled(LATENCY_DATA, out_dir=tmp_path, progress=False)
    assert sorted(r.key for r in reports) == sorted(DEVICES)
    assert (tmp_path / devices.REPORT_NAME).is_file()
    for report in reports:
        rebuilt = load_predictor(tmp_path / report.path.name)
        shipped = bundled[report.key]
        assert shipped.metadata['fit_metrics']['heldout'] == report.heldout, report.key
        for kernels in model_kernels.values():
            assert rebuilt.predict_kernels(kernels).total == shipped.predict_kernels(kernels).total, report.key
