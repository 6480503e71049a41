"""ONNX export of frozen pairs (little.onnx, big_tail.onnx, manifest) checked against PyTorch."""
import json
import random

import numpy as np
import pytest
import torch

from nni_bigLittle.deploy.export import ExportMismatch, export_onnx, verify_export


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
    from nni_bigLittle.deploy.export import BigLittleRuntime
    model, x = _spread_model(tiny_space)
    export_onnx(model, tmp_path)
    runtime = BigLittleRuntime(tmp_path, threads=1)
    ref_pred, ref_escalated = model.infer(x)
    pred, escalated = runtime.predict(x.numpy())
    assert 0 < escalated.sum() < len(x)
    assert (pred == ref_pred.numpy()).all() and (escalated == ref_escalated.numpy()).all()
    for i in range(len(x)):  # one image at a time (the scalar routing path) decides the same
        one_pred, one_escalated = runtime.predict(x[i:i + 1].numpy())
        assert one_pred.tolist() == [pred[i]] and one_escalated.tolist() == [escalated[i]]
        assert runtime.predict(x[i:i + 1].numpy(), threshold=1.0)[1].tolist() == [True]
    records = runtime.records(x.numpy(), batch_size=5)  # uneven last batch
    assert len(records) == 32 and [r['prediction'] for r in records] == pred.tolist()
    assert all(r['batch_latency_ms'] > 0 and r['peak_rss_mb'] > 0 and r['energy_mj'] is None for r in records)
    never, _ = runtime.predict(x.numpy(), threshold=0.0)  # never escalate: the little network's answer
    with torch.no_grad():
        assert (never == model.little_path()(x).argmax(1).numpy()).all()
    with pytest.raises(FileNotFoundError, match='manifest.json'):
        BigLittleRuntime(tmp_path / 'nothing')


def _spread_model(tiny_space, seed: int = 5):
    """A fixed-initialisation pair whose confidences are spread, and a threshold between two of them (no
    input sits on it), so that 10 to 23 of the 32 inputs escalate."""
    from nni_bigLittle.nn.model import BigLittleModel
    sample = {**tiny_space.spec.random_sample(random.Random(seed)), 'router/policy': 'max_softmax'}
    torch.manual_seed(0)
    model = BigLittleModel.from_sample(tiny_space.spec, sample).eval()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.little.head.classifier.weight.mul_(20)  # untrained logits are nearly flat: spread the confidences
        confidence = model.router(*model.little(model.fork_features(x)))
    ordered = confidence.sort().values
    gaps = ordered[9:23].diff()
    k = int(gaps.argmax()) + 9
    assert float(gaps.max()) > 1e-5  # ONNX Runtime and PyTorch confidences differ by ~1e-7
    model.router.threshold = float((ordered[k] + ordered[k + 1]) / 2)
    return model, x


def test_dynamic_graph_runs_the_big_tail_inside_its_if_node(tiny_space, tmp_path):
    import onnx
    import onnxruntime as ort
    model, x = _spread_model(tiny_space)
    export_onnx(model, tmp_path)
    graph = onnx.load(str(tmp_path / 'dynamic.onnx')).graph
    tail_convs = sum(n.op_type == 'Conv' for n in onnx.load(str(tmp_path / 'big_tail.onnx')).graph.node)
    little_convs = sum(n.op_type == 'Conv' for n in onnx.load(str(tmp_path / 'little.onnx')).graph.node)
    (branch,) = [n for n in graph.node if n.op_type == 'If']
    then_graph = next(a.g for a in branch.attribute if a.name == 'then_branch')
    # the tail's convolutions are all in the conditional branch; outside it only the little network's
    assert sum(n.op_type == 'Conv' for n in then_graph.node) == tail_convs > 0
    assert sum(n.op_type == 'Conv' for n in graph.node) == little_convs
    session = ort.InferenceSession(str(tmp_path / 'dynamic.onnx'), providers=['CPUExecutionProvider'])
    ref_pred, ref_escalated = model.infer(x)
    with torch.no_grad():
        little, big = model.little_path()(x), model.big_path()(x)
    for i in range(len(x)):
        logits, escalated, _ = session.run(None, {'input': x[i:i + 1].numpy()})
        assert bool(escalated[0]) == bool(ref_escalated[i]) and logits.argmax() == ref_pred[i]
        expected = big[i] if ref_escalated[i] else little[i]
        assert float((torch.from_numpy(logits[0]) - expected).abs().max()) < 1e-4
        for threshold, escalates in ((0.0, False), (1.0, True), (float('-inf'), False)):  # the default overridden
            _, escalated, _ = session.run(None, {'input': x[i:i + 1].numpy(),
                                                 'threshold': np.asarray([threshold], np.float32)})
            assert bool(escalated[0]) is escalates
    assert 0 < int(ref_escalated.sum()) < len(x)


def test_big_onnx_is_the_static_big_network_and_the_manifest_describes_the_bundle(tiny_space, tmp_path):
    import onnxruntime as ort
    model, x = _spread_model(tiny_space)
    manifest = export_onnx(model, tmp_path, preprocess={'mean': (0.5, 0.5, 0.5), 'std': (0.25, 0.25, 0.25)},
                           class_names=[str(c) for c in range(10)], spec={'name': 'tiny'})
    big = ort.InferenceSession(str(tmp_path / 'big.onnx'), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        ref = model.big_path()(x).numpy()
    assert abs(big.run(None, {'input': x.numpy()})[0] - ref).max() < 1e-4
    assert set(manifest['files']) == {'little', 'big_tail', 'dynamic', 'big'}
    assert all((tmp_path / f['path']).is_file() for f in manifest['files'].values())
    assert manifest['preprocess']['mean'] == [0.5, 0.5, 0.5] and manifest['class_names'][3] == '3'
    assert manifest['spec'] == {'name': 'tiny'}


def test_runtime_records_measured_energy_where_a_meter_exists(tiny_space, tmp_path):
    from nni_bigLittle.deploy.export import BigLittleRuntime
    from nni_bigLittle.hw_predictors.energy import detect_energy_backends
    found = {backend.name: (backend, ok, why) for backend, ok, why in detect_energy_backends()}
    meter = next((found[name][0] for name in ('RAPL', 'tegrastats') if found[name][1]), None)
    if meter is None:
        pytest.skip('no CPU energy meter here: ' + '; '.join(f'{n}: {found[n][2]}' for n in ('RAPL', 'tegrastats')))
    model, x = _spread_model(tiny_space)
    export_onnx(model, tmp_path)
    records = BigLittleRuntime(tmp_path, threads=1).records(np.repeat(x.numpy(), 8, 0), batch_size=64, meter=meter)
    assert all(r['energy_mj'] > 0 for r in records)
