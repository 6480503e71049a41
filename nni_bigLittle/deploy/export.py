"""ONNX export of a frozen big/little pair, checked against PyTorch, and the deployment bundle.

:func:`export_onnx` writes into a folder:

- ``little.onnx``: ``input`` -> ``little_logits``, ``confidence`` (the router's, computed in the same
  graph for every policy, so the runtime only compares it with the threshold) and ``fork_features``
  (cached for the big tail);
- ``big_tail.onnx``: ``fork_features`` -> ``big_logits`` (what an escalated input costs in addition);
- ``dynamic.onnx``: both in one graph for batch 1: ``input`` (and an optional ``threshold``, by default
  the calibrated one) -> ``logits``, ``escalated``, ``confidence``; an ``If`` node runs the big tail only
  when the input escalates;
- ``big.onnx``: the static big network of the pair (``input`` -> ``logits``), the baseline it replaces;
- ``manifest.json``: the pair's sample (and its space, so predictors can cost it), the router policy
  and threshold (escalate when ``confidence < threshold``), input shape, preprocessing of raw pixels,
  class names, the files.

``little.onnx``, ``big_tail.onnx`` and ``big.onnx`` take any batch size. :func:`verify_export` runs the
graphs with ONNX Runtime on real inputs and compares logits, confidences, escalation decisions and
predictions with PyTorch's ``BigLittleModel.infer``; a mismatch raises :class:`ExportMismatch`.
:func:`write_bundle` adds ``run_bundle.py`` (numpy + onnxruntime only) and, optionally, sample data.
The runtime, :class:`BigLittleRuntime`, lives in :mod:`nni_bigLittle.deploy.run_bundle`, the file every bundle
carries.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from nni_bigLittle.nn.model import BigLittleModel
from nni_bigLittle.nn.operating_point import OperatingPoint
from nni_bigLittle.nn.router import RouterSetting
from nni_bigLittle.deploy.run_bundle import MANIFEST_FORMAT, BigLittleRuntime, escalation
from nni_bigLittle.errors import BigLittleError

__all__ = ['export_onnx', 'verify_export', 'write_bundle', 'model_point', 'ExportMismatch', 'BigLittleRuntime',
           'MANIFEST_FORMAT']

OPSET = 17
TAIL_PREFIX = 'big_tail/'


class ExportMismatch(BigLittleError, RuntimeError):
    """The exported graphs disagree with PyTorch."""


class _LittleGraph(nn.Module):
    def __init__(self, model: BigLittleModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        shared = self.model.fork_features(x)
        logits, features = self.model.little(shared)
        return logits, self.model.router(logits, features), shared


def _export(module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str], outputs: list[str]) -> None:
    buffer = io.BytesIO()
    axes = {name: {0: 'batch'} for name in inputs + outputs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(module, (example,), buffer, opset_version=OPSET, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    path.write_bytes(buffer.getvalue())


def model_point(model: BigLittleModel, operating_point: OperatingPoint | None = None) -> OperatingPoint:
    """The operating point ``model`` runs at: ``operating_point`` checked against the model, or, without one,
    the model's architecture and router as they are (a threshold given by hand)."""
    router = RouterSetting(model.router.policy, float(model.router.threshold))
    own = OperatingPoint.from_flat_sample({**model.sample, 'router/threshold': router.threshold})
    if operating_point is None:
        return own
    if operating_point.sample != own.sample or (operating_point.router.policy, operating_point.router.threshold) \
            != (router.policy, router.threshold):
        raise ValueError('The operating point does not describe this model (architecture, policy or threshold '
                         'differ); build the model from it (BigLittleSpace.freeze(point.flat_sample)).')
    return operating_point


