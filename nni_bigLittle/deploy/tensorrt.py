"""TensorRT engines of an exported big/little pair, and the input-adaptive runtime over them.

Works on a folder written by :func:`nni_bigLittle.deploy.export.export_onnx` (``little.onnx``, ``big_tail.onnx``,
``manifest.json``):

- :func:`tensorrt_unavailable_reason` — ``None`` when the ``tensorrt`` package imports and a CUDA GPU is
  usable from Python (through a CUDA-enabled torch or pycuda), otherwise a one-line reason naming what is
  missing and how to install it.
- :func:`build_tensorrt_engines` — builds ``little.<precision>.engine`` and ``big_tail.<precision>.engine``
  from the two ONNX graphs with a dynamic batch (optimization profile min 1, opt 1, max ``max_batch``),
  fp32 with TF32 switched off (so fp32 really computes in fp32) and/or fp16, writes them next to the
  graphs and records them in ``manifest.json`` under ``"tensorrt"`` (everything else is kept).
  Raises :class:`TensorRTUnavailable` where TensorRT or a GPU is missing.
- :class:`TensorRTRuntime` — deserialises the two engines of one precision. :meth:`~TensorRTRuntime.predict`
  applies the routing rule of the manifest (escalate when ``confidence < threshold``; a threshold >= 1
  escalates everything) and runs the big tail only on the escalated rows, whose fork features never
  leave the GPU; :meth:`~TensorRTRuntime.outputs` returns all four tensors, the tail run on every row.
- :func:`verify_tensorrt` — runs ONNX Runtime (CPU) on the same batches and compares: fp32 logits and
  confidences within ``atol``, escalation decisions and predictions equal away from the threshold;
  fp16 predictions agreeing on at least 99 % of the inputs. Raises
  :class:`nni_bigLittle.deploy.export.ExportMismatch` on a failure.

Engines only load with the TensorRT version, and on the GPU model, that built them: build them on the
target. The engine building and CUDA buffers are those of
:class:`nni_bigLittle.hw_predictors.profilers.TensorRTProfiler` (TensorRT 8.x and 10.x APIs, torch.cuda
or pycuda buffers). On a Jetson this runs with JetPack's TensorRT 8.x Python bindings
(``python3-libnvinfer``, which JetPack installs; ``sudo apt install python3-libnvinfer`` otherwise) and
pycuda or NVIDIA's CUDA-enabled torch for the buffers; TensorRT 8.0 to 8.4 (JetPack 4.6) run through
the binding-index API (``execute_async_v2``), 8.5 and later through named tensors (``execute_async_v3``).
TensorRT 11 has no ``BuilderFlag.FP16`` (strongly typed networks only); there the fp16 engines are built
from an fp16 copy of the ONNX graphs with float32 inputs and outputs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nni_bigLittle.hw_predictors import profilers
from nni_bigLittle.hw_predictors.profilers import (ProfilerError, ProfilerUnavailable, TensorRTProfiler,
                                                    _PyCudaBuffers, _TorchCudaBuffers)
from nni_bigLittle.deploy.run_bundle import escalation, read_manifest
from nni_bigLittle.errors import BigLittleError

__all__ = ['tensorrt_unavailable_reason', 'TensorRTUnavailable', 'build_tensorrt_engines', 'TensorRTRuntime',
           'verify_tensorrt', 'PRECISIONS']

PRECISIONS = ('fp32', 'fp16')
# (part, ONNX file, its input, its outputs): the names export_onnx gives the graphs' tensors
_PARTS = (('little', 'little.onnx', 'input', ('little_logits', 'confidence', 'fork_features')),
          ('big_tail', 'big_tail.onnx', 'fork_features', ('big_logits',)))
_INSTALL = ('install it with `pip install nni_bigLittle[tensorrt]` (x86-64 with an NVIDIA GPU), or on a Jetson '
            "use JetPack's python3-libnvinfer (`sudo apt install python3-libnvinfer`)")


class TensorRTUnavailable(BigLittleError, RuntimeError):
    """TensorRT or a CUDA GPU is missing here; the message (and ``reason``) says what and how to install it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def tensorrt_unavailable_reason() -> str | None:
    """``None`` when ``tensorrt`` imports and a CUDA GPU is usable from Python, else a one-line reason."""
    missing = []
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError when libnvinfer is missing
        missing.append(f'the tensorrt Python package is not importable ({type(exc).__name__}: {exc}); {_INSTALL}')
    backend, why = profilers._cuda_buffer_backend_name()
    if backend is None:
        missing.append(f'no CUDA GPU is usable from Python ({why}); it needs an NVIDIA GPU with its driver and '
                       'pycuda (`pip install nni_bigLittle[tensorrt]` installs it) or a CUDA-enabled torch')
    if not missing:
        return None
    return ' '.join(('TensorRT is unavailable: ' + '; '.join(missing)).split())  # one line


def _require_tensorrt() -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise TensorRTUnavailable(reason)


def _write_atomic(path: Path, data) -> None:
    """Write ``data`` (bytes or any buffer, e.g. TensorRT's IHostMemory) to ``path`` through a temporary file."""
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as handle:
        handle.write(memoryview(data))
    os.replace(tmp, path)


def _row_shape(onnx_bytes: bytes, input_name: str, file_name: str) -> tuple[int, ...]:
    """The static dimensions after the (dynamic) batch dimension of an ONNX graph's input."""
    import onnx
    graph = onnx.load_model_from_string(onnx_bytes).graph
    for value in graph.input:
        if value.name == input_name:
            dims = [d.dim_value if d.HasField('dim_value') else None for d in value.type.tensor_type.shape.dim]
            if len(dims) < 1 or any(d is None or d < 1 for d in dims[1:]):
                raise ValueError(f'{file_name}: input {input_name!r} has shape {dims}; only the batch dimension may '
                                 'be dynamic.')
            return tuple(int(d) for d in dims[1:])
    raise ValueError(f'{file_name} has no input {input_name!r}; export the pair again with export_onnx.')


def _check_precisions(precisions: Sequence[str] | str) -> tuple[str, ...]:
    precisions = (precisions,) if isinstance(precisions, str) else tuple(precisions)
    bad = [p for p in precisions if p not in PRECISIONS]
    if not precisions or bad:
        raise ValueError(f'precisions must be a non-empty selection of {PRECISIONS}, got {precisions!r}.')
    return tuple(dict.fromkeys(precisions))


# ---------------------------------------------------------------------------------------------------------
# CUDA buffers with row access (the profilers' backends, plus partial-batch copies and a row gather)
# ---------------------------------------------------------------------------------------------------------
class _TorchRowBuffers(_TorchCudaBuffers):
    """torch.cuda buffers: pinned host tensors, device tensors, one stream."""

    def put(self, host, array: np.ndarray) -> None:
        host[:len(array)].copy_(self.torch.from_numpy(array))

    def get(self, host, n: int) -> np.ndarray:
        return host[:n].numpy().copy()

    def h2d_rows(self, host, device, n: int) -> None:
        self.h2d(host[:n], device[:n])

    def d2h_rows(self, host, device, n: int) -> None:
        self.d2h(host[:n], device[:n])

    def gather_rows(self, src, rows: np.ndarray, dst, row_bytes: int) -> None:
        """``dst[:len(rows)] = src[rows]`` on the device, on the stream."""
        torch = self.torch
        with torch.cuda.stream(self.stream):
            index = torch.from_numpy(rows.astype(np.int64)).to(self.device, non_blocking=False)
            torch.index_select(src, 0, index, out=dst[:len(rows)])


