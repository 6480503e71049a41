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

__all__ = ['export_onnx', 'verify_export', 'ExportMismatch', 'BigLittleRuntime', 'MANIFEST_FORMAT']

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


# ---------------------------------------------------------------------------------------------------------
# the input-adaptive runtime over ONNX Runtime
# ---------------------------------------------------------------------------------------------------------
class BigLittleRuntime:
    """Run an exported pair (a folder written by :func:`export_onnx`) with ONNX Runtime, input by input.

    :meth:`predict` runs ``little.onnx`` on a batch, compares the router's confidence with the threshold,
    and runs ``big_tail.onnx`` only on the escalated rows of the cached fork features (batch splitting).
    :meth:`records` runs inputs one batch at a time and returns per-sample records: prediction,
    escalation, wall latency of its batch (ms) and the process's peak resident memory (MB). No energy
    backend exists on a CPU-only machine, so records carry no energy.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None,
                 providers: tuple[str, ...] = ('CPUExecutionProvider',)):
        import onnxruntime as ort
        self.folder = Path(folder)
        path = self.folder / 'manifest.json'
        if not path.is_file():
            raise FileNotFoundError(f'{self.folder} holds no manifest.json; write the bundle with export_onnx.')
        self.manifest = json.loads(path.read_text())
        if self.manifest.get('format') != MANIFEST_FORMAT:
            raise ValueError(f'{path} is not a {MANIFEST_FORMAT} manifest.')
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.little = ort.InferenceSession(str(self.folder / 'little.onnx'), options, providers=list(providers))
        self.big_tail = ort.InferenceSession(str(self.folder / 'big_tail.onnx'), options, providers=list(providers))
        self.threshold = float(self.manifest['router']['threshold'])

    def predict(self, x: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(predictions, escalated)`` for a batch ``x`` of shape ``(n, 3, H, W)`` (float32)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        logits, confidence, fork = self.little.run(None, {'input': x})
        threshold = self.threshold if threshold is None else float(threshold)
        escalated = np.ones(len(x), dtype=bool) if threshold >= 1.0 else confidence < threshold
        pred = logits.argmax(1)
        if escalated.any():
            pred[escalated] = self.big_tail.run(None, {'fork_features': fork[escalated]})[0].argmax(1)
        return pred, escalated

    def records(self, images: np.ndarray, batch_size: int = 1, threshold: float | None = None) -> list[dict]:
        """Per-sample records of running ``images`` in batches of ``batch_size``."""
        import resource
        import time
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            began = time.perf_counter()
            pred, escalated = self.predict(chunk, threshold)
            latency = (time.perf_counter() - began) * 1e3
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
            out.extend({'prediction': int(p), 'escalated': bool(e), 'batch_latency_ms': latency,
                        'batch_size': len(chunk), 'peak_rss_mb': peak} for p, e in zip(pred, escalated))
        return out
