"""Energy measurement backends, detected at run time, and the labelled numbers we report.

Three backends share one interface (:class:`EnergyBackend`):

- :class:`RaplEnergy` — Intel/AMD RAPL through Linux powercap (``/sys/class/powercap/intel-rapl:*``):
  CPU package energy counters in µJ.
- :class:`NvmlEnergy` — NVIDIA's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ,
  Volta and newer GPUs) through ``pynvml``.
- :class:`TegrastatsEnergy` — Jetson boards: power rails printed by ``tegrastats``, integrated over time.

Each one tells whether it can work here (:meth:`EnergyBackend.available` returns ``(ok, reason)``);
:func:`detect_energy_backends` lists all three with their reasons and :func:`best_energy_backend`
picks the first that works. Every number the project reports is a :class:`Figure`, which says
whether it was *measured* (and by which counter) or *predicted* (and by which predictor).
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple
from nni_bigLittle.errors import BigLittleError

__all__ = ['EnergyError', 'EnergyReading', 'Figure', 'EnergyBackend', 'EnergyMeasurement', 'RaplEnergy',
           'NvmlEnergy', 'TegrastatsEnergy', 'parse_tegrastats_line', 'total_power_mw', 'integrate_samples',
           'detect_energy_backends', 'best_energy_backend']

FIGURE_KINDS = ('measured', 'predicted')


class EnergyError(BigLittleError, RuntimeError):
    """An energy backend could not measure (unavailable, not started, counter unreadable)."""


# --------------------------------------------------------------------------------------------
# Reported numbers
# --------------------------------------------------------------------------------------------

def _format_value(value: float) -> str:
    """Three significant digits without scientific notation for the usual magnitudes."""
    if value != value:  # NaN
        return 'nan'
    magnitude = abs(value)
    if magnitude >= 1000:
        return f'{value:.0f}'
    if magnitude >= 0.001 or magnitude == 0:
        text = f'{value:.3g}'
        return text if 'e' not in text else f'{value:.3f}'
    return f'{value:.3g}'


@dataclass
class Figure:
    """A reported number that carries its provenance.

    ``kind`` is ``'measured'`` or ``'predicted'``; ``source`` names the counter or the predictor,
    e.g. ``'RAPL package-0'`` or ``'predictor jetson_nano_trt_fp32 (iCAS data)'``.
    ``str(Figure(12.3, 'mJ', 'measured', 'RAPL package-0'))`` is ``'12.3 mJ (measured, RAPL package-0)'``.
    """
    value: float
    unit: str
    kind: str
    source: str

    def __post_init__(self):
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f'Figure kind must be one of {FIGURE_KINDS}, got {self.kind!r}: say whether '
                             'the number was measured on hardware or predicted by a model')
        self.value = float(self.value)

    def __str__(self) -> str:
        return f'{_format_value(self.value)} {self.unit} ({self.kind}, {self.source})'

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EnergyReading:
    """Energy measured over a window in which ``inferences`` inferences ran."""
    joules: float
    seconds: float
    inferences: int
    mj_per_inference: float
    mean_power_w: float
    backend: str
    source: str = 'measured'
    detail: str = ''
    components: Dict[str, float] = field(default_factory=dict)  # joules per counter / rail

    @classmethod
    def from_totals(cls, joules: float, seconds: float, inferences: int, backend: str, detail: str = '',
                    components: Optional[Dict[str, float]] = None) -> 'EnergyReading':
        inferences = max(int(inferences), 0)
        return cls(joules=float(joules), seconds=float(seconds), inferences=inferences,
                   mj_per_inference=(joules * 1000.0 / inferences) if inferences else float('nan'),
                   mean_power_w=(joules / seconds) if seconds > 0 else float('nan'),
                   backend=backend, detail=detail, components=dict(components or {}))

    def figure(self) -> Figure:
        """Energy per inference as a labelled :class:`Figure` (mJ)."""
        return Figure(self.mj_per_inference, 'mJ', self.source, f'{self.backend} {self.detail}'.strip())

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Common interface
# --------------------------------------------------------------------------------------------

class EnergyMeasurement:
    """Handle yielded by :meth:`EnergyBackend.measure`; ``reading`` is filled when the block exits."""

    def __init__(self, inferences: int):
        self.inferences = inferences
        self.reading: Optional[EnergyReading] = None


class EnergyBackend:
    """Interface of an energy meter: check, start, stop.

    Subclasses implement :meth:`available`, :meth:`_begin` and :meth:`_end` (the latter returns
    ``(joules, detail, components)``). Usage::

        meter = RaplEnergy()
        ok, reason = meter.available()
        with meter.measure(inferences=100) as m:
            for _ in range(100): run_model()
        print(m.reading.figure())
    """
    name = 'energy'

    def available(self) -> Tuple[bool, str]:
        raise NotImplementedError

    def start(self) -> None:
        """Begin a measurement window (raises :class:`EnergyError` when the backend is unavailable)."""
        ok, reason = self.available()
        if not ok:
            raise EnergyError(f'{self.name} energy measurement is unavailable: {reason}')
        self._t0 = time.perf_counter()
        self._begin()

    def stop(self, inferences: int = 1) -> EnergyReading:
        """End the window; return the energy used in it, divided over ``inferences`` inferences."""
        if getattr(self, '_t0', None) is None:
            raise EnergyError(f'{self.name}: stop() called without start()')
        seconds = time.perf_counter() - self._t0
        self._t0 = None  # cleared first, so a failing _end() is not retried by abort()
        joules, detail, components = self._end()
        return EnergyReading.from_totals(joules, seconds, inferences, self.name, detail, components)

    @contextlib.contextmanager
    def measure(self, inferences: int = 1) -> Iterator[EnergyMeasurement]:
        """Context manager measuring the energy of its block; see the class docstring."""
        handle = EnergyMeasurement(inferences)
        self.start()
        try:
            yield handle
        except BaseException:
            self.abort()
            raise
        handle.reading = self.stop(handle.inferences)

    def abort(self) -> None:
        """End a started window without a reading (after an error); a no-op when none is running."""
        if getattr(self, '_t0', None) is None:
            return
        self._t0 = None
        with contextlib.suppress(Exception):
            self._end()

    def describe(self) -> str:
        return self.name

    # Subclass hooks
    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self) -> Tuple[float, str, Dict[str, float]]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# RAPL (Linux powercap)
# --------------------------------------------------------------------------------------------

DEFAULT_POWERCAP_ROOT = '/sys/class/powercap'


@dataclass
class _RaplZone:
    path: str
    name: str
    max_range_uj: int


class RaplEnergy(EnergyBackend):
    """CPU energy from RAPL counters exposed by Linux powercap.

    Zones are ``intel-rapl:N`` (packages, sometimes ``psys``) and ``intel-rapl:N:M`` subzones
    (``core``, ``uncore``, ``dram``). By default the total is the sum of the top-level
    ``package-*`` zones (subzones are inside their package, and ``psys`` contains the packages, so
    adding them would double count); ``zones=['package-0', 'dram']`` selects zones by name.
    Counters wrap at ``max_energy_range_uj``; one wrap per window is corrected.
    ``root`` is the powercap directory (tests point it at a fake tree).
    """
    name = 'RAPL'

    def __init__(self, root: str = DEFAULT_POWERCAP_ROOT, zones: Optional[Sequence[str]] = None):
        self.root = os.fspath(root)
        self.zone_names = list(zones) if zones is not None else None
        self._t0 = None
        self._start_uj: Dict[str, int] = {}

    def _all_zones(self) -> List[_RaplZone]:
        zones = []
        # intel-rapl:N and intel-rapl:N:M; sorted so that package-0 comes before package-1.
        for path in sorted(glob.glob(os.path.join(self.root, 'intel-rapl:*'))):
            name_file = os.path.join(path, 'name')
            try:
                with open(name_file) as fh:
                    name = fh.read().strip()
            except OSError:
                name = os.path.basename(path)
            try:
                with open(os.path.join(path, 'max_energy_range_uj')) as fh:
                    max_range = int(fh.read().strip())
            except (OSError, ValueError):
                max_range = 0
            zones.append(_RaplZone(path=path, name=name, max_range_uj=max_range))
        return zones

    def zones(self) -> List[_RaplZone]:
        """The zones that make up the total (see the class docstring)."""
        every = self._all_zones()
        if self.zone_names is not None:
            chosen = [z for z in every if z.name in self.zone_names or os.path.basename(z.path) in self.zone_names]
            return chosen
        top = [z for z in every if os.path.basename(z.path).count(':') == 1]
        packages = [z for z in top if z.name.startswith('package')]
        return packages or top

    def available(self) -> Tuple[bool, str]:
        if not os.path.isdir(self.root):
            return False, (f'no powercap directory {self.root} (RAPL needs Linux on an Intel or AMD x86 CPU, '
                           'and is usually hidden inside virtual machines and containers)')
        every = self._all_zones()
        if not every:
            return False, (f'no intel-rapl:* zones under {self.root} (the intel_rapl_common kernel module is not '
                           'loaded, or this CPU/VM does not expose RAPL)')
        chosen = self.zones()
        if not chosen:
            return False, (f'none of the requested RAPL zones {self.zone_names} exist; present: '
                           f'{sorted({z.name for z in every})}')
        for zone in chosen:
            counter = os.path.join(zone.path, 'energy_uj')
            try:
                self._read_uj(counter)
            except PermissionError:
                return False, (f'{counter} is not readable (permission denied; since Linux 5.10 RAPL counters '
                               'are root-only): run as root, or `sudo chmod a+r '
                               f'{os.path.join(self.root, "intel-rapl:*", "energy_uj")}`')
            except (OSError, ValueError) as exc:
                return False, f'cannot read {counter}: {exc}'
        names = ', '.join(z.name for z in chosen)
        return True, f'RAPL counters readable: {names}'

    @staticmethod
    def _read_uj(path: str) -> int:
        with open(path) as fh:
            return int(fh.read().strip())

    def _begin(self) -> None:
        self._zones = self.zones()
        self._start_uj = {z.path: self._read_uj(os.path.join(z.path, 'energy_uj')) for z in self._zones}

    def _end(self) -> Tuple[float, str, Dict[str, float]]:
        components = {}
        for zone in self._zones:
            end = self._read_uj(os.path.join(zone.path, 'energy_uj'))
            delta = end - self._start_uj[zone.path]
            if delta < 0:  # the counter wrapped around once during the window
                if zone.max_range_uj <= 0:
                    raise EnergyError(f'RAPL counter of {zone.name} wrapped and max_energy_range_uj is unknown')
                delta += zone.max_range_uj
            components[zone.name] = delta / 1e6
        detail = '+'.join(z.name for z in self._zones)
        return sum(components.values()), detail, components

    def describe(self) -> str:
        return f'RAPL ({self.root})'


# --------------------------------------------------------------------------------------------
# NVML (NVIDIA GPUs)
# --------------------------------------------------------------------------------------------

class NvmlEnergy(EnergyBackend):
    """GPU energy from NVML's total-energy counter (mJ since driver load; Volta and newer)."""
    name = 'NVML'

    def __init__(self, index: int = 0):
        self.index = int(index)
        self._t0 = None
        self._handle = None
        self._gpu_name = f'GPU{self.index}'

    def _nvml(self):
        try:
            import pynvml  # provided by the nvidia-ml-py package
        except ImportError:
            raise EnergyError('pynvml is not installed (`pip install nvidia-ml-py`)') from None
        return pynvml

    def _open(self):
        pynvml = self._nvml()
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            raise EnergyError(f'NVML could not initialise (no NVIDIA driver or GPU?): {exc}') from None
        try:
            count = pynvml.nvmlDeviceGetCount()
            if self.index >= count:
                raise EnergyError(f'GPU index {self.index} requested but NVML sees {count} GPU(s)')
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            name = pynvml.nvmlDeviceGetName(handle)
            self._gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except EnergyError:
            raise
        except Exception as exc:
            raise EnergyError(f'NVML could not open GPU {self.index}: {exc}') from None
        return pynvml, handle

    def available(self) -> Tuple[bool, str]:
        try:
            pynvml, handle = self._open()
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except Exception as exc:
                return False, (f'{self._gpu_name} has no readable total-energy counter ({exc}); it needs a Volta '
                               'or newer GPU')
        except EnergyError as exc:
            return False, str(exc)
        return True, f'NVML total-energy counter of GPU{self.index} ({self._gpu_name})'

    def _begin(self) -> None:
        pynvml, self._handle = self._open()
        self._start_mj = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _end(self) -> Tuple[float, str, Dict[str, float]]:
        pynvml = self._nvml()
        end_mj = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        joules = (end_mj - self._start_mj) / 1000.0
        detail = f'GPU{self.index} {self._gpu_name}'
        return joules, detail, {detail: joules}