def export_onnx(model: BigLittleModel, folder: str | os.PathLike, *, preprocess: dict[str, Any] | None = None,
                class_names: list[str] | None = None, spec: dict[str, Any] | None = None,
                operating_point: OperatingPoint | None = None) -> dict[str, Any]:
    """Write ``little.onnx``, ``big_tail.onnx``, ``dynamic.onnx``, ``big.onnx`` and ``manifest.json`` of
    ``model`` (eval mode) to ``folder``; returns the manifest.

    ``preprocess`` (``{'mean': [...], 'std': [...]}``, pixels scaled to [0, 1] first) lets the bundle's
    runner take raw images; ``spec`` (the space, ``dataclasses.asdict(SpaceSpec)``) lets ``bench`` cost the
    pair with a latency predictor. The manifest carries the model's ``operating_point`` (the searched one
    when given, with what its threshold was calibrated for; :func:`model_point`)."""
    if not isinstance(model, BigLittleModel):
        raise TypeError(f'export_onnx needs a frozen BigLittleModel, got {type(model).__name__}.')
    point = model_point(model, operating_point)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    arch = model.arch
    example = torch.randn(2, 3, arch.resolution, arch.resolution)
    try:
        # torch.onnx.export puts the wrapper back in the mode it found it in, recursively: a wrapper left in
        # training mode would switch the model to training, and the next forward would overwrite its
        # batch-norm statistics with those of the random example
        _export(_LittleGraph(model).eval(), example, folder / 'little.onnx', ['input'],
                ['little_logits', 'confidence', 'fork_features'])
        with torch.no_grad():
            fork = model.eval().fork_features(example)
        _export(model.big_tail_module().eval(), fork, folder / 'big_tail.onnx', ['fork_features'], ['big_logits'])
        _export(model.big_path().eval(), example, folder / 'big.onnx', ['input'], ['logits'])
    finally:
        model.train(was_training)
    threshold = point.router.threshold
    _write_dynamic_graph(folder / 'little.onnx', folder / 'big_tail.onnx', threshold, folder / 'dynamic.onnx')
    manifest = {
        'format': MANIFEST_FORMAT, 'operating_point': point.to_dict(), 'sample': point.flat_sample,
        'num_classes': arch.num_classes,
        'input': {'name': 'input', 'shape': [None, 3, arch.resolution, arch.resolution], 'dtype': 'float32',
                  'layout': 'NCHW, preprocessed as "preprocess" says'},
        'preprocess': None if preprocess is None else
        {'scale': 1.0 / 255.0, 'mean': [float(v) for v in preprocess['mean']],
         'std': [float(v) for v in preprocess['std']], 'rule': 'x = (pixels * scale - mean) / std, RGB, NCHW'},
        'class_names': None if class_names is None else [str(c) for c in class_names],
        'router': {'policy': point.router.policy, 'threshold': threshold,
                   'rule': 'escalate when confidence < threshold (threshold >= 1: always)',
                   'confidence': 'output "confidence" of little.onnx'},
        'files': {'little': {'path': 'little.onnx', 'outputs': ['little_logits', 'confidence', 'fork_features']},
                  'big_tail': {'path': 'big_tail.onnx', 'inputs': ['fork_features'], 'outputs': ['big_logits']},
                  'dynamic': {'path': 'dynamic.onnx', 'inputs': ['input', 'threshold (optional)'],
                              'outputs': ['logits', 'escalated', 'confidence'], 'batch': 1},
                  'big': {'path': 'big.onnx', 'outputs': ['logits'], 'role': 'the static big network, for comparison'}},
        'fork_channels': int(fork.shape[1]), 'fork_resolution': int(fork.shape[-1]),
        'spec': spec,
    }
    (folder / 'manifest.json').write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest


def _write_dynamic_graph(little_path: Path, tail_path: Path, threshold: float, out: Path) -> None:
    """One batch-1 graph: the little network, the routing rule, and an ``If`` whose then-branch is the big
    tail (reading the outer ``fork_features``) and whose else-branch passes the little logits through."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    little, tail = onnx.load(str(little_path)), onnx.load(str(tail_path))
    graph = little.graph
    num_classes = graph.output[0].type.tensor_type.shape.dim[1].dim_value

    def rename(name: str) -> str:  # the tail's names must not collide with the little graph's
        return name if name in ('', 'fork_features') else TAIL_PREFIX + name

    tail_nodes = []
    for node in tail.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = rename(node.name)
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        tail_nodes.append(copy)
    tail_inits = []
    for init in tail.graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename(init.name)
        tail_inits.append(copy)
    logits_info = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, num_classes])  # noqa: E731
    then_branch = helper.make_graph(tail_nodes, 'big_tail', [], [logits_info(rename('big_logits'))],
                                    initializer=tail_inits)
    else_branch = helper.make_graph([helper.make_node('Identity', ['little_logits'], ['kept_logits'])], 'little',
                                    [], [logits_info('kept_logits')])
    nodes = list(graph.node) + [
        helper.make_node('Less', ['confidence', 'threshold'], ['below_threshold']),
        helper.make_node('GreaterOrEqual', ['threshold', 'one'], ['always_escalate']),
        helper.make_node('Or', ['below_threshold', 'always_escalate'], ['escalated']),
        helper.make_node('Reshape', ['escalated', 'scalar_shape'], ['escalate_condition']),
        helper.make_node('If', ['escalate_condition'], ['logits'], then_branch=then_branch, else_branch=else_branch),
    ]
    inputs = [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1] + [
        d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]),
        helper.make_tensor_value_info('threshold', TensorProto.FLOAT, [1])]
    initializers = list(graph.initializer) + [
        numpy_helper.from_array(np.asarray([threshold], np.float32), 'threshold'),  # a default the caller may feed
        numpy_helper.from_array(np.asarray([1.0], np.float32), 'one'),
        numpy_helper.from_array(np.zeros(0, np.int64), 'scalar_shape')]
    outputs = [logits_info('logits'), helper.make_tensor_value_info('escalated', TensorProto.BOOL, [1]),
               helper.make_tensor_value_info('confidence', TensorProto.FLOAT, [1])]
    model = helper.make_model(helper.make_graph(nodes, 'big_little_dynamic', inputs, outputs, initializer=initializers),
                              opset_imports=list(little.opset_import), producer_name='nni_bigLittle')
    model.ir_version = little.ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))


def verify_export(model: BigLittleModel, folder: str | os.PathLike, inputs: Iterable[torch.Tensor],
                  atol: float = 1e-4, progress: bool = False) -> dict[str, float]:
    """Compare the ONNX Runtime graphs in ``folder`` with ``model`` on ``inputs`` (batches of images).

    Checks, per batch: little and big logits (``big_tail.onnx`` and ``big.onnx``) within ``atol``; the
    router's confidences within ``atol``; the same escalation decisions except where a confidence lies
    within ``atol`` of the threshold; the same dynamic predictions; and ``dynamic.onnx``, image by image,
    the same escalation and logits (the big or the little ones as it escalates). Raises
    :class:`ExportMismatch` naming the first failure; returns the worst differences and agreement rates."""
    import onnxruntime as ort
    folder = Path(folder)
    runtime = BigLittleRuntime(folder)
    threshold = runtime.threshold
    has_dynamic, has_big = (folder / 'dynamic.onnx').is_file(), (folder / 'big.onnx').is_file()
    big_session = ort.InferenceSession(str(folder / 'big.onnx'), providers=['CPUExecutionProvider']) \
        if has_big else None
    model = model.eval()
    worst = {'little_logits': 0.0, 'confidence': 0.0, 'big_logits': 0.0}
    if has_big:
        worst['big_network_logits'] = 0.0
    if has_dynamic:
        worst['dynamic_logits'] = 0.0
    seen = same_pred = same_escalation = borderline = same_dynamic = 0

    def check(name: str, ours: np.ndarray, ref: np.ndarray) -> None:
        diff = float(np.abs(ours - ref).max())
        worst[name] = max(worst[name], diff)
        if diff > atol:
            raise ExportMismatch(f'{name}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {atol:g}).')

    batches = inputs
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(inputs, desc='verify export', unit='batch')
    for x in batches:
        x = x.float().contiguous()
        with torch.no_grad():
            shared = model.fork_features(x)
            ref_logits, ref_features = model.little(shared)
            ref_conf = model.router(ref_logits, ref_features).numpy()
            ref_big = model.big_tail(shared).numpy()
            ref_pred, ref_esc = (t.numpy() for t in model.infer(x))
        logits, conf, fork = runtime.little.run(None, {'input': x.numpy()})
        big = runtime.big_tail.run(None, {'fork_features': fork})[0]
        check('little_logits', logits, ref_logits.numpy())
        check('confidence', conf, ref_conf)
        check('big_logits', big, ref_big)
        if has_big:
            check('big_network_logits', big_session.run(None, {'input': x.numpy()})[0], ref_big)
        escalated = escalation(conf, threshold)
        pred = np.where(escalated, big.argmax(1), logits.argmax(1))
        near = np.abs(ref_conf - threshold) <= atol
        bad = (escalated != ref_esc) & ~near
        if bad.any():
            raise ExportMismatch(f'{int(bad.sum())} escalation decisions differ from PyTorch away from the threshold.')
        if has_dynamic:
            ref_dynamic = np.where(ref_esc[:, None], ref_big, ref_logits.numpy())
            for i in range(len(x)):
                dyn_logits, dyn_esc = runtime.dynamic.run(None, {'input': x[i:i + 1].numpy()})[:2]
                if bool(dyn_esc.reshape(-1)[0]) != bool(ref_esc[i]):
                    if near[i]:
                        continue
                    raise ExportMismatch(f'dynamic.onnx escalates input {seen + i} differently from PyTorch '
                                         f'(confidence {ref_conf[i]:.6f}, threshold {threshold:.6f}).')
                check('dynamic_logits', dyn_logits[0], ref_dynamic[i])
                same_dynamic += int(dyn_logits[0].argmax() == ref_pred[i])
        seen += len(x)
        same_escalation += int((escalated == ref_esc).sum())
        same_pred += int((pred == ref_pred).sum())
        borderline += int(near.sum())
    if seen == 0:
        raise ValueError('verify_export needs at least one batch of inputs.')
    if same_pred != seen and borderline == 0:
        raise ExportMismatch(f'{seen - same_pred} of {seen} dynamic predictions differ from PyTorch.')
    report = {**{f'max_abs_diff_{k}': v for k, v in worst.items()}, 'inputs': float(seen),
              'escalation_agreement': same_escalation / seen, 'prediction_agreement': same_pred / seen,
              'inputs_within_atol_of_threshold': float(borderline)}
    if has_dynamic:
        report['dynamic_graph_prediction_agreement'] = same_dynamic / seen
    return report


def write_bundle(model: BigLittleModel, out: str | os.PathLike, *, preprocess: dict[str, Any] | None = None,
                 class_names: list[str] | None = None, spec: dict[str, Any] | None = None,
                 verify_inputs: Iterable[torch.Tensor] | None = None, sample_data: dict[str, np.ndarray] | None = None,
                 source: dict[str, Any] | None = None, progress: bool = False,
                 operating_point: OperatingPoint | None = None) -> dict[str, Any]:
    """A deployment bundle in ``out``: the graphs and manifest of :func:`export_onnx`, ``run_bundle.py``
    (numpy + onnxruntime only), and, when given, ``data.npz`` (``sample_data``: raw ``x_test`` uint8
    images and ``y_test`` labels to try the bundle with). ``verify_inputs`` are checked with
    :func:`verify_export` and the result goes into the manifest (``verification``); a mismatch raises
    and leaves no manifest behind, so a half-checked bundle cannot be mistaken for a good one."""
    out = Path(out)
    manifest = export_onnx(model, out, preprocess=preprocess, class_names=class_names, spec=spec,
                           operating_point=operating_point)
    if verify_inputs is not None:
        try:
            manifest['verification'] = {**verify_export(model, out, verify_inputs, progress=progress),
                                        'reference': 'PyTorch BigLittleModel.infer', 'atol': 1e-4}
        except ExportMismatch:
            (out / 'manifest.json').unlink()
            raise
    if source is not None:
        manifest['source'] = source
    shutil.copyfile(Path(__file__).with_name('run_bundle.py'), out / 'run_bundle.py')
    if sample_data is not None:
        np.savez_compressed(out / 'data.npz', **sample_data)
        manifest['files']['data'] = {'path': 'data.npz', 'images': int(len(sample_data['x_test'])),
                                     'layout': 'x_test uint8 (N, H, W, 3) raw pixels, y_test int64'}
    (out / 'manifest.json').write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest
