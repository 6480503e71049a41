"""Profilers that measure the latency (and, where possible, the energy) of ONNX models.

- :class:`OnnxRuntimeProfiler` — ONNX Runtime on this machine (CPU by default).
- :class:`TensorRTProfiler` — TensorRT on a local NVIDIA GPU (needs ``tensorrt`` and CUDA).
- :class:`SSHProfiler` — ONNX Runtime on a remote device (Jetson, Raspberry Pi, ...) over SSH: copies
  the standalone ``bench_onnx.py`` and the model there, runs it, parses its JSON.

All three return a :class:`ProfileResult`. The ONNX Runtime profilers (local and SSH) share the
benchmark loop of :mod:`bench_onnx` (same session options, same timing), so numbers from this
machine and from a device are comparable.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import bench_onnx
from .energy import EnergyBackend, EnergyError, EnergyReading, Figure, best_energy_backend
from nni_bigLittle.errors import BigLittleError

__all__ = ['ProfileResult', 'ProfilerError', 'ProfilerUnavailable', 'OnnxRuntimeProfiler', 'TensorRTProfiler',
           'SSHProfiler', 'BENCH_SCRIPT']

#: Path of the standalone benchmark script that the SSH profiler copies to devices.
BENCH_SCRIPT = Path(bench_onnx.__file__).resolve()

# Keys of a bench_onnx result that are statistics or settings; everything else is environment.
_STAT_KEYS = ('median_ms', 'mean_ms', 'std_ms', 'min_ms', 'max_ms', 'p10_ms', 'p90_ms', 'repeats', 'warmup',
              'threads', 'total_timed_s', 'model')

ModelLike = Union[str, os.PathLike, bytes, Any]  # a path, serialized bytes or an onnx.ModelProto
InputShapes = Optional[Dict[str, Sequence[int]]]


class ProfilerError(BigLittleError, RuntimeError):
    """Profiling failed; the message says what went wrong and what to do."""


class ProfilerUnavailable(ProfilerError):
    """This profiler cannot run here (missing package, GPU, device or connection); ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ProfileResult:
    """Latency statistics of one model on one device (milliseconds), plus where they came from."""
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    warmup: int
    threads: int
    runtime: str                      # 'onnxruntime' or 'tensorrt'
    device: str                       # 'local', 'local:cuda:0' or 'ssh:user@host:port'
    environment: Dict[str, Any] = field(default_factory=dict)
    source: str = 'measured'
    energy: Optional[EnergyReading] = None
    max_ms: Optional[float] = None
    model: Optional[str] = None
    total_timed_s: Optional[float] = None   # wall time of the timed loop (energy windows span it)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data['energy'] = self.energy.to_dict() if self.energy is not None else None
        return data

    def latency(self) -> Figure:
        """The median latency as a labelled :class:`Figure`."""
        return Figure(self.median_ms, 'ms', 'measured', f'{self.runtime} on {self.device}, median of {self.repeats}')

    @classmethod
    def from_bench(cls, bench: Dict[str, Any], runtime: str, device: str, *, energy: Optional[EnergyReading] = None,
                   model: Optional[str] = None, extra_environment: Optional[Dict[str, Any]] = None) -> 'ProfileResult':
        """Build a result from a :func:`bench_onnx.benchmark_session` dict (local or remote JSON)."""
        missing = [k for k in ('median_ms', 'mean_ms', 'std_ms', 'min_ms', 'p10_ms', 'p90_ms', 'repeats')
                   if k not in bench]
        if missing:
            raise ProfilerError(f'benchmark result lacks {missing}; got keys {sorted(bench)}')
        environment = {k: v for k, v in bench.items() if k not in _STAT_KEYS}
        environment.update(extra_environment or {})
        return cls(median_ms=float(bench['median_ms']), mean_ms=float(bench['mean_ms']),
                   std_ms=float(bench['std_ms']), min_ms=float(bench['min_ms']), p10_ms=float(bench['p10_ms']),
                   p90_ms=float(bench['p90_ms']), repeats=int(bench['repeats']), warmup=int(bench.get('warmup', 0)),
                   threads=int(bench.get('threads', 0)), runtime=runtime, device=device, environment=environment,
                   energy=energy, max_ms=float(bench['max_ms']) if 'max_ms' in bench else None,
                   model=model if model is not None else bench.get('model'),
                   total_timed_s=float(bench['total_timed_s']) if 'total_timed_s' in bench else None)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _model_bytes_and_label(model: ModelLike) -> Tuple[Union[bytes, str], str]:
    """(a path or serialized bytes ONNX Runtime can load, a short label for reports)."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), '<bytes>'
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ProfilerError(f'ONNX file not found: {path}')
        return path, os.path.basename(path)
    if hasattr(model, 'SerializeToString'):  # onnx.ModelProto, without importing onnx here
        name = getattr(getattr(model, 'graph', None), 'name', '') or '<ModelProto>'
        return model.SerializeToString(), name
    raise ProfilerError(f'cannot profile a {type(model).__name__}: pass the path of an .onnx file, its bytes, '
                        'or an onnx.ModelProto (export torch modules with torch.onnx.export first)')


def _read_model_bytes(model: ModelLike) -> Tuple[bytes, str]:
    source, label = _model_bytes_and_label(model)
    if isinstance(source, bytes):
        return source, label
    return Path(source).read_bytes(), label


def _resolve_energy_backend(energy_backend, prefer: Sequence[str] = ('RAPL', 'NVML', 'tegrastats')
                            ) -> Optional[EnergyBackend]:
    """None, 'auto' (the best available backend in ``prefer`` order, or None) or a backend that must work."""
    if energy_backend is None:
        return None
    if energy_backend == 'auto':
        return best_energy_backend(prefer)
    if not isinstance(energy_backend, EnergyBackend):
        raise ProfilerError(f'energy_backend must be None, "auto" or an EnergyBackend, got {energy_backend!r}')
    ok, reason = energy_backend.available()
    if not ok:
        raise ProfilerUnavailable(f'energy backend {energy_backend.name} is unavailable: {reason}')
    return energy_backend


class _EnergyWindow:
    """Adapts an energy backend to benchmark_session's before/after hooks, and cleans up on errors."""

    def __init__(self, backend: Optional[EnergyBackend]):
        self.backend = backend
        self.reading: Optional[EnergyReading] = None
        self._running = False

    def before(self) -> None:
        if self.backend is not None:
            try:
                self.backend.start()
            except EnergyError as exc:
                raise ProfilerError(f'could not start energy measurement: {exc}') from None
            self._running = True

    def after(self, inferences: int) -> None:
        if self.backend is not None and self._running:
            self._running = False
            try:
                self.reading = self.backend.stop(inferences)
            except EnergyError as exc:
                raise ProfilerError(f'energy measurement failed: {exc}') from None

    def abort(self) -> None:
        if self.backend is not None and self._running:
            self._running = False
            self.backend.abort()