class _PyCudaRowBuffers(_PyCudaBuffers):
    """pycuda buffers: page-locked numpy arrays, device allocations, one stream."""

    def put(self, host, array: np.ndarray) -> None:
        host[:len(array)] = array

    def get(self, host, n: int) -> np.ndarray:
        return np.array(host[:n])

    def h2d_rows(self, host, device, n: int) -> None:
        self.cuda.memcpy_htod_async(device, host[:n], self.stream)

    def d2h_rows(self, host, device, n: int) -> None:
        self.cuda.memcpy_dtoh_async(host[:n], device, self.stream)

    def gather_rows(self, src, rows: np.ndarray, dst, row_bytes: int) -> None:
        """``dst[:len(rows)] = src[rows]`` on the device: one copy per run of consecutive rows."""
        out = 0
        for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
            self.cuda.memcpy_dtod_async(int(dst) + out * row_bytes, int(src) + int(run[0]) * row_bytes,
                                        len(run) * row_bytes, self.stream)
            out += len(run)


# Row-capable buffer backends by the name profilers._cuda_buffer_backend_name() gives.
_ROW_BUFFER_BACKENDS = {'torch': _TorchRowBuffers, 'pycuda': _PyCudaRowBuffers}


def _open_buffers(device_index: int):
    backend, why = profilers._cuda_buffer_backend_name()
    if backend is None:
        raise TensorRTUnavailable(f'TensorRT is unavailable: no CUDA GPU is usable from Python ({why})')
    return _ROW_BUFFER_BACKENDS[backend](int(device_index))


# ---------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------
def build_tensorrt_engines(folder: str | os.PathLike, precisions: Sequence[str] = PRECISIONS, max_batch: int = 64,
                           workspace_gb: float = 1.0, device_index: int = 0) -> dict[str, Any]:
    """Build TensorRT engines of the pair in ``folder`` and record them in its ``manifest.json``.

    For each precision writes ``little.<precision>.engine`` and ``big_tail.<precision>.engine`` (one
    optimization profile: batch min 1, opt 1, max ``max_batch``; fp32 with TF32 off; ``workspace_gb``
    of builder workspace) and sets ``manifest["tensorrt"][precision]`` to ``{"little": file,
    "big_tail": file, "max_batch": n, "tensorrt_version": ..., "gpu": ..., "tf32": ...}``, keeping the
    rest of the manifest. Returns the whole ``"tensorrt"`` section. Raises :class:`TensorRTUnavailable`
    (manifest and folder untouched) where TensorRT or a CUDA GPU is missing."""
    folder = Path(folder)
    precisions = _check_precisions(precisions)
    if int(max_batch) != max_batch or max_batch < 1:
        raise ValueError(f'max_batch must be a positive integer, got {max_batch!r}.')
    max_batch = int(max_batch)
    if not float(workspace_gb) > 0:
        raise ValueError(f'workspace_gb must be > 0, got {workspace_gb!r}.')
    read_manifest(folder)
    graphs = {}
    for part, file_name, input_name, _ in _PARTS:
        if not (folder / file_name).is_file():
            raise FileNotFoundError(f'{folder} holds no {file_name}; export the pair with export_onnx first.')
        onnx_bytes = (folder / file_name).read_bytes()
        graphs[part] = (onnx_bytes, input_name, _row_shape(onnx_bytes, input_name, file_name))
    _require_tensorrt()
    import tensorrt as trt
    buffers = _open_buffers(device_index)  # makes the CUDA context current for the builder
    section: dict[str, Any] = {}
    pending: list[tuple[Path, Path]] = []  # (temporary, final): engines replace old ones only when all are built
    try:
        gpu = buffers.describe().get('gpu')
        for precision in precisions:
            try:
                builder = TensorRTProfiler(precision=precision, workspace_gb=workspace_gb, device_index=device_index)
            except ProfilerUnavailable as exc:
                raise TensorRTUnavailable(exc.reason) from None
            entry: dict[str, Any] = {}
            for part, (onnx_bytes, input_name, row) in graphs.items():
                profile = {input_name: ((1, *row), (1, *row), (max_batch, *row))}
                try:
                    serialized = builder.build_serialized_engine(onnx_bytes, profile_shapes=profile,
                                                                 tf32=False if precision == 'fp32' else None)
                except ProfilerError as exc:
                    raise ProfilerError(f'{part} ({precision}): {exc}') from None
                name = f'{part}.{precision}.engine'
                pending.append((folder / (name + '.tmp'), folder / name))
                with open(pending[-1][0], 'wb') as handle:
                    handle.write(memoryview(serialized))
                entry[part] = name
            section[precision] = {**entry, 'max_batch': max_batch, 'tensorrt_version': str(trt.__version__),
                                  'gpu': gpu, 'tf32': precision != 'fp32'}
        for tmp, final in pending:
            os.replace(tmp, final)
    finally:
        buffers.close()
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
    manifest = read_manifest(folder)  # read-modify-write: keep whatever else is there
    manifest.setdefault('tensorrt', {}).update(section)
    _write_atomic(folder / 'manifest.json', (json.dumps(manifest, indent=1) + '\n').encode())
    return manifest['tensorrt']


# ---------------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------------
class _Engine:
    """One deserialised engine, its execution context and max-batch buffers, for both TensorRT API generations."""

    def __init__(self, trt, runtime, path: Path, buffers, max_batch: int, expected: tuple[str, ...],
                 record: dict[str, Any]):
        self.trt, self.buffers, self.max_batch = trt, buffers, max_batch
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f'TensorRT {trt.__version__} could not deserialise {path.name} (built with TensorRT '
                               f'{record.get("tensorrt_version")} on {record.get("gpu")}); engines only load with the '
                               'TensorRT version and on the GPU model that built them: rebuild them here with '
                               'build_tensorrt_engines.')
        self.context = self.engine.create_execution_context()
        engine = self.engine
        self.named = hasattr(engine, 'num_io_tensors')  # TensorRT >= 8.5: named tensors
        io = []  # (name, is_input, declared shape, numpy dtype, binding index)
        if self.named:
            for index in range(engine.num_io_tensors):
                name = engine.get_tensor_name(index)
                io.append((name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                           tuple(engine.get_tensor_shape(name)), trt.nptype(engine.get_tensor_dtype(name)), index))
        else:  # TensorRT 8.0-8.4 (JetPack 4.6): binding indices
            for index in range(engine.num_bindings):
                io.append((engine.get_binding_name(index), engine.binding_is_input(index),
                           tuple(engine.get_binding_shape(index)), trt.nptype(engine.get_binding_dtype(index)), index))
        names = sorted(name for name, *_ in io)
        if names != sorted(expected):
            raise RuntimeError(f'{path.name} has tensors {names}, expected {sorted(expected)}; rebuild the engines.')
        self.io = io
        self.inputs = [name for name, is_input, *_ in io if is_input]
        self.host, self.device, self.address, self.row_bytes, self.row_shape = {}, {}, {}, {}, {}
        for name, _, shape, dtype, _ in io:
            if len(shape) < 1 or any(d < 0 for d in shape[1:]):
                raise RuntimeError(f'{path.name}: tensor {name!r} has shape {list(shape)}; only the batch may be '
                                   'dynamic.')
            host, device, address = buffers.alloc((max_batch, *shape[1:]), dtype)
            self.host[name], self.device[name], self.address[name] = host, device, address
            self.row_shape[name] = tuple(shape[1:])
            self.row_bytes[name] = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize

    def run(self, n: int, addresses: dict[str, int] | None = None) -> None:
        """Enqueue the engine on ``n`` rows (buffers from ``addresses`` where given, else its own)."""
        addresses = {**self.address, **(addresses or {})}
        context = self.context
        if self.named:
            for name in self.inputs:
                if context.set_input_shape(name, (n, *self.row_shape[name])) is False:
                    raise RuntimeError(f'TensorRT refused batch {n} for {name!r} (max_batch {self.max_batch}).')
            for name, *_ in self.io:
                context.set_tensor_address(name, int(addresses[name]))
            ok = context.execute_async_v3(self.buffers.stream_handle)
        else:
            bindings = [0] * len(self.io)
            for name, is_input, _, _, index in self.io:
                if is_input and context.set_binding_shape(index, (n, *self.row_shape[name])) is False:
                    raise RuntimeError(f'TensorRT refused batch {n} for {name!r} (max_batch {self.max_batch}).')
                bindings[index] = int(addresses[name])
            ok = context.execute_async_v2(bindings=bindings, stream_handle=self.buffers.stream_handle)
        if not ok:
            raise RuntimeError('TensorRT execution failed (see the TensorRT log above).')

    def close(self) -> None:
        self.context = self.engine = None
        self.host = self.device = {}


class TensorRTRuntime:
    """Run the TensorRT engines of one precision that :func:`build_tensorrt_engines` recorded in ``folder``.

    :meth:`predict` runs the little engine on a batch, copies its logits and confidences back, applies
    the routing rule, gathers the escalated rows of the fork features *on the GPU* into the big tail's
    input (no copy when every row escalates) and runs the big tail on those rows only. :meth:`outputs`
    runs both engines on every row (the tail reads the little engine's fork features in place) and
    copies all four tensors back, for verification. Batches larger than the engines' ``max_batch``
    are run in chunks. Buffers use torch.cuda where available, else pycuda; :meth:`close` (or a
    ``with`` block) releases them."""

    def __init__(self, folder: str | os.PathLike, precision: str = 'fp32', device_index: int = 0):
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}.')
        self.folder = Path(folder)
        self.precision = precision
        self.manifest = read_manifest(self.folder)
        self.record = (self.manifest.get('tensorrt') or {}).get(precision)
        if self.record is None:
            raise FileNotFoundError(f'{self.folder}/manifest.json records no {precision} TensorRT engines; build '
                                    f'them with build_tensorrt_engines(folder, precisions=({precision!r},)).')
        self.threshold = float(self.manifest['router']['threshold'])
        self.max_batch = int(self.record['max_batch'])
        self.input_shape = tuple(self.manifest['input']['shape'][1:])
        _require_tensorrt()
        import tensorrt as trt
        self._buffers = _open_buffers(device_index)
        self._little = self._tail = None
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            self._trt_runtime = trt.Runtime(logger)
            for part, _, input_name, outputs in _PARTS:
                engine = _Engine(trt, self._trt_runtime, self.folder / self.record[part], self._buffers,
                                 self.max_batch, (input_name, *outputs), self.record)
                setattr(self, '_little' if part == 'little' else '_tail', engine)
        except BaseException:
            self.close()
            raise

    # -- helpers ----------------------------------------------------------------------------------------
    def _batch(self, x) -> np.ndarray:
        if self._buffers is None:
            raise RuntimeError('this TensorRTRuntime is closed.')
        x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f'expected a batch of shape (n, {", ".join(map(str, self.input_shape))}), '
                             f'got {tuple(x.shape)}.')
        return x

    def _run_little(self, chunk: np.ndarray) -> None:
        little, buffers = self._little, self._buffers
        buffers.put(little.host['input'], chunk)
        buffers.h2d_rows(little.host['input'], little.device['input'], len(chunk))
        little.run(len(chunk))

    def _fetch(self, engine: _Engine, names: Iterable[str], n: int) -> list[np.ndarray]:
        for name in names:
            self._buffers.d2h_rows(engine.host[name], engine.device[name], n)
        self._buffers.synchronize()
        return [self._buffers.get(engine.host[name], n) for name in names]

    # -- public -----------------------------------------------------------------------------------------
    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``little_logits``, ``confidence``, ``fork_features`` and ``big_logits`` (the tail run on every row)."""
        x = self._batch(x)
        little, tail = self._little, self._tail
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ('little_logits', 'confidence', 'fork_features',
                                                               'big_logits')}
        for start in range(0, len(x), self.max_batch):
            chunk = x[start:start + self.max_batch]
            n = len(chunk)
            self._run_little(chunk)
            tail.run(n, {'fork_features': little.address['fork_features']})
            for name, value in zip(('little_logits', 'confidence', 'fork_features'),
                                   self._fetch(little, ('little_logits', 'confidence', 'fork_features'), n)):
                parts[name].append(value)
            parts['big_logits'].append(self._fetch(tail, ('big_logits',), n)[0])
        if not len(x):
            return {name: np.zeros((0, *engine.row_shape[name]), np.float32) for name, engine in
                    (('little_logits', little), ('confidence', little), ('fork_features', little),
                     ('big_logits', tail))}
        return {name: np.concatenate(values) for name, values in parts.items()}

    def predict(self, x: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(predictions int64, escalated bool)`` for a batch ``x`` of shape ``(n, 3, H, W)`` (float32).

        ``threshold`` defaults to the manifest's. The fork features stay on the GPU: the escalated rows
        are gathered there into the big tail's input."""
        x = self._batch(x)
        threshold = self.threshold if threshold is None else float(threshold)
        little, tail, buffers = self._little, self._tail, self._buffers
        preds, escalations = [], []
        for start in range(0, len(x), self.max_batch):
            chunk = x[start:start + self.max_batch]
            n = len(chunk)
            self._run_little(chunk)
            logits, confidence = self._fetch(little, ('little_logits', 'confidence'), n)
            escalated = escalation(confidence.reshape(n), threshold)
            pred = logits.argmax(1).astype(np.int64)
            rows = np.flatnonzero(escalated)
            if rows.size == n:  # every row: the tail reads the fork features in place
                tail.run(n, {'fork_features': little.address['fork_features']})
            elif rows.size:
                buffers.gather_rows(little.device['fork_features'], rows, tail.device['fork_features'],
                                    little.row_bytes['fork_features'])
                tail.run(int(rows.size))
            if rows.size:
                pred[rows] = self._fetch(tail, ('big_logits',), int(rows.size))[0].argmax(1)
            preds.append(pred)
            escalations.append(escalated)
        if not len(x):
            return np.zeros(0, np.int64), np.zeros(0, bool)
        return np.concatenate(preds), np.concatenate(escalations)

    def close(self) -> None:
        """Release the engines, then the CUDA buffers (and pycuda's context). Safe to call twice."""
        for engine in (self._little, self._tail):
            if engine is not None:
                engine.close()
        self._little = self._tail = None
        self._trt_runtime = None
        if getattr(self, '_buffers', None) is not None:
            self._buffers.close()
            self._buffers = None

    def __enter__(self) -> 'TensorRTRuntime':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------
# verification against ONNX Runtime
# ---------------------------------------------------------------------------------------------------------
def verify_tensorrt(folder: str | os.PathLike, precision: str, inputs: Iterable[Any], atol: float | None = None, *,
                    threshold: float | None = None, min_agreement: float = 0.99,
                    device_index: int = 0) -> dict[str, Any]:
    """Compare the ``precision`` engines in ``folder`` with ONNX Runtime (CPUExecutionProvider) on ``inputs``.

    ``inputs`` are batches (numpy arrays or torch tensors of shape ``(n, 3, H, W)``); ``threshold``
    defaults to the manifest's. fp32: ``little_logits``, ``confidence`` and ``big_logits`` within ``atol``
    (default 1e-3) of ONNX Runtime's; escalation decisions of :meth:`TensorRTRuntime.predict` equal except
    where ONNX Runtime's confidence lies within ``atol`` of the threshold; its predictions equal on every
    other input (a row whose deciding logits have their top two within ``2 * atol`` — a tie the
    tolerance allows to flip — is counted in ``near_ties`` instead). fp16: the differences are reported
    (and checked only when ``atol`` is given), the predictions must agree on at least ``min_agreement``
    of the inputs. Raises :class:`nni_bigLittle.deploy.export.ExportMismatch` naming the tensor and the
    difference; returns the worst differences and agreement rates."""
    from nni_bigLittle.deploy.export import ExportMismatch
    import onnxruntime as ort
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}.')
    folder = Path(folder)
    manifest = read_manifest(folder)
    threshold = float(manifest['router']['threshold']) if threshold is None else float(threshold)
    tol = (1e-3 if atol is None else float(atol)) if precision == 'fp32' else (None if atol is None else float(atol))
    little = ort.InferenceSession(str(folder / 'little.onnx'), providers=['CPUExecutionProvider'])
    tail = ort.InferenceSession(str(folder / 'big_tail.onnx'), providers=['CPUExecutionProvider'])
    worst = {'little_logits': 0.0, 'confidence': 0.0, 'big_logits': 0.0, 'fork_features': 0.0}
    checked = ('little_logits', 'confidence', 'big_logits')
    seen = same_pred = same_escalation = borderline = ties = escalated_total = 0
    with TensorRTRuntime(folder, precision, device_index) as runtime:
        for batch in inputs:
            x = runtime._batch(batch.detach().cpu().numpy() if hasattr(batch, 'detach') else batch)
            if not len(x):
                continue
            ref_logits, ref_conf, ref_fork = little.run(None, {'input': x})
            ref = {'little_logits': ref_logits, 'confidence': ref_conf, 'fork_features': ref_fork,
                   'big_logits': tail.run(None, {'fork_features': ref_fork})[0]}
            ours = runtime.outputs(x)
            for name, value in ours.items():
                diff = float(np.abs(value.astype(np.float64) - ref[name]).max())
                worst[name] = max(worst[name], diff)
                if tol is not None and name in checked and not diff <= tol:
                    raise ExportMismatch(f'{name}: {precision} TensorRT differs from ONNX Runtime by {diff:.2e} '
                                         f'(> {tol:g}).')
            ref_esc = escalation(ref_conf, threshold)
            ref_pred = np.where(ref_esc, ref['big_logits'].argmax(1), ref_logits.argmax(1))
            pred, escalated = runtime.predict(x, threshold)
            near = (np.abs(ref_conf - threshold) <= tol) & (threshold < 1.0) if tol is not None \
                else np.zeros(len(x), bool)
            if precision == 'fp32':
                bad = (escalated != ref_esc) & ~near
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise ExportMismatch(f'escalation: {int(bad.sum())} of {len(x)} fp32 TensorRT decisions differ '
                                         f'from ONNX Runtime away from the threshold (e.g. confidence '
                                         f'{ref_conf[i]:.6f} vs {threshold:.6f}).')
                deciding = np.where(ref_esc[:, None], ref['big_logits'], ref_logits)
                top2 = np.sort(deciding, axis=1)[:, -2:] if deciding.shape[1] > 1 else None
                tie = (top2[:, 1] - top2[:, 0] <= 2 * tol) if top2 is not None else np.zeros(len(x), bool)
                wrong = (pred != ref_pred) & ~near & ~tie
                if wrong.any():
                    raise ExportMismatch(f'predictions: {int(wrong.sum())} of {len(x)} fp32 TensorRT predictions '
                                         'differ from ONNX Runtime away from the threshold and from ties.')
                ties += int(tie.sum())
            seen += len(x)
            same_pred += int((pred == ref_pred).sum())
            same_escalation += int((escalated == ref_esc).sum())
            borderline += int(near.sum())
            escalated_total += int(escalated.sum())
    if seen == 0:
        raise ValueError('verify_tensorrt needs at least one non-empty batch of inputs.')
    report = {'precision': precision, 'inputs': seen, 'threshold': threshold, 'atol': tol,
              **{f'max_abs_diff_{k}': v for k, v in worst.items()},
              'escalation_agreement': same_escalation / seen, 'prediction_agreement': same_pred / seen,
              'escalated_fraction': escalated_total / seen, 'inputs_within_atol_of_threshold': borderline,
              'near_ties': ties}
    if precision == 'fp16' and report['prediction_agreement'] < min_agreement:
        raise ExportMismatch(f'predictions: fp16 TensorRT agrees with ONNX Runtime on '
                             f'{report["prediction_agreement"]:.2%} of {seen} inputs (< {min_agreement:.0%}); '
                             f'max abs diff little_logits {worst["little_logits"]:.2e}, confidence '
                             f'{worst["confidence"]:.2e}, big_logits {worst["big_logits"]:.2e}.')
    return report
