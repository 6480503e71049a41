"""ONNX export of a frozen big/little pair, checked against PyTorch.

:func:`export_onnx` writes three files into a folder:

- ``little.onnx``: ``input`` -> ``little_logits``, ``confidence`` (the router's, computed in the same
  graph for every policy, so the runtime only compares it with the threshold) and ``fork_features``
  (cached for the big tail);
- ``big_tail.onnx``: ``fork_features`` -> ``big_logits`` (what an escalated input costs in addition);
- ``manifest.json``: the pair's sample, the router policy and threshold (escalate when
  ``confidence < threshold``), input shape and normalisation-free input contract, and the files' outputs.

Both graphs take any batch size. :func:`verify_export` runs them with ONNX Runtime on real inputs
and compares logits, confidences, escalation decisions and predictions with PyTorch's
``BigLittleModel.infer``; a mismatch raises :class:`ExportMismatch`.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from nni_bigLittle.model import BigLittleModel

__all__ = ['export_onnx', 'verify_export', 'ExportMismatch', 'MANIFEST_FORMAT']

MANIFEST_FORMAT = 'nni_bigLittle.onnx/1'
OPSET = 17


class ExportMismatch(RuntimeError):
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


def export_onnx(model: BigLittleModel, folder: str | os.PathLike) -> dict[str, Any]:
    """Write ``little.onnx``, ``big_tail.onnx`` and ``manifest.json`` of ``model`` (eval mode) to ``folder``.
    Returns the manifest."""
    if not isinstance(model, BigLittleModel):
        raise TypeError(f'export_onnx needs a frozen BigLittleModel, got {type(model).__name__}.')
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
    finally:
        model.train(was_training)
    manifest = {
        'format': MANIFEST_FORMAT, 'sample': model.sample, 'num_classes': arch.num_classes,
        'input': {'name': 'input', 'shape': [None, 3, arch.resolution, arch.resolution], 'dtype': 'float32',
                  'layout': 'NCHW, normalised as the training data'},
        'router': {'policy': model.router.policy, 'threshold': float(model.router.threshold),
                   'rule': 'escalate when confidence < threshold (threshold >= 1: always)',
                   'confidence': 'output "confidence" of little.onnx'},
        'files': {'little': {'path': 'little.onnx', 'outputs': ['little_logits', 'confidence', 'fork_features']},
                  'big_tail': {'path': 'big_tail.onnx', 'inputs': ['fork_features'], 'outputs': ['big_logits']}},
        'fork_channels': int(fork.shape[1]), 'fork_resolution': int(fork.shape[-1]),
    }
    (folder / 'manifest.json').write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest


def verify_export(model: BigLittleModel, folder: str | os.PathLike, inputs: Iterable[torch.Tensor],
                  atol: float = 1e-4) -> dict[str, float]:
    """Compare the ONNX Runtime graphs in ``folder`` with ``model`` on ``inputs`` (batches of images).

    Checks, per batch: little and big logits within ``atol``; the router's confidences within ``atol``;
    the same escalation decisions except where a confidence lies within ``atol`` of the threshold;
    the same dynamic predictions. Raises :class:`ExportMismatch` naming the first failure; returns the
    worst differences and the agreement rates."""
    import onnxruntime as ort
    folder = Path(folder)
    manifest = json.loads((folder / 'manifest.json').read_text())
    threshold = manifest['router']['threshold']
    options = ort.SessionOptions()
    little = ort.InferenceSession(str(folder / 'little.onnx'), options, providers=['CPUExecutionProvider'])
    tail = ort.InferenceSession(str(folder / 'big_tail.onnx'), options, providers=['CPUExecutionProvider'])
    model = model.eval()
    worst = {'little_logits': 0.0, 'confidence': 0.0, 'big_logits': 0.0}
    seen = same_pred = same_escalation = borderline = 0
    for x in inputs:
        x = x.float().contiguous()
        with torch.no_grad():
            shared = model.fork_features(x)
            ref_logits, ref_features = model.little(shared)
            ref_conf = model.router(ref_logits, ref_features)
            ref_big = model.big_tail(shared)
            ref_pred, ref_esc = model.infer(x)
        logits, conf, fork = little.run(None, {'input': x.numpy()})
        big = tail.run(None, {'fork_features': fork})[0]
        for name, ours, ref in (('little_logits', logits, ref_logits), ('confidence', conf, ref_conf),
                                ('big_logits', big, ref_big)):
            diff = float(np.abs(ours - ref.numpy()).max())
            worst[name] = max(worst[name], diff)
            if diff > atol:
                raise ExportMismatch(f'{name}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {atol:g}).')
        escalated = conf < threshold if threshold < 1.0 else np.ones_like(conf, dtype=bool)
        pred = np.where(escalated, big.argmax(1), logits.argmax(1))
        near = np.abs(ref_conf.numpy() - threshold) <= atol
        bad = (escalated != ref_esc.numpy()) & ~near
        if bad.any():
            raise ExportMismatch(f'{int(bad.sum())} escalation decisions differ from PyTorch away from the threshold.')
        seen += len(x)
        same_escalation += int((escalated == ref_esc.numpy()).sum())
        same_pred += int((pred == ref_pred.numpy()).sum())
        borderline += int(near.sum())
    if seen == 0:
        raise ValueError('verify_export needs at least one batch of inputs.')
    if same_pred != seen and borderline == 0:
        raise ExportMismatch(f'{seen - same_pred} of {seen} dynamic predictions differ from PyTorch.')
    return {**{f'max_abs_diff_{k}': v for k, v in worst.items()}, 'inputs': float(seen),
            'escalation_agreement': same_escalation / seen, 'prediction_agreement': same_pred / seen}
