"""TensorRT engines of an exported pair: availability, building, the batch-splitting runtime, verification.

Two kinds of tests:

- everywhere: on a machine without TensorRT or a GPU, building reports why and leaves the bundle alone;
- ``gpu``: real engines on a real GPU, skipped with the reason when TensorRT or a GPU is missing (no
  stand-in for TensorRT: what these check only a real engine can show).
"""
import json
import random
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from nni_bigLittle.deploy.export import BigLittleRuntime, export_onnx
from nni_bigLittle.nn.model import BigLittleModel
from nni_bigLittle.deploy.tensorrt import (TensorRTRuntime, TensorRTUnavailable, build_tensorrt_engines,
                                            tensorrt_unavailable_reason, verify_tensorrt)


def _spread_model(spec, seed=5):
    """A fixed-initialisation pair whose outputs depend on the input: fresh weights give features so small
    that every input gets the same logits, so the batch norms are recalibrated on random images (their
    statistics, in train mode) and the classifiers scaled to spread the confidences over about 0.15-0.7."""
    sample = {**spec.random_sample(random.Random(seed)), 'router/policy': 'max_softmax', 'router/threshold': 0.5}
    torch.manual_seed(0)
    model = BigLittleModel.from_sample(spec, sample)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    calibration = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        model.train()
        shared = model.fork_features(calibration)
        model.little(shared)
        model.big_tail(shared)
        model.eval()
        model.little.head.classifier.weight.mul_(5)
        model.big_head.classifier.weight.mul_(5)
    return model


@pytest.fixture(scope='module')
def exported(tiny_space, tmp_path_factory):
    folder = tmp_path_factory.mktemp('exported')
    export_onnx(_spread_model(tiny_space.spec), folder)
    return folder


@pytest.fixture
def bundle(exported, tmp_path):
    """A private copy of the exported folder (tests write engines and manifests into it)."""
    return shutil.copytree(exported, tmp_path / 'bundle')


@pytest.fixture(scope='module')
def images():
    return np.random.default_rng(2).standard_normal((200, 3, 32, 32)).astype(np.float32)


def _threshold_between(folder, x):
    """A threshold in the widest gap between the middle confidences: some inputs escalate, none sits on it."""
    little = ort.InferenceSession(str(folder / 'little.onnx'), providers=['CPUExecutionProvider'])
    ordered = np.sort(little.run(None, {'input': x})[1])
    low, high = len(x) // 4, 3 * len(x) // 4
    k = low + int(np.diff(ordered[low:high]).argmax())
    assert ordered[k + 1] - ordered[k] > 1e-4
    return float((ordered[k] + ordered[k + 1]) / 2)


# ------------------------------------------------------------------------------------------------
# without TensorRT or a GPU (CI, this machine)
# ------------------------------------------------------------------------------------------------

def test_without_tensorrt_building_says_why_and_leaves_the_bundle_alone(bundle):
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip('TensorRT and a CUDA GPU are present here; the gpu-marked tests cover this machine')
    assert isinstance(reason, str) and reason.strip() and '\n' not in reason
    assert 'nni_bigLittle[tensorrt]' in reason or 'GPU' in reason
    before = (bundle / 'manifest.json').read_bytes()
    listing = sorted(p.name for p in bundle.iterdir())
    with pytest.raises(TensorRTUnavailable) as info:
        build_tensorrt_engines(bundle)
    assert reason in str(info.value) and info.value.reason == reason
    assert (bundle / 'manifest.json').read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == listing  # no engine files
    with pytest.raises(FileNotFoundError, match='build_tensorrt_engines'):
        TensorRTRuntime(bundle)  # nothing recorded to run


def test_arguments_are_checked_before_anything_else(bundle, tmp_path):
    with pytest.raises(ValueError, match='precisions'):
        build_tensorrt_engines(bundle, precisions=('int8',))
    with pytest.raises(ValueError, match='max_batch'):
        build_tensorrt_engines(bundle, max_batch=0)
    with pytest.raises(FileNotFoundError, match='manifest.json'):
        build_tensorrt_engines(tmp_path / 'empty')


# ------------------------------------------------------------------------------------------------
# real TensorRT on a real GPU
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def gpu_engines(bundle):
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    section = build_tensorrt_engines(bundle, max_batch=16)
    return bundle, section


@pytest.mark.gpu
def test_gpu_engines_are_built_and_recorded(gpu_engines):
    bundle, section = gpu_engines
    assert set(section) == {'fp32', 'fp16'}
    for precision, entry in section.items():
        assert (bundle / entry['little']).stat().st_size > 0 and (bundle / entry['big_tail']).stat().st_size > 0
        assert entry['max_batch'] == 16 and entry['tensorrt_version'] and entry['gpu']
    assert json.loads((bundle / 'manifest.json').read_text())['tensorrt'] == section


@pytest.mark.gpu
def test_gpu_engines_verify_against_onnx_runtime(gpu_engines, images):
    bundle, _ = gpu_engines
    threshold = _threshold_between(bundle, images)
    batches = [images[:1], images[1:8], images[8:]]  # 192 > max_batch 16: chunked
    fp32 = verify_tensorrt(bundle, 'fp32', batches, threshold=threshold)
    assert fp32['inputs'] == 200 and fp32['max_abs_diff_confidence'] <= 1e-3
    assert 0 < fp32['escalated_fraction'] < 1
    fp16 = verify_tensorrt(bundle, 'fp16', batches, threshold=threshold)
    assert fp16['prediction_agreement'] >= 0.99


@pytest.mark.gpu
def test_gpu_runtime_predicts_like_the_onnx_runtime_bundle(gpu_engines, images):
    bundle, _ = gpu_engines
    threshold = _threshold_between(bundle, images)
    reference = BigLittleRuntime(bundle)
    with TensorRTRuntime(bundle, 'fp32') as runtime:
        for batch_size in (1, 8):
            preds, escalations, ref_preds, ref_escalations = [], [], [], []
            for start in range(0, 24, batch_size):
                x = images[start:start + batch_size]
                pred, escalated = runtime.predict(x, threshold)
                ref_pred, ref_escalated = reference.predict(x, threshold)
                preds.append(pred), escalations.append(escalated)
                ref_preds.append(ref_pred), ref_escalations.append(ref_escalated)
            escalated = np.concatenate(escalations)
            assert 0 < escalated.sum() < 24
            assert (escalated == np.concatenate(ref_escalations)).all()
            assert (np.concatenate(preds) == np.concatenate(ref_preds)).all()
