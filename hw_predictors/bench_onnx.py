#!/usr/bin/env python3
"""Benchmark one ONNX model with ONNX Runtime and print its latency statistics as JSON.

This file is deliberately standalone: it imports only the Python standard library, numpy and
onnxruntime, so it can be copied to a Jetson, a Raspberry Pi or any other device (the SSH profiler
does exactly that) and run there without installing ``nni_bigLittle``::

    python3 bench_onnx.py model.onnx --threads 1 --warmup 10 --repeats 50 --json
    python3 bench_onnx.py model.onnx --input-shape input=1x3x32x32     # dynamic dims need a shape
    python3 bench_onnx.py --check --json                                # environment only, no model

With ``--json`` exactly one line goes to stdout: the JSON result, or ``{"error": ..., "error_type":
...}`` when something failed (exit status non-zero), so a caller reading stdout over SSH always
gets something it can parse. Without ``--json`` the same object is printed indented.

The in-process profiler (``nni_bigLittle.hw_predictors.profilers``) imports this module and calls
:func:`make_session`, :func:`make_feeds` and :func:`benchmark_session`, so local and remote
measurements come from the same code.
"""
import argparse
import json
import math
import os
import platform
import socket
import sys
import time

# numpy / onnxruntime are imported defensively: on a fresh device one of them is often missing,
# and the caller (possibly over SSH) should get a JSON error telling how to fix that, not a traceback.
_IMPORT_ERRORS = {}
try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised only on devices without numpy
    np = None
    _IMPORT_ERRORS['numpy'] = str(exc)
try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - exercised only on devices without onnxruntime
    ort = None
    _IMPORT_ERRORS['onnxruntime'] = str(exc)

__all__ = ['BenchError', 'MissingDependencyError', 'parse_input_shapes', 'make_session', 'make_feeds',
           'benchmark_session', 'summarize_times', 'environment_info', 'main']

# Exit statuses, so a remote caller can tell the failure kinds apart even without parsing stdout.
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_MODEL_ERROR = 4

# ONNX tensor element types -> numpy dtypes used to make random inputs.
_ONNX_TO_NUMPY = {
    'tensor(float)': 'float32',
    'tensor(float16)': 'float16',
    'tensor(double)': 'float64',
    'tensor(int64)': 'int64',
    'tensor(int32)': 'int32',
    'tensor(int8)': 'int8',
    'tensor(uint8)': 'uint8',
    'tensor(bool)': 'bool',
}


# This script runs on devices without the package and imports nothing of it; loaded as part of the package
# (whose ``__init__`` imports nni_bigLittle.errors), its errors also derive from the package's BigLittleError.
_PACKAGE_BASE = ((sys.modules['nni_bigLittle.errors'].BigLittleError,)
                 if __name__.startswith('nni_bigLittle.') and 'nni_bigLittle.errors' in sys.modules else ())


class BenchError(*_PACKAGE_BASE, RuntimeError):
    """A problem with the model or the arguments; the message says what to change."""


class MissingDependencyError(BenchError):
    """numpy or onnxruntime is not importable by this Python interpreter."""


def _require_dependencies():
    if _IMPORT_ERRORS:
        missing = ', '.join(sorted(_IMPORT_ERRORS))
        raise MissingDependencyError(
            f'Python {platform.python_version()} at {sys.executable} cannot import {missing} '
            f'({"; ".join(_IMPORT_ERRORS.values())}). Install them for this interpreter with '
            f'`{sys.executable} -m pip install numpy onnxruntime` (or `pip install numpy onnxruntime`).')


def parse_input_shapes(specs):
    """Parse ``['name=1x3x32x32', ...]`` into ``{'name': (1, 3, 32, 32)}``.

    Accepts a dict (returned normalised) or None (empty dict), so callers can pass either form.
    """
    if specs is None:
        return {}
    if isinstance(specs, dict):
        return {str(k): tuple(int(d) for d in v) for k, v in specs.items()}
    shapes = {}
    for spec in specs:
        name, sep, dims = str(spec).rpartition('=')
        if not sep or not name or not dims:
            raise BenchError(f'bad --input-shape {spec!r}: expected NAME=D1xD2x..., e.g. input=1x3x32x32')
        try:
            shape = tuple(int(d) for d in dims.lower().replace(',', 'x').split('x'))
        except ValueError:
            raise BenchError(f'bad --input-shape {spec!r}: dimensions must be integers separated by "x", '
                             'e.g. input=1x3x32x32') from None
        if any(d <= 0 for d in shape):
            raise BenchError(f'bad --input-shape {spec!r}: every dimension must be a positive integer')
        shapes[name] = shape
    return shapes


