"""Measuring kernel configurations and networks on this machine with ONNX Runtime: the frozen networks
(:class:`NetworkSpec`), the resumable measurement cache (:class:`MeasurementCache`) and the build's profiling
session (isolated kernels, end-to-end networks in passes, repeats of noisy measurements)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.kernels import Kernel, detect_kernels, torch_to_onnx
from nni_bigLittle.hw_predictors.builder.config import BuildConfig, BuildError
from nni_bigLittle.hw_predictors.builder.kernel_configs import KernelConfig, _kernel_from_dict, _Probe, \
    _same_features, weight_mb

_FORMAT = 'nni_bigLittle.build_local/1'


# ============================================================================================ networks


@dataclass
class NetworkSpec:
    """A frozen network of a preset (the little path or the big network of one random sample)."""
    preset: str
    seed: int
    part: str  # 'little' or 'big'
    arch: Any
    kernels: list[Kernel]

    @property
    def name(self) -> str:
        return f'{self.preset}/seed{self.seed}/{self.part}'

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.arch.resolution, self.arch.resolution)

    @property
    def macs(self) -> float:
        return float(sum(k.flops for k in self.kernels))

    @property
    def weight_mb(self) -> float:
        return weight_mb(self.kernels)

    def module(self):
        from nni_bigLittle.nn.model import BigLittleModel
        model = BigLittleModel(self.arch).eval()
        return model.little_path() if self.part == 'little' else model.big_path()


def network_specs(preset: str, seeds: Iterable[int]) -> list[NetworkSpec]:
    from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
    from nni_bigLittle.search_spaces.presets import get_preset
    spec = get_preset(preset)
    out = []
    for seed in seeds:
        arch = spec.decode(spec.random_sample(random.Random(seed)))
        ak = arch_kernels(arch)
        out.append(NetworkSpec(preset, seed, 'little', arch, list(ak.little_path)))
        out.append(NetworkSpec(preset, seed, 'big', arch, list(ak.big)))
    return out


def _kernel_configs_of(nets: Sequence[NetworkSpec]) -> list[KernelConfig]:
    out: list[KernelConfig] = []
    seen: set[str] = set()
    for net in nets:
        for k in net.kernels:
            cfg = KernelConfig.from_kernel(k)
            if cfg is None:
                raise BuildError(f'{net.name}: kernel {k.describe()} cannot be profiled standalone.')
            if cfg.key() not in seen:
                seen.add(cfg.key())
                out.append(cfg)
    return out


# ============================================================================================ measurement cache


class MeasurementCache:
    """Append-only JSON-lines store of measurements, keyed by a string; survives a killed build.

    The first line records the environment; a cache made on another CPU, ONNX Runtime version or
    thread count is refused (measurements would not be comparable).
    """

    def __init__(self, path: str | Path, environment: dict[str, Any]):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.new = 0
        self.environment = environment
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        else:
            with open(self.path, 'w', encoding='utf-8') as fh:
                fh.write(json.dumps({'kind': 'header', 'format': _FORMAT, 'environment': environment}) + '\n')

    def _load(self) -> None:
        with open(self.path, encoding='utf-8') as fh:
            lines = fh.read().splitlines()
        if not lines:
            raise BuildError(f'{self.path} is empty; delete it or use another --work-dir.')
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = {}
        if header.get('kind') != 'header' or header.get('format') != _FORMAT:
            raise BuildError(f'{self.path} is not a build-local measurement cache; use another --work-dir.')
        env = header.get('environment', {})
        for key in ('cpu_model', 'onnxruntime', 'threads', 'machine'):
            if env.get(key) != self.environment.get(key):
                raise BuildError(f'The measurements in {self.path} were made with {key}={env.get(key)!r}, this '
                                 f'build has {self.environment.get(key)!r}; use another --work-dir (or delete it).')
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if 'key' in rec:
                self.records[rec['key']] = rec

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        record = {'key': key, **record}
        self.records[key] = record
        with open(self.path, 'a', encoding='utf-8') as fh:
            fh.write(json.dumps(record) + '\n')
            fh.flush()
        self.new += 1
        return record

    def __len__(self) -> int:
        return len(self.records)


def _cache_stats(cache: MeasurementCache) -> dict[str, Any]:
    """How many measurements the cache holds, over which wall-clock span, under which load."""
    times = [_dt.datetime.fromisoformat(r['time']) for r in cache.records.values() if 'time' in r]
    loads = [float(r['load']) for r in cache.records.values() if 'load' in r]
    return {
        'kernel_measurements': sum(1 for r in cache.records.values() if r.get('kind') in ('kernel', 'kernel-rep')),
        'network_measurements': sum(1 for r in cache.records.values() if r.get('kind') == 'network'),
        'measurement_span_min': round((max(times) - min(times)).total_seconds() / 60, 2) if times else 0.0,
        'load_during_networks': [round(min(loads), 2), round(float(np.median(loads)), 2), round(max(loads), 2)]
        if loads else None,
    }


# ============================================================================================ profiling


def _environment(threads: int) -> dict[str, Any]:
    import onnxruntime
    import sklearn
    import torch

    from nni_bigLittle import __version__
    from nni_bigLittle.hw_predictors import bench_onnx
    return {'cpu_model': bench_onnx._cpu_model(), 'cpu_count': os.cpu_count(), 'machine': platform.machine(),
            'threads': int(threads), 'onnxruntime': onnxruntime.__version__, 'torch': torch.__version__,
            'numpy': np.__version__, 'sklearn': sklearn.__version__, 'python': platform.python_version(),
            'system': f'{platform.system()} {platform.release()}', 'nni_bigLittle': __version__}


class _Session:
    """State of one build: profilers, cache, clock, log."""

    def __init__(self, config: BuildConfig, cache: MeasurementCache, log: Callable[[str], None]):
        from nni_bigLittle.hw_predictors.profilers import OnnxRuntimeProfiler
        self.config = config
        self.cache = cache
        self.log = log
        self.kernel_profiler = OnnxRuntimeProfiler(threads=config.threads, warmup=config.kernel_warmup,
                                                   repeats=config.kernel_repeats,
                                                   min_time_s=config.kernel_min_time_s)
        self.network_profiler = OnnxRuntimeProfiler(threads=config.threads, warmup=config.network_warmup,
                                                    repeats=config.network_repeats,
                                                    min_time_s=config.network_min_time_s)
        self.start = time.monotonic()
        self.deadline = self.start + 60.0 * config.budget_minutes
        self.kernels: dict[str, Kernel] = {}    # config key -> detected kernel
        self.iso: dict[str, float] = {}         # config key -> isolated median (ms)
        self.invalid: dict[str, str] = {}       # config key -> why it cannot be profiled standalone

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def tqdm(self, items, desc: str, total: int | None = None):
        if not self.config.progress:
            return items
        from tqdm.auto import tqdm
        return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)

    # ---------------------------------------------------------------- kernels
    def _kernel_key(self, cfg: KernelConfig) -> str:
        c = self.config
        return f'kernel|t{c.threads}|w{c.kernel_warmup}r{c.kernel_repeats}m{c.kernel_min_time_s:g}|{cfg.key()}'

    def cached_kernel(self, cfg: KernelConfig) -> bool:
        """True when ``cfg`` has a measurement or is known to be unprofilable (loaded from the cache)."""
        key = cfg.key()
        if key in self.iso or key in self.invalid:
            return True
        rec = self.cache.get(self._kernel_key(cfg))
        if rec is None:
            return False
        if rec.get('kind') == 'invalid':
            self.invalid[key] = rec.get('reason', '')
            return True
        self.kernels[key] = _kernel_from_dict(rec['kernel'])
        self.iso[key] = float(rec['median_ms'])
        return True

    def measure_kernel(self, cfg: KernelConfig, strict: bool = True) -> float | None:
        """Isolated median latency (ms) of ``cfg``, from the cache or profiled now.

        The standalone module must be detected as exactly one kernel of ``cfg.type`` (for an ``mbconv``:
        equal to :func:`~.arch_kernels.block_kernel`), else the features would not be what prediction
        sees: ``strict`` raises :class:`BuildError`, otherwise the configuration is recorded as invalid
        (e.g. a perturbed block whose squeeze-excite would pool a 1x1 map) and None returned.
        """
        if self.cached_kernel(cfg):
            if cfg.key() in self.invalid and strict:
                raise BuildError(f'{cfg.key()} cannot be profiled standalone: {self.invalid[cfg.key()]}')
            return self.iso.get(cfg.key())
        module = cfg.module()
        detected = detect_kernels(module, 'torch', cfg.input_shape)
        reason = None
        if len(detected) != 1 or detected[0].type != cfg.type:
            reason = f'detected as {[k.type for k in detected]}, not one {cfg.type!r} kernel'
        elif cfg.type == 'mbconv':
            from nni_bigLittle.hw_predictors.arch_kernels import block_kernel
            if not _same_features(detected[0], block_kernel(cfg.block_config(), cfg.hw)[0]):
                reason = 'detection disagrees with arch_kernels.block_kernel'
        if reason is not None:
            if strict:
                raise BuildError(f'The standalone module of {cfg.key()} is {reason}; its features would not match '
                                 'what prediction sees.')
            self.invalid[cfg.key()] = reason
            self.cache.put(self._kernel_key(cfg), {'kind': 'invalid', 'config': cfg.to_dict(), 'reason': reason})
            return None
        kernel = detected[0]
        onnx_bytes = torch_to_onnx(module, cfg.input_shape)
        result, attempts = _robust_profile(self.kernel_profiler, onnx_bytes)
        self.cache.put(self._kernel_key(cfg), {
            'kind': 'kernel', 'config': cfg.to_dict(), 'kernel': kernel.to_dict(), 'median_ms': result.median_ms,
            'p10_ms': result.p10_ms, 'p90_ms': result.p90_ms, 'mean_ms': result.mean_ms, 'repeats': result.repeats,
            'attempts': attempts, 'time': _now()})
        self.kernels[cfg.key()] = kernel
        self.iso[cfg.key()] = float(result.median_ms)
        return self.iso[cfg.key()]

    def measure_kernels(self, cfgs: Sequence[KernelConfig], desc: str, until: float | None = None,
                        strict: bool = False) -> list[KernelConfig]:
        """Measure ``cfgs`` (cached first, then the rest in a shuffled order) until the deadline ``until``
        (monotonic seconds); returns the configurations that have a measurement."""
        todo = [c for c in cfgs if not self.cached_kernel(c)]
        order = list(todo)
        random.Random(len(todo)).shuffle(order)
        for cfg in self.tqdm(order, desc=desc):
            if until is not None and time.monotonic() > until:
                left = sum(1 for c in todo if c.key() not in self.iso and c.key() not in self.invalid)
                self.log(f'    {desc}: time budget reached, {left} configurations left unprofiled')
                break
            self.measure_kernel(cfg, strict=strict)
        return [c for c in cfgs if c.key() in self.iso]

    # ---------------------------------------------------------------- networks and probes
    def measure_probe(self) -> float:
        c = self.config
        key = f'probe|t{c.threads}|w{c.network_warmup}r{c.network_repeats}m{c.network_min_time_s:g}'
        rec = self.cache.get(key)
        if rec is None:
            result = self.network_profiler.profile(torch_to_onnx(_Probe().eval(), (1, 3, 32, 32)))
            rec = self.cache.put(key, {'kind': 'probe', 'median_ms': result.median_ms, 'time': _now()})
        return float(rec['median_ms'])

    def _network_key(self, net: NetworkSpec, p: int) -> str:
        c = self.config
        return (f'network|t{c.threads}|w{c.network_warmup}r{c.network_repeats}m{c.network_min_time_s:g}|'
                f'{net.name}|pass{p}')

    def measure_networks(self, nets: Sequence[NetworkSpec], desc: str, passes: Sequence[int]) -> None:
        """One end-to-end measurement of every network per pass index in ``passes`` (cached by pass),
        in a shuffled order so that calibration and validation networks share the machine's state."""
        exports: dict[str, bytes] = {}
        jobs = [(p, n) for p in passes for n in nets if self.cache.get(self._network_key(n, p)) is None]
        random.Random(len(jobs)).shuffle(jobs)
        for p, net in self.tqdm(jobs, desc=desc):
            if net.name not in exports:
                exports[net.name] = torch_to_onnx(net.module(), net.input_shape)
            result, attempts = _robust_profile(self.network_profiler, exports[net.name])
            self.cache.put(self._network_key(net, p), {
                'kind': 'network', 'name': net.name, 'pass': p, 'median_ms': result.median_ms,
                'p10_ms': result.p10_ms, 'p90_ms': result.p90_ms, 'repeats': result.repeats, 'attempts': attempts,
                'load': os.getloadavg()[0], 'time': _now()})

    def network_medians(self, net: NetworkSpec, passes: Iterable[int] = range(64)) -> list[float]:
        out = []
        for p in passes:
            rec = self.cache.get(self._network_key(net, p))
            if rec is not None:
                out.append(float(rec['median_ms']))
        return out

    def remeasure_kernel(self, cfg: KernelConfig, rep: int) -> None:
        """A repeated isolated measurement (``rep`` >= 1) of an already measured kernel, later in the build."""
        key = f'{self._kernel_key(cfg)}|rep{rep}'
        if self.cache.get(key) is None:
            result, attempts = _robust_profile(self.kernel_profiler, torch_to_onnx(cfg.module(), cfg.input_shape))
            self.cache.put(key, {'kind': 'kernel-rep', 'median_ms': result.median_ms, 'p10_ms': result.p10_ms,
                                 'attempts': attempts, 'time': _now()})

    def kernel_reps(self, cfg: KernelConfig, reps: int) -> list[float]:
        values = [self.iso[cfg.key()]]
        for rep in range(1, reps):
            rec = self.cache.get(f'{self._kernel_key(cfg)}|rep{rep}')
            if rec is not None:
                values.append(float(rec['median_ms']))
        return values


def _robust_profile(profiler, onnx_bytes: bytes, tries: int = 3, tolerance: float = 1.15):
    """Profile; when the median sits more than ``tolerance`` above the 10th percentile (another process
    took the core during the timed loop: on an idle core the two are within a few per cent), profile
    again, up to ``tries`` times, and keep the attempt with the lowest median. Returns (result, medians)."""
    best, attempts = None, []
    for _ in range(tries):
        result = profiler.profile(onnx_bytes)
        attempts.append(round(result.median_ms, 6))
        if best is None or result.median_ms < best.median_ms:
            best = result
        if result.median_ms <= tolerance * result.p10_ms:
            break
    return best, attempts


def _spread(values: Sequence[float]) -> float:
    return float(max(values) / min(values) - 1.0) if values and min(values) > 0 else 0.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')


def _pass_schedule(passes: int) -> tuple[list[int], list[int], list[int]]:
    """Network pass indices measured at the start, after the prior and at the end of the build: the
    passes are spread over the build so that slow drifts of a shared machine average out."""
    if passes <= 1:
        return [0], [], []
    if passes == 2:
        return [0], [], [1]
    return [0], list(range(1, passes - 1)), [passes - 1]