# --------------------------------------------------------------------------------------------
# tegrastats (Jetson)
# --------------------------------------------------------------------------------------------

# "NAME 1234/1234" (L4T r32: Nano, TX1, TX2, Xavier) or "NAME 1234mW/1234mW" (L4T r34+: Orin, and
# Xavier on JetPack 5): instantaneous / running-average power in mW. The lookahead keeps memory
# fields such as "RAM 2361/3964MB" or "IRAM 0/252kB(lfb 252kB)" out.
_RAIL_PATTERN = re.compile(r'(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)')
# Non-power fields that could otherwise look like "NAME a/b".
_NOT_RAILS = {'RAM', 'SWAP', 'IRAM', 'lfb', 'cached'}
# Rails that measure the whole module/board input: when present, they alone are the total power.
_TOTAL_RAILS = ('VDD_IN', 'POM_5V_IN')


def parse_tegrastats_line(line: str) -> Dict[str, float]:
    """Power rails of one ``tegrastats`` line as ``{rail: instantaneous mW}``.

    Handles the L4T r32 format without units (``POM_5V_IN 2185/2185`` on Nano, ``VDD_IN 2676/2676``
    on TX2, ``GPU 0/0 CPU 311/311 SOC 1242/1242`` on AGX Xavier) and the r34+ format with units
    (``VDD_IN 4799mW/4799mW``, ``VDD_GPU_SOC 3176mW/3176mW`` on Orin). Non-power fields are ignored.
    """
    rails = {}
    for match in _RAIL_PATTERN.finditer(line):
        name = match.group(1)
        if name in _NOT_RAILS:
            continue
        rails[name] = float(match.group(2))
    return rails


def total_power_mw(rails: Dict[str, float], chosen: Optional[Sequence[str]] = None) -> Tuple[float, str]:
    """Total power of one parsed line and the rails it came from.

    ``VDD_IN`` / ``POM_5V_IN`` (whole-module input on Nano, TX2, Xavier NX, Orin NX/Nano) when
    present, since the other rails are parts of it; otherwise (AGX Xavier, AGX Orin, whose rails
    partition the module) the sum of all rails. ``chosen`` overrides with an explicit rail list.
    """
    if chosen:
        missing = [r for r in chosen if r not in rails]
        if missing:
            raise EnergyError(f'tegrastats line has no rail(s) {missing}; present: {sorted(rails)}')
        return sum(rails[r] for r in chosen), '+'.join(chosen)
    for name in _TOTAL_RAILS:
        if name in rails:
            return rails[name], name
    return sum(rails.values()), '+'.join(sorted(rails))


class TegrastatsEnergy(EnergyBackend):
    """Jetson board energy: sample ``tegrastats --interval N`` and integrate power over the window.

    The power of each sample holds until the next one (rectangle rule), clipped to the window; a
    window shorter than one interval uses the first sample after it started. Resolution is the
    sampling interval (``interval_ms``, default 100 ms), so windows should span many intervals
    (use a profiler's ``min_time_s``).
    """
    name = 'tegrastats'

    def __init__(self, interval_ms: int = 100, binary: str = 'tegrastats', rails: Optional[Sequence[str]] = None):
        self.interval_ms = int(interval_ms)
        self.binary = binary
        self.rails = list(rails) if rails else None
        self._t0 = None
        self._process: Optional[subprocess.Popen] = None
        self._samples: List[Tuple[float, Dict[str, float]]] = []
        self._lock = threading.Lock()

    def _binary_path(self) -> Optional[str]:
        found = shutil.which(self.binary)
        if found is None and os.path.isabs(self.binary) and os.access(self.binary, os.X_OK):
            found = self.binary
        if found is None and os.access('/usr/bin/tegrastats', os.X_OK) and self.binary == 'tegrastats':
            found = '/usr/bin/tegrastats'
        return found

    def available(self) -> Tuple[bool, str]:
        path = self._binary_path()
        if path is None:
            return False, f'no {self.binary!r} binary on PATH (not an NVIDIA Jetson, or L4T tools not installed)'
        return True, f'{path} sampling every {self.interval_ms} ms'

    def _reader(self, stream) -> None:
        for line in stream:
            rails = parse_tegrastats_line(line)
            if rails:
                with self._lock:
                    self._samples.append((time.perf_counter(), rails))

    def _begin(self) -> None:
        self._samples = []
        try:
            self._process = subprocess.Popen([self._binary_path(), '--interval', str(self.interval_ms)],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            raise EnergyError(f'could not start tegrastats: {exc}') from None
        self._thread = threading.Thread(target=self._reader, args=(self._process.stdout,), daemon=True)
        self._thread.start()
        # The window starts once tegrastats is launched; the reading's duration starts there too.
        self._window_start = self._t0 = time.perf_counter()

    def _end(self) -> Tuple[float, str, Dict[str, float]]:
        window_end = time.perf_counter()
        # A window shorter than one interval has no sample yet: wait for the first one.
        deadline = window_end + 3 * self.interval_ms / 1000.0 + 1.0
        while time.perf_counter() < deadline:
            with self._lock:
                if self._samples:
                    break
            if self._process.poll() is not None:
                break
            time.sleep(self.interval_ms / 4000.0)
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._thread.join(timeout=5)
        with self._lock:
            samples = list(self._samples)
        if not samples:
            raise EnergyError('tegrastats printed no power rails during the measurement (on some boards it '
                              'needs root: run with sudo)')
        return integrate_samples(samples, self._window_start, window_end, self.rails)


def integrate_samples(samples: Sequence[Tuple[float, Dict[str, float]]], window_start: float, window_end: float,
                      rails: Optional[Sequence[str]] = None) -> Tuple[float, str, Dict[str, float]]:
    """Energy (J) over [window_start, window_end] from timestamped tegrastats samples (mW).

    Each sample's power is taken to hold from its timestamp to the next sample's (the last one to
    the window end); the stretch before the first sample uses the first sample's power.
    """
    points = sorted(samples, key=lambda s: s[0])
    inside = [s for s in points if window_start <= s[0] <= window_end]
    if not inside:  # window shorter than one interval: the nearest later (or earlier) sample stands in
        later = [s for s in points if s[0] > window_end]
        stand_in = later[0] if later else points[-1]
        inside = [(window_start, stand_in[1])]
    joules = 0.0
    components: Dict[str, float] = {}
    detail = ''
    boundaries = [window_start] + [t for t, _ in inside[1:]] + [window_end]
    for (_, rails_mw), begin, end in zip(inside, boundaries[:-1], boundaries[1:]):
        span = max(end - begin, 0.0)
        power_mw, detail = total_power_mw(rails_mw, rails)
        joules += power_mw / 1000.0 * span
        for name, mw in rails_mw.items():
            components[name] = components.get(name, 0.0) + mw / 1000.0 * span
    return joules, detail, components


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------

def detect_energy_backends() -> List[Tuple[EnergyBackend, bool, str]]:
    """All three backends with whether each works here and why (or why not)."""
    found = []
    for backend in (RaplEnergy(), NvmlEnergy(), TegrastatsEnergy()):
        try:
            ok, reason = backend.available()
        except Exception as exc:  # a detection problem must not break the caller; report it instead
            ok, reason = False, f'detection failed: {type(exc).__name__}: {exc}'
        found.append((backend, bool(ok), reason))
    return found


def best_energy_backend(prefer: Sequence[str] = ('RAPL', 'NVML', 'tegrastats')) -> Optional[EnergyBackend]:
    """The first available backend in ``prefer`` order (by name), or None when none works.

    The default order suits CPU inference (RAPL meters the CPU package); pass
    ``prefer=('NVML', 'tegrastats', 'RAPL')`` when the model runs on a GPU.
    """
    detected = {backend.name: (backend, ok) for backend, ok, _ in detect_energy_backends()}
    unknown = [name for name in prefer if name not in detected]
    if unknown:
        raise ValueError(f'unknown energy backend name(s) {unknown}; choose from {sorted(detected)}')
    for name in prefer:
        backend, ok = detected[name]
        if ok:
            return backend
    return None