def make_session(model, threads=1, providers=None):
    """Create an ONNX Runtime session configured for reproducible latency measurements.

    ``model`` is a path or the serialized model bytes. One intra-op pool of ``threads`` threads,
    no inter-op parallelism and sequential execution, so that ``threads`` is the only knob that
    changes parallelism; all graph optimizations on, as a deployment would use.
    """
    _require_dependencies()
    if int(threads) < 1:
        raise BenchError(f'threads must be >= 1, got {threads}')
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings on stderr would clutter remote logs
    if providers is None:
        providers = ['CPUExecutionProvider']
    if isinstance(model, (bytes, bytearray)):
        source = bytes(model)
    else:
        source = os.fspath(model)
        if not os.path.isfile(source):
            raise BenchError(f'ONNX file not found: {source}')
    try:
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises several private exception types
        raise BenchError(f'ONNX Runtime could not load the model: {exc}') from exc


def make_feeds(session, input_shapes=None, seed=0):
    """Random inputs of the model's declared shapes (dynamic dims taken from ``input_shapes``)."""
    _require_dependencies()
    shapes = parse_input_shapes(input_shapes)
    inputs = session.get_inputs()
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise BenchError(f'--input-shape names {unknown} are not inputs of the model; '
                         f'its inputs are {[i.name for i in inputs]}')
    # RandomState rather than default_rng: Jetson Nano's Ubuntu 18.04 ships numpy 1.13.
    rng = np.random.RandomState(seed)
    feeds = {}
    for inp in inputs:
        declared = list(inp.shape)
        if inp.name in shapes:
            shape = shapes[inp.name]
            if len(shape) != len(declared):
                raise BenchError(f'input {inp.name!r} has rank {len(declared)} (declared shape {declared}), '
                                 f'but --input-shape gives {len(shape)} dims {list(shape)}')
            for given, want in zip(shape, declared):
                if isinstance(want, int) and want > 0 and given != want:
                    raise BenchError(f'input {inp.name!r} has fixed shape {declared}; '
                                     f'--input-shape {list(shape)} disagrees with it')
        else:
            dynamic = [d for d in declared if not (isinstance(d, int) and d > 0)]
            if dynamic:
                example = 'x'.join(str(d) if isinstance(d, int) and d > 0 else '1' for d in declared)
                raise BenchError(f'input {inp.name!r} has dynamic dimensions {declared}; give its shape with '
                                 f'--input-shape {inp.name}={example} (input_shapes={{{inp.name!r}: ...}} '
                                 'in Python)')
            shape = tuple(declared)
        dtype = _ONNX_TO_NUMPY.get(inp.type)
        if dtype is None:
            raise BenchError(f'input {inp.name!r} has element type {inp.type}, which bench_onnx cannot '
                             f'generate; supported: {sorted(_ONNX_TO_NUMPY)}')
        if dtype.startswith('float'):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == 'bool':
            feeds[inp.name] = rng.randint(0, 2, size=shape).astype(bool)
        else:  # small non-negative integers are valid indices for most integer inputs
            feeds[inp.name] = rng.randint(0, 2, size=shape).astype(dtype)
    return feeds


def summarize_times(times_ms):
    """Median, mean, std (sample, ddof=1), min, max, p10 and p90 of a list of times in ms."""
    if not times_ms:
        raise BenchError('no timings to summarize (repeats must be >= 1)')
    ordered = sorted(float(t) for t in times_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in ordered) / (n - 1)) if n > 1 else 0.0
    return {
        'median_ms': _percentile(ordered, 50.0),
        'mean_ms': mean,
        'std_ms': std,
        'min_ms': ordered[0],
        'max_ms': ordered[-1],
        'p10_ms': _percentile(ordered, 10.0),
        'p90_ms': _percentile(ordered, 90.0),
    }


def _percentile(ordered, q):
    """Linear-interpolation percentile (numpy's default method) of an already sorted list."""
    position = (len(ordered) - 1) * q / 100.0
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def benchmark_session(session, feeds, warmup=10, repeats=50, min_time_s=0.0, *, before_timed=None,
                      after_timed=None):
    """Time ``session.run(None, feeds)``; return the statistics plus the environment as one dict.

    ``warmup`` untimed runs first (lazy allocations, caches), then at least ``repeats`` timed runs,
    continuing until ``min_time_s`` seconds of timed runs have passed (useful for slow energy
    counters). Each run is timed on its own with ``time.perf_counter``. ``before_timed`` and
    ``after_timed`` (optional callables) run right before the first and right after the last timed
    run, outside the timings: the energy meters hook in there so warm-up is not metered.
    The returned ``repeats`` is the number of timed runs actually made.
    """
    warmup, repeats, min_time_s = int(warmup), int(repeats), float(min_time_s)
    if warmup < 0 or repeats < 1 or min_time_s < 0:
        raise BenchError(f'need warmup >= 0, repeats >= 1 and min_time_s >= 0; got warmup={warmup}, '
                         f'repeats={repeats}, min_time_s={min_time_s}')
    for _ in range(warmup):
        session.run(None, feeds)
    times_ms = []
    clock = time.perf_counter
    if before_timed is not None:
        before_timed()
    loop_start = clock()
    while len(times_ms) < repeats or clock() - loop_start < min_time_s:
        start = clock()
        session.run(None, feeds)
        times_ms.append((clock() - start) * 1000.0)
    if after_timed is not None:
        after_timed(len(times_ms))
    result = summarize_times(times_ms)
    options = session.get_session_options()
    result.update(repeats=len(times_ms), warmup=warmup, threads=int(options.intra_op_num_threads),
                  total_timed_s=clock() - loop_start)
    result.update(environment_info(session))
    return result