# --------------------------------------------------------------------------------------------
# ONNX Runtime, in process
# --------------------------------------------------------------------------------------------

class OnnxRuntimeProfiler:
    """Latency of ONNX models with ONNX Runtime on this machine.

    Sessions use one intra-op pool of ``threads`` threads, sequential execution and all graph
    optimizations (the same options as ``bench_onnx.py``). ``warmup`` untimed runs, then at least
    ``repeats`` timed runs lasting at least ``min_time_s``. ``energy_backend`` (an
    :class:`~.energy.EnergyBackend`, or ``'auto'`` for the best one available) meters the timed loop.
    """
    runtime = 'onnxruntime'

    def __init__(self, threads: int = 1, warmup: int = 10, repeats: int = 50, min_time_s: float = 0.0,
                 providers: Optional[Sequence[str]] = None, energy_backend=None):
        if bench_onnx.ort is None or bench_onnx.np is None:
            raise ProfilerUnavailable('onnxruntime and numpy are needed: `pip install numpy onnxruntime`')
        if int(threads) < 1 or int(repeats) < 1 or int(warmup) < 0 or float(min_time_s) < 0:
            raise ValueError('need threads >= 1, repeats >= 1, warmup >= 0 and min_time_s >= 0; '
                             f'got threads={threads}, '
                             f'repeats={repeats}, warmup={warmup}, min_time_s={min_time_s}')
        self.threads = int(threads)
        self.warmup = int(warmup)
        self.repeats = int(repeats)
        self.min_time_s = float(min_time_s)
        self.providers = list(providers) if providers else ['CPUExecutionProvider']
        available = bench_onnx.ort.get_available_providers()
        unknown = [p for p in self.providers if p not in available]
        if unknown:
            raise ProfilerUnavailable(f'ONNX Runtime execution provider(s) {unknown} are not available here; '
                                      f'available: {available}')
        self.energy_backend = _resolve_energy_backend(energy_backend)

    def profile(self, model: ModelLike, input_shapes: InputShapes = None) -> ProfileResult:
        """Profile one model (a path to .onnx, its bytes, or an ``onnx.ModelProto``)."""
        source, label = _model_bytes_and_label(model)
        try:
            session = bench_onnx.make_session(source, threads=self.threads, providers=self.providers)
            feeds = bench_onnx.make_feeds(session, input_shapes)
        except bench_onnx.BenchError as exc:
            raise ProfilerError(f'{label}: {exc}') from None
        window = _EnergyWindow(self.energy_backend)
        try:
            bench = bench_onnx.benchmark_session(session, feeds, self.warmup, self.repeats, self.min_time_s,
                                                 before_timed=window.before, after_timed=window.after)
        except bench_onnx.BenchError as exc:
            raise ProfilerError(f'{label}: {exc}') from None
        except ProfilerError:
            raise
        except Exception as exc:  # ONNX Runtime failed while running the model
            raise ProfilerError(f'{label}: ONNX Runtime failed while running the model: {exc}') from exc
        finally:
            window.abort()
        return ProfileResult.from_bench(bench, self.runtime, 'local', energy=window.reading, model=label)

    def profile_many(self, models: Iterable[ModelLike], input_shapes: InputShapes = None) -> List[ProfileResult]:
        """Profile several models one after the other, with the same settings."""
        return [self.profile(model, input_shapes) for model in models]

    def describe(self) -> Dict[str, Any]:
        """This machine's environment and the profiler's settings."""
        info = bench_onnx.environment_info()
        info.update(runtime=self.runtime, threads=self.threads, warmup=self.warmup, repeats=self.repeats,
                    min_time_s=self.min_time_s, providers=list(self.providers),
                    energy_backend=self.energy_backend.name if self.energy_backend else None)
        return info


