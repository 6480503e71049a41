"""ONNX export of frozen pairs (little.onnx, big_tail.onnx, manifest) checked against PyTorch."""
import json
import random

import pytest
import torch

from nni_bigLittle.export import ExportMismatch, export_onnx, verify_export


@pytest.mark.parametrize('policy', ['max_softmax', 'entropy', 'margin', 'learned'])
def test_exported_graphs_agree_with_pytorch_for_every_router_policy(tiny_space, tmp_path, policy):
    sample = {**tiny_space.spec.random_sample(random.Random(3)), 'router/policy': policy, 'router/threshold': 0.5}
    model = tiny_space.freeze(sample).eval()
    manifest = export_onnx(model, tmp_path)
    assert json.loads((tmp_path / 'manifest.json').read_text()) == manifest
    assert manifest['router'] == {**manifest['router'], 'policy': policy, 'threshold': 0.5}
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, 32, 32, generator=generator) for n in (1, 7, 16)]  # any batch size
    report = verify_export(model, tmp_path, batches)
    assert report['inputs'] == 24 and report['prediction_agreement'] == 1.0
    assert report['max_abs_diff_big_logits'] <= 1e-4


def test_a_wrong_graph_is_caught(tiny_space, tmp_path):
    model = tiny_space.freeze(tiny_space.spec.largest()).eval()
    export_onnx(model, tmp_path)
    other = tiny_space.freeze(tiny_space.spec.largest()).eval()
    with torch.no_grad():
        other.big_head.classifier.weight.add_(0.5)  # a model that is not the exported one
    with pytest.raises(ExportMismatch, match='big_logits'):
        verify_export(other, tmp_path, [torch.randn(4, 3, 32, 32)])


def test_export_leaves_the_model_and_its_batch_norm_statistics_alone(tiny_space, tmp_path):
    model = tiny_space.freeze(tiny_space.spec.largest()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_runtime_routes_per_input_and_splits_batches(tiny_space, tmp_path):
    from nni_bigLittle.export import BigLittleRuntime
    from nni_bigLittle.model import BigLittleModel
    sample = {**tiny_space.spec.random_sample(random.Random(5)), 'router/policy': 'max_softmax'}
    torch.manual_seed(0)  # a fixed initialisation, so the confidences below are the same in every run
    model = BigLittleModel.from_sample(tiny_space.spec, sample).eval()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.little.head.classifier.weight.mul_(20)  # untrained logits are nearly flat: spread the confidences
        confidence = model.router(*model.little(model.fork_features(x)))
    ordered = confidence.sort().values
    gaps = ordered[9:23].diff()  # a threshold well between two confidences: no input sits on it
    k = int(gaps.argmax()) + 9
    assert float(gaps.max()) > 1e-5  # ONNX Runtime and PyTorch confidences differ by ~1e-7
    model.router.threshold = float((ordered[k] + ordered[k + 1]) / 2)  # 10 to 23 of the 32 inputs escalate
    export_onnx(model, tmp_path)
    runtime = BigLittleRuntime(tmp_path, threads=1)
    ref_pred, ref_escalated = model.infer(x)
    pred, escalated = runtime.predict(x.numpy())
    assert 0 < escalated.sum() < len(x)
    assert (pred == ref_pred.numpy()).all() and (escalated == ref_escalated.numpy()).all()
    records = runtime.records(x.numpy(), batch_size=5)  # uneven last batch
    assert len(records) == 32 and [r['prediction'] for r in records] == pred.tolist()
    assert all(r['batch_latency_ms'] > 0 and r['peak_rss_mb'] > 0 for r in records)
    never, _ = runtime.predict(x.numpy(), threshold=0.0)  # never escalate: the little network's answer
    with torch.no_grad():
        assert (never == model.little_path()(x).argmax(1).numpy()).all()
    with pytest.raises(FileNotFoundError, match='manifest.json'):
        BigLittleRuntime(tmp_path / 'nothing')