def _cpu_model():
    """The CPU model name: /proc/cpuinfo 'model name' (x86, some ARM), else platform.processor()."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as fh:
            for line in fh:
                key, sep, value = line.partition(':')
                if sep and key.strip().lower() == 'model name' and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _board_model():
    """The board name on ARM boards (Jetson, Raspberry Pi) from the device tree, else None."""
    try:
        with open('/proc/device-tree/model', 'rb') as fh:
            return fh.read().rstrip(b'\x00\n').decode('utf-8', errors='replace') or None
    except OSError:
        return None


def environment_info(session=None):
    """Versions and machine facts that make a latency number interpretable later."""
    info = {
        'onnxruntime_version': getattr(ort, '__version__', None),
        'numpy_version': getattr(np, '__version__', None),
        'python_version': platform.python_version(),
        'python_executable': sys.executable,
        'machine': platform.machine(),
        'processor': _cpu_model(),
        'board': _board_model(),
        'system': f'{platform.system()} {platform.release()}',
        'cpu_count': os.cpu_count(),
        'hostname': socket.gethostname(),
    }
    if session is not None:
        info['providers'] = list(session.get_providers())
    elif ort is not None:
        info['providers'] = list(ort.get_available_providers())
    else:
        info['providers'] = []
    return info


def _build_parser():
    parser = argparse.ArgumentParser(
        description='Benchmark one ONNX model with ONNX Runtime (latency statistics as JSON).')
    parser.add_argument('model', nargs='?', help='path of the .onnx file (omit with --check)')
    parser.add_argument('--threads', type=int, default=1, help='intra-op threads (default 1)')
    parser.add_argument('--warmup', type=int, default=10, help='untimed runs first (default 10)')
    parser.add_argument('--repeats', type=int, default=50, help='minimum timed runs (default 50)')
    parser.add_argument('--min-time', type=float, default=0.0, dest='min_time',
                        help='keep running until this many seconds of timed runs (default 0)')
    parser.add_argument('--input-shape', action='append', default=[], metavar='NAME=1x3x32x32',
                        help='shape of an input with dynamic dimensions; repeat for several inputs')
    parser.add_argument('--providers', default='CPUExecutionProvider',
                        help='comma-separated ONNX Runtime execution providers (default CPUExecutionProvider)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random inputs (default 0)')
    parser.add_argument('--check', action='store_true',
                        help='only check that numpy and onnxruntime import; print the environment')
    parser.add_argument('--json', action='store_true', help='print only one line of JSON on stdout')
    return parser


def _emit(obj, as_json):
    if as_json:
        sys.stdout.write(json.dumps(obj, sort_keys=True) + '\n')
    else:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + '\n')
    sys.stdout.flush()


def main(argv=None):
    """Command-line entry point; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        _require_dependencies()
        if args.check:
            info = environment_info()
            info['ok'] = True
            _emit(info, args.json)
            return 0
        if not args.model:
            raise BenchError('no model given: pass the path of an .onnx file (or --check)')
        providers = [p.strip() for p in args.providers.split(',') if p.strip()]
        session = make_session(args.model, threads=args.threads, providers=providers)
        feeds = make_feeds(session, parse_input_shapes(args.input_shape), seed=args.seed)
        result = benchmark_session(session, feeds, warmup=args.warmup, repeats=args.repeats,
                                   min_time_s=args.min_time)
        result['model'] = os.path.basename(args.model)
        _emit(result, args.json)
        return 0
    except MissingDependencyError as exc:
        status, error = EXIT_MISSING_DEPENDENCY, exc
    except BenchError as exc:
        status, error = EXIT_USAGE, exc
    except Exception as exc:  # an ONNX Runtime failure while running: report it, do not hang the caller
        status, error = EXIT_MODEL_ERROR, exc
    _emit({'error': str(error), 'error_type': type(error).__name__,
           'python_executable': sys.executable, 'python_version': platform.python_version()}, args.json)
    sys.stderr.write(f'bench_onnx: error: {error}\n')
    return status


if __name__ == '__main__':
    sys.exit(main())