# --------------------------------------------------------------------------------------------
# TensorRT, local GPU
# --------------------------------------------------------------------------------------------

class _TorchCudaBuffers:
    """Pinned host / device buffers and a stream through torch.cuda (no pycuda needed)."""

    def __init__(self, device_index: int):
        import torch
        self.torch = torch
        self.device = torch.device('cuda', device_index)
        torch.cuda.set_device(self.device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.stream_handle = self.stream.cuda_stream

    def alloc(self, shape, np_dtype, fill=None):
        torch = self.torch
        import numpy as np
        dtype = torch.from_numpy(np.zeros(1, dtype=np_dtype)).dtype
        host = torch.empty(tuple(shape), dtype=dtype).pin_memory()
        if fill is not None:
            host.copy_(torch.from_numpy(np.ascontiguousarray(fill)))
        device = torch.empty(tuple(shape), dtype=dtype, device=self.device)
        return host, device, int(device.data_ptr())

    def h2d(self, host, device) -> None:
        with self.torch.cuda.stream(self.stream):
            device.copy_(host, non_blocking=True)

    def d2h(self, host, device) -> None:
        with self.torch.cuda.stream(self.stream):
            host.copy_(device, non_blocking=True)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def describe(self) -> Dict[str, Any]:
        torch = self.torch
        return {'cuda_backend': 'torch', 'torch_version': torch.__version__, 'cuda_version': torch.version.cuda,
                'gpu': torch.cuda.get_device_name(self.device)}

    def close(self) -> None:
        pass


class _PyCudaBuffers:
    """The same with pycuda (Jetson images often have pycuda but no CUDA-enabled torch)."""

    def __init__(self, device_index: int):
        import pycuda.driver as cuda
        self.cuda = cuda
        cuda.init()
        self.gpu = cuda.Device(device_index)
        self.context = self.gpu.make_context()  # made current; popped in close()
        self.stream = cuda.Stream()
        self.stream_handle = self.stream.handle
        self._allocations = []

    def alloc(self, shape, np_dtype, fill=None):
        host = self.cuda.pagelocked_empty(tuple(shape), dtype=np_dtype)
        if fill is not None:
            host[...] = fill
        device = self.cuda.mem_alloc(max(host.nbytes, 1))
        self._allocations.append(device)
        return host, device, int(device)

    def h2d(self, host, device) -> None:
        self.cuda.memcpy_htod_async(device, host, self.stream)

    def d2h(self, host, device) -> None:
        self.cuda.memcpy_dtoh_async(host, device, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def describe(self) -> Dict[str, Any]:
        return {'cuda_backend': 'pycuda', 'gpu': self.gpu.name(),
                'cuda_version': '.'.join(str(v) for v in self.cuda.get_version())}

    def close(self) -> None:
        # Free device memory while our context is still current; freeing after pop() fails.
        for allocation in self._allocations:
            with contextlib.suppress(Exception):
                allocation.free()
        self._allocations = []
        with contextlib.suppress(Exception):
            self.context.pop()


def _onnx_to_fp16(onnx_bytes: bytes) -> bytes:
    """The ONNX model with float16 weights and computation but float32 inputs and outputs (Cast nodes at the
    edges), for TensorRT >= 11: its networks are strongly typed, so precision comes from the model's types.
    Uses the converter that ships with ONNX Runtime (``onnxruntime.transformers.float16``)."""
    import onnx
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise ProfilerError('fp16 engines on TensorRT >= 11 need an fp16 ONNX model, converted with '
                            f'onnxruntime.transformers.float16, which is not importable here ({exc}); '
                            '`pip install onnxruntime`') from None
    model = onnx.load_model_from_string(onnx_bytes)
    return convert_float_to_float16(model, keep_io_types=True).SerializeToString()


# Buffer backends by name (tests register a host-memory stand-in here).
_CUDA_BUFFER_BACKENDS = {'torch': _TorchCudaBuffers, 'pycuda': _PyCudaBuffers}


def _cuda_buffer_backend_name() -> Tuple[Optional[str], str]:
    """('torch' | 'pycuda' | None, reason)."""
    reasons = []
    try:
        import torch
        if torch.cuda.is_available():
            return 'torch', 'torch.cuda'
        reasons.append(f'torch {torch.__version__} sees no CUDA GPU')
    except ImportError:
        reasons.append('torch is not installed')
    try:
        import pycuda.driver as cuda
        cuda.init()
        if cuda.Device.count() > 0:
            return 'pycuda', 'pycuda'
        reasons.append('pycuda sees no CUDA GPU')
    except ImportError:
        reasons.append('pycuda is not installed')
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver
        reasons.append(f'pycuda could not initialise CUDA ({exc})')
    return None, '; '.join(reasons)


class TensorRTProfiler:
    """Latency of ONNX models as TensorRT engines on a local NVIDIA GPU (desktop or Jetson).

    The engine is built from the ONNX file (explicit batch; ``precision`` 'fp32' or 'fp16'), then
    each timed iteration copies the inputs host->device, executes, copies the outputs
    device->host and synchronizes — the end-to-end time an application sees, as the iCAS Jetson
    scripts measure it. Works with TensorRT 8.x (bindings, ``execute_async_v2``) and 10.x
    (named tensors, ``execute_async_v3``). Buffers use torch.cuda when available, else pycuda.
    Construction raises :class:`ProfilerUnavailable` when TensorRT or a CUDA GPU is missing.
    """
    runtime = 'tensorrt'

    def __init__(self, precision: str = 'fp32', warmup: int = 10, repeats: int = 50, workspace_gb: float = 1.0,
                 min_time_s: float = 0.0, device_index: int = 0, energy_backend=None):
        if precision not in ('fp32', 'fp16'):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
        if int(repeats) < 1 or int(warmup) < 0 or float(workspace_gb) <= 0:
            raise ValueError(f'need repeats >= 1, warmup >= 0 and workspace_gb > 0; got repeats={repeats}, '
                             f'warmup={warmup}, workspace_gb={workspace_gb}')
        reasons = []
        try:
            import tensorrt as trt
        except ImportError as exc:
            trt = None
            reasons.append(f'the tensorrt Python package is not importable ({exc}); install it with '
                           '`pip install tensorrt` (x86 + NVIDIA GPU) or use the JetPack python3-libnvinfer '
                           'on a Jetson')
        cuda_backend, cuda_reason = _cuda_buffer_backend_name()
        if cuda_backend is None:
            reasons.append(f'no CUDA GPU usable from Python ({cuda_reason})')
        if reasons:
            raise ProfilerUnavailable('TensorRT profiling is unavailable: ' + '; '.join(reasons))
        self.trt = trt
        self.trt_major = int(str(trt.__version__).split('.')[0])
        self.cuda_backend = cuda_backend
        self.precision = precision
        self.warmup = int(warmup)
        self.repeats = int(repeats)
        self.min_time_s = float(min_time_s)
        self.workspace_gb = float(workspace_gb)
        self.device_index = int(device_index)
        # 'auto' meters the GPU first here: NVML on desktop GPUs, tegrastats (whole board) on Jetsons.
        self.energy_backend = _resolve_energy_backend(energy_backend, prefer=('NVML', 'tegrastats', 'RAPL'))
        self.logger = trt.Logger(trt.Logger.WARNING)

    # -- engine -------------------------------------------------------------------------------
    def build_serialized_engine(self, onnx_bytes: bytes, input_shapes: InputShapes = None, *,
                                profile_shapes: Optional[Dict[str, Sequence[Sequence[int]]]] = None,
                                tf32: Optional[bool] = None):
        """Parse ONNX and build a serialized engine (needs a current CUDA context).

        Returns TensorRT's ``IHostMemory`` (a buffer: write it to an ``.engine`` file, or give it to
        ``trt.Runtime.deserialize_cuda_engine``). Dynamic inputs need an optimization profile:
        ``input_shapes`` ``{name: shape}`` gives a one-point profile (min = opt = max = shape),
        ``profile_shapes`` ``{name: (min, opt, max)}`` a range (e.g. batch 1 to 64); ``profile_shapes``
        wins for a name given in both. ``tf32``: None keeps TensorRT's default (TF32 allowed in fp32
        layers on Ampere and later GPUs), False forbids it (fp32 engines then compute in full fp32),
        True allows it. fp16 uses ``BuilderFlag.FP16`` up to TensorRT 10; TensorRT 11 builds strongly
        typed networks only and has no such flag, so there the ONNX model is first converted to fp16
        (float32 inputs and outputs kept, see :func:`_onnx_to_fp16`).
        """
        trt = self.trt
        shapes = bench_onnx.parse_input_shapes(input_shapes)
        ranges = {str(name): tuple(tuple(int(d) for d in shape) for shape in triple)
                  for name, triple in (profile_shapes or {}).items()}
        for name, triple in ranges.items():
            if len(triple) != 3:
                raise ProfilerError(f'profile_shapes[{name!r}] must be (min, opt, max) shapes, '
                                    f'got {len(triple)} shapes')
        fp16_flag = getattr(trt.BuilderFlag, 'FP16', None)
        if self.precision == 'fp16' and fp16_flag is None:  # TensorRT >= 11: strongly typed networks only
            onnx_bytes = _onnx_to_fp16(onnx_bytes)
        builder = trt.Builder(self.logger)
        # Explicit batch is a flag before TensorRT 10 and the only mode (flag deprecated) from 10 on.
        flags = 0
        if self.trt_major < 10:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ProfilerError(f'TensorRT could not parse the ONNX model: {errors}')
        config = builder.create_builder_config()
        workspace = int(self.workspace_gb * (1 << 30))
        if hasattr(config, 'set_memory_pool_limit'):  # TensorRT >= 8.4
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        else:
            config.max_workspace_size = workspace
        if self.precision == 'fp16' and fp16_flag is not None:
            config.set_flag(fp16_flag)
        if tf32 is not None and hasattr(trt.BuilderFlag, 'TF32'):
            if tf32:
                config.set_flag(trt.BuilderFlag.TF32)
            else:
                config.clear_flag(trt.BuilderFlag.TF32)
        # Dynamic inputs get an optimization profile: a range from profile_shapes, else one point.
        profile = None
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            declared = tuple(tensor.shape)
            if all(d > 0 for d in declared):
                continue
            if tensor.name in ranges:
                low, opt, high = ranges[tensor.name]
                for shape in (low, opt, high):
                    if len(shape) != len(declared) or any(d > 0 and d != s for d, s in zip(declared, shape)):
                        raise ProfilerError(f'profile shape {list(shape)} of input {tensor.name!r} does not fit its '
                                            f'declared shape {list(declared)}')
                if not all(a <= b <= c for a, b, c in zip(low, opt, high)) or min(low) < 1:
                    raise ProfilerError(f'profile of input {tensor.name!r} needs 1 <= min <= opt <= max in every '
                                        f'dimension; got min {list(low)}, opt {list(opt)}, max {list(high)}')
            elif tensor.name in shapes:
                low = opt = high = shapes[tensor.name]
            else:
                example = 'x'.join(str(d) if d > 0 else '1' for d in declared)
                raise ProfilerError(f'input {tensor.name!r} has dynamic dimensions {list(declared)}; give its shape '
                                    f'with input_shapes={{{tensor.name!r}: ({example.replace("x", ", ")})}}')
            if profile is None:
                profile = builder.create_optimization_profile()
            profile.set_shape(tensor.name, low, opt, high)
        if profile is not None:
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ProfilerError('TensorRT failed to build an engine for this model (see the TensorRT log above); '
                                'try a larger workspace_gb or precision="fp32"')
        return serialized

    def build_engine(self, onnx_bytes: bytes, input_shapes: InputShapes = None, *,
                     profile_shapes: Optional[Dict[str, Sequence[Sequence[int]]]] = None,
                     tf32: Optional[bool] = None):
        """Parse ONNX and build a deserialized ``ICudaEngine`` (needs a current CUDA context).

        Arguments as :meth:`build_serialized_engine`; the defaults keep the profiler's behaviour
        (one-point profiles, TensorRT's default TF32 setting)."""
        serialized = self.build_serialized_engine(onnx_bytes, input_shapes, profile_shapes=profile_shapes, tf32=tf32)
        runtime = self.trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise ProfilerError('TensorRT could not deserialize the engine it just built')
        return engine

    def _io_tensors(self, engine, context, shapes: Dict[str, Tuple[int, ...]]):
        """[(name, is_input, shape, numpy dtype, binding index)] for both TensorRT API generations."""
        trt = self.trt
        io = []
        if hasattr(engine, 'num_io_tensors'):  # TensorRT >= 8.5: named tensors
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            for name in names:
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and name in shapes:
                    context.set_input_shape(name, shapes[name])
            for index, name in enumerate(names):
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape = tuple(context.get_tensor_shape(name))
                io.append((name, is_input, shape, trt.nptype(engine.get_tensor_dtype(name)), index))
        else:  # TensorRT 8.0-8.4 (JetPack 4.6 on Jetson Nano): bindings
            for index in range(engine.num_bindings):
                if engine.binding_is_input(index) and engine.get_binding_name(index) in shapes:
                    context.set_binding_shape(index, shapes[engine.get_binding_name(index)])
            for index in range(engine.num_bindings):
                io.append((engine.get_binding_name(index), engine.binding_is_input(index),
                           tuple(context.get_binding_shape(index)), trt.nptype(engine.get_binding_dtype(index)), index))
        for name, _, shape, _, _ in io:
            if any(d < 0 for d in shape):
                raise ProfilerError(f'tensor {name!r} still has unknown dimensions {list(shape)} after setting the '
                                    'input shapes; give every dynamic input in input_shapes')
        return io

    # -- profiling ----------------------------------------------------------------------------
    def profile(self, model: ModelLike, input_shapes: InputShapes = None) -> ProfileResult:
        """Build an engine for ``model`` (path, bytes or ModelProto) and time it end to end."""
        import numpy as np
        onnx_bytes, label = _read_model_bytes(model)
        shapes = bench_onnx.parse_input_shapes(input_shapes)
        buffers = _CUDA_BUFFER_BACKENDS[self.cuda_backend](self.device_index)
        window = _EnergyWindow(self.energy_backend)
        engine = context = None
        try:
            engine = self.build_engine(onnx_bytes, shapes)
            context = engine.create_execution_context()
            io = self._io_tensors(engine, context, shapes)
            rng = np.random.default_rng(0)
            inputs, outputs, addresses = [], [], [0] * len(io)
            for name, is_input, shape, dtype, index in io:
                fill = rng.standard_normal(shape).astype(dtype) if is_input and np.issubdtype(dtype, np.floating) \
                    else (np.zeros(shape, dtype=dtype) if is_input else None)
                host, device, address = buffers.alloc(shape, dtype, fill)
                (inputs if is_input else outputs).append((host, device))
                addresses[index] = address
                if hasattr(context, 'set_tensor_address'):
                    context.set_tensor_address(name, address)
            use_v3 = hasattr(context, 'execute_async_v3') and hasattr(context, 'set_tensor_address')

            def run_once():
                for host, device in inputs:
                    buffers.h2d(host, device)
                if use_v3:
                    ok = context.execute_async_v3(buffers.stream_handle)
                else:
                    ok = context.execute_async_v2(bindings=addresses, stream_handle=buffers.stream_handle)
                for host, device in outputs:
                    buffers.d2h(host, device)
                buffers.synchronize()
                if not ok:
                    raise ProfilerError('TensorRT execution failed (see the TensorRT log above)')

            for _ in range(self.warmup):
                run_once()
            times_ms = []
            clock = time.perf_counter
            window.before()
            loop_start = clock()
            while len(times_ms) < self.repeats or clock() - loop_start < self.min_time_s:
                start = clock()
                run_once()
                times_ms.append((clock() - start) * 1000.0)
            window.after(len(times_ms))
            bench = bench_onnx.summarize_times(times_ms)
            bench.update(repeats=len(times_ms), warmup=self.warmup, threads=1, total_timed_s=clock() - loop_start)
            environment = self._environment(buffers)
            environment['execute_api'] = 'execute_async_v3' if use_v3 else 'execute_async_v2'

        finally:
            window.abort()
            # TensorRT objects go before the CUDA context and buffers they live in.
            context = engine = None  # noqa: F841 (drops the last references, which frees them)
            buffers.close()
        return ProfileResult.from_bench(bench, self.runtime, f'local:cuda:{self.device_index}', energy=window.reading,
                                        model=label, extra_environment=environment)

    def profile_many(self, models: Iterable[ModelLike], input_shapes: InputShapes = None) -> List[ProfileResult]:
        return [self.profile(model, input_shapes) for model in models]

    def _environment(self, buffers) -> Dict[str, Any]:
        info = {k: v for k, v in bench_onnx.environment_info().items()
                if k not in ('onnxruntime_version', 'providers')}
        info.update(tensorrt_version=str(self.trt.__version__), precision=self.precision,
                    workspace_gb=self.workspace_gb)
        info.update(buffers.describe())
        return info

    def describe(self) -> Dict[str, Any]:
        info = {k: v for k, v in bench_onnx.environment_info().items() if k not in ('onnxruntime_version', 'providers')}
        info.update(runtime=self.runtime, tensorrt_version=str(self.trt.__version__), precision=self.precision,
                    cuda_backend=self.cuda_backend, device_index=self.device_index, warmup=self.warmup,
                    repeats=self.repeats)
        return info


# --------------------------------------------------------------------------------------------
# SSH, remote device
# --------------------------------------------------------------------------------------------

def _tail(text: str, lines: int = 15) -> str:
    text = (text or '').strip()
    return '\n'.join(text.splitlines()[-lines:]) if text else '(empty)'


class SSHProfiler:
    """Latency of ONNX models on a remote device, measured there by ``bench_onnx.py`` over SSH.

    Uses the system ``ssh``/``scp`` binaries, non-interactively (``BatchMode=yes``: key
    authentication only, never a password prompt) and accepting a host key seen for the first
    time (``StrictHostKeyChecking=accept-new``). ``known_hosts_file`` sets ``UserKnownHostsFile``;
    ``ssh_options`` (e.g. ``('-o', 'ProxyJump=gw')``) come first, so they override these defaults;
    they are given to both ``ssh`` and ``scp``, so prefer the ``-o Name=value`` form.
    The device needs Python 3 with ``numpy`` and ``onnxruntime`` (``pip install numpy onnxruntime``).

    Each :meth:`profile` creates a temporary directory on the device (``mktemp -d``) unless
    ``remote_dir`` is given, copies the model and ``bench_onnx.py`` there, runs the benchmark and
    removes the directory again.
    """
    runtime = 'onnxruntime'

    def __init__(self, host: str, user: Optional[str] = None, port: int = 22, identity_file: Optional[str] = None,
                 python: str = 'python3', remote_dir: Optional[str] = None, threads: int = 1, warmup: int = 10,
                 repeats: int = 50, ssh_options: Sequence[str] = (), connect_timeout: float = 10,
                 known_hosts_file: Optional[str] = None, min_time_s: float = 0.0, command_timeout: float = 900):
        if not host:
            raise ValueError('host is required (a hostname or IP address of the device)')
        self.ssh_binary = shutil.which('ssh')
        self.scp_binary = shutil.which('scp')
        if self.ssh_binary is None or self.scp_binary is None:
            missing = [b for b, p in (('ssh', self.ssh_binary), ('scp', self.scp_binary)) if p is None]
            raise ProfilerUnavailable(f'the OpenSSH client ({", ".join(missing)}) is not on PATH; install it '
                                      '(e.g. `apt-get install openssh-client`)')
        if identity_file is not None and not os.path.isfile(os.path.expanduser(os.fspath(identity_file))):
            raise ProfilerError(f'identity_file {identity_file} does not exist')
        self.host = host
        self.user = user
        self.port = int(port)
        self.identity_file = os.path.expanduser(os.fspath(identity_file)) if identity_file else None
        self.python = python
        self.remote_dir = remote_dir
        self.threads = int(threads)
        self.warmup = int(warmup)
        self.repeats = int(repeats)
        self.min_time_s = float(min_time_s)
        self.ssh_options = [str(o) for o in ssh_options]
        self.connect_timeout = float(connect_timeout)
        self.known_hosts_file = os.fspath(known_hosts_file) if known_hosts_file else None
        self.command_timeout = float(command_timeout)

    # -- naming -------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """``user@host`` as given to ssh (just ``host`` when no user is set)."""
        return f'{self.user}@{self.host}' if self.user else self.host

    @property
    def device(self) -> str:
        return f'ssh:{self.target}:{self.port}'

    def _scp_target(self, remote_path: str) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host  # IPv6 literals need brackets
        return f'{self.user}@{host}:{remote_path}' if self.user else f'{host}:{remote_path}'

    # -- commands -----------------------------------------------------------------------------
    def _common_options(self) -> List[str]:
        options = list(self.ssh_options)  # first: ssh keeps the first value it gets for an option
        if self.known_hosts_file:
            options += ['-o', f'UserKnownHostsFile={self.known_hosts_file}']
        if self.identity_file:
            options += ['-i', self.identity_file, '-o', 'IdentitiesOnly=yes']
        options += ['-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=accept-new',
                    '-o', f'ConnectTimeout={max(int(round(self.connect_timeout)), 1)}', '-o', 'LogLevel=ERROR']
        return options

    def _ssh(self, remote_command: str, timeout: Optional[float] = None, stdin_data: Optional[str] = None,
             what: str = 'run a command') -> subprocess.CompletedProcess:
        argv = [self.ssh_binary, '-p', str(self.port), *self._common_options(), '-T', self.target, remote_command]
        return self._execute(argv, timeout or (self.connect_timeout + 60), stdin_data, what)

    def _scp(self, local_paths: Sequence[str], remote_dir: str) -> None:
        argv = [self.scp_binary, '-q', '-P', str(self.port), *self._common_options(), *local_paths,
                self._scp_target(remote_dir.rstrip('/') + '/')]
        done = self._execute(argv, self.connect_timeout + 300, None, 'copy files to the device')
        if done.returncode != 0:
            self._raise_ssh_error(done, 'copy files to the device')

    def _execute(self, argv: List[str], timeout: float, stdin_data: Optional[str],
                 what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, input=stdin_data, stdin=None if stdin_data is not None else subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProfilerError(f'{self.device}: timed out after {timeout:.0f} s trying to {what}; is the device '
                                'reachable and not overloaded? (raise connect_timeout / command_timeout if it '
                                'is slow)') \
                from None
        except OSError as exc:
            raise ProfilerUnavailable(f'could not run {argv[0]}: {exc}') from None

    def _raise_ssh_error(self, done: subprocess.CompletedProcess, what: str) -> None:
        """Turn an ssh/scp failure into an error that says what to check."""
        stderr = done.stderr or ''
        low = stderr.lower()
        where = f'{self.target} port {self.port}'
        if 'connection refused' in low:
            raise ProfilerUnavailable(f'cannot connect to {where}: connection refused; is sshd running on the device, '
                                      'and are the host and port right?')
        if 'timed out' in low:
            raise ProfilerUnavailable(f'cannot connect to {where}: connection timed out after '
                                      f'{self.connect_timeout:g} s; '
                                      'is the device on and reachable (network, firewall)?')
        if 'could not resolve hostname' in low or 'name or service not known' in low:
            raise ProfilerUnavailable(f'cannot connect to {where}: unknown host name {self.host!r}')
        if 'no route to host' in low or 'network is unreachable' in low:
            raise ProfilerUnavailable(f'cannot connect to {where}: {_tail(stderr, 1)}')
        if 'host key verification failed' in low or 'remote host identification has changed' in low:
            raise ProfilerUnavailable(f'cannot connect to {where}: the host key does not match the known_hosts entry '
                                      '(device reinstalled?); remove the old entry with `ssh-keygen -R HOST` if that '
                                      'is expected')
        if 'permission denied' in low and done.returncode == 255:
            raise ProfilerUnavailable(f'authentication to {where} failed (key-only, BatchMode): check the user name, '
                                      'pass identity_file=PATH_TO_PRIVATE_KEY, and put the public key into '
                                      "the device's ~/.ssh/authorized_keys (e.g. with ssh-copy-id)")
        if done.returncode == 255:
            raise ProfilerUnavailable(f'ssh to {where} failed: {_tail(stderr, 5)}')
        raise ProfilerError(f'{self.device}: could not {what} (exit status {done.returncode}); '
                            f'stderr:\n{_tail(stderr)}')

    def _python_command(self) -> str:
        return shlex.quote(self.python)

    def _interpret_bench_output(self, done: subprocess.CompletedProcess, what: str) -> Dict[str, Any]:
        """Parse bench_onnx's one JSON line; raise a precise error for every failure mode."""
        if done.returncode == 255:
            self._raise_ssh_error(done, what)
        payload = None
        for line in reversed((done.stdout or '').strip().splitlines()):
            line = line.strip()
            if line.startswith('{'):
                try:
                    payload = json.loads(line)
                    break
                except ValueError:
                    continue
        if done.returncode == 127 or (payload is None and ('not found' in (done.stderr or '')
                                                           or 'No such file' in (done.stderr or ''))):
            raise ProfilerUnavailable(f'{self.device}: the remote Python {self.python!r} was not found; pass '
                                      "python='/path/to/python3' (remote stderr: "
                                      f'{_tail(done.stderr, 3)})')
        if payload is None:
            raise ProfilerError(f'{self.device}: could not parse the benchmark output (exit status {done.returncode}).'
                                f'\nstdout tail:\n{_tail(done.stdout, 5)}\nremote stderr tail:\n{_tail(done.stderr)}')
        if 'error' in payload:
            if payload.get('error_type') == 'MissingDependencyError':
                raise ProfilerUnavailable(f'{self.device}: the remote Python {payload.get("python_executable")} lacks '
                                          'numpy and/or onnxruntime; run `pip install numpy onnxruntime` on the device '
                                          f'(details: {payload["error"]})')
            raise ProfilerError(f'{self.device}: the remote benchmark failed: {payload["error"]}')
        if done.returncode != 0:
            raise ProfilerError(f'{self.device}: the remote benchmark exited with status {done.returncode}; '
                                f'remote stderr tail:\n{_tail(done.stderr)}')
        return payload

    # -- public -------------------------------------------------------------------------------
    def check(self) -> Dict[str, Any]:
        """Verify the connection and the remote Python's numpy/onnxruntime; return the remote environment.

        Streams ``bench_onnx.py`` to the remote ``python -`` (no files are left on the device).
        """
        script = BENCH_SCRIPT.read_text()
        done = self._ssh(f'{self._python_command()} - --check --json', stdin_data=script,
                         what='check the remote Python')
        info = self._interpret_bench_output(done, 'check the remote Python')
        info['device'] = self.device
        return info

    @contextlib.contextmanager
    def _remote_workdir(self):
        """A remote directory holding bench_onnx.py: a fresh mktemp -d one (removed afterwards) or remote_dir."""
        if self.remote_dir:
            directory = self.remote_dir
            done = self._ssh(f'mkdir -p {shlex.quote(directory)}', what='create the remote directory')
            if done.returncode != 0:
                self._raise_ssh_error(done, f'create {directory} on the device')
            created = False
        else:
            # -t: in the device's $TMPDIR (or its default temporary directory); GNU, BSD and BusyBox agree.
            done = self._ssh('mktemp -d -t nni_biglittle_bench.XXXXXX',
                             what='create a temporary directory on the device')
            if done.returncode != 0:
                self._raise_ssh_error(done, 'create a temporary directory on the device')
            directory = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ''
            if not directory.startswith('/'):
                raise ProfilerError(f'{self.device}: `mktemp -d` returned {done.stdout!r}, not a directory path; '
                                    f'stderr: {_tail(done.stderr, 3)}')
            created = True
        try:
            self._scp([str(BENCH_SCRIPT)], directory)
            yield directory
        finally:
            if created:
                with contextlib.suppress(ProfilerError):
                    self._ssh(f'rm -rf {shlex.quote(directory)}', what='remove the remote temporary directory')

    def _profile_in(self, directory: str, model: ModelLike, input_shapes: InputShapes) -> ProfileResult:
        onnx_bytes, label = _read_model_bytes(model)
        shapes = bench_onnx.parse_input_shapes(input_shapes)
        with tempfile.TemporaryDirectory(prefix='nni_biglittle_ssh_') as local_dir:
            local_model = os.path.join(local_dir, 'model.onnx')
            Path(local_model).write_bytes(onnx_bytes)
            self._scp([local_model], directory)
        remote_model = f'{directory.rstrip("/")}/model.onnx'
        args = [f'{directory.rstrip("/")}/bench_onnx.py', remote_model, '--threads', str(self.threads),
                '--warmup', str(self.warmup), '--repeats', str(self.repeats), '--min-time', str(self.min_time_s),
                '--json']
        for name, shape in shapes.items():
            args += ['--input-shape', f'{name}={"x".join(str(d) for d in shape)}']
        command = ' '.join([self._python_command()] + [shlex.quote(a) for a in args])
        done = self._ssh(command, timeout=self.command_timeout, what='run the benchmark')
        payload = self._interpret_bench_output(done, 'run the benchmark')
        if self.remote_dir:  # a persistent directory keeps bench_onnx.py but not the model
            self._ssh(f'rm -f {shlex.quote(remote_model)}', what='remove the model from the device')
        return ProfileResult.from_bench(payload, self.runtime, self.device, model=label)

    def profile(self, onnx_model: ModelLike, input_shapes: InputShapes = None) -> ProfileResult:
        """Profile one model (path, bytes or ModelProto) on the device."""
        with self._remote_workdir() as directory:
            return self._profile_in(directory, onnx_model, input_shapes)

    def profile_many(self, models: Iterable[ModelLike], input_shapes: InputShapes = None) -> List[ProfileResult]:
        """Profile several models, copying bench_onnx.py once."""
        with self._remote_workdir() as directory:
            return [self._profile_in(directory, model, input_shapes) for model in models]

    def describe(self) -> Dict[str, Any]:
        return {'runtime': self.runtime, 'device': self.device, 'python': self.python, 'threads': self.threads,
                'warmup': self.warmup, 'repeats': self.repeats, 'min_time_s': self.min_time_s}
