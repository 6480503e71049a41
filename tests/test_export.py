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
