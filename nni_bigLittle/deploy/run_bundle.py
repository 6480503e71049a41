#!/usr/bin/env python3
"""Run an nni_bigLittle deployment bundle: needs only python3, numpy and onnxruntime.

``nni-biglittle export`` copies this file into every bundle, next to

- ``little.onnx``: ``input`` -> ``little_logits``, ``confidence`` (the router's), ``fork_features``;
- ``big_tail.onnx``: ``fork_features`` -> ``big_logits``, run only for the inputs the router escalates;
- ``dynamic.onnx``: both in one graph whose ``If`` node runs the big tail only when the input escalates
  (batch 1; the ``threshold`` input defaults to the calibrated one);
- ``big.onnx``: the static big network of the same pair (input -> logits), for comparison;
- ``manifest.json``: the routing rule (escalate when ``confidence < threshold``), the input size and
  the preprocessing of raw pixels (scale to [0, 1], then ``(x - mean) / std``, NCHW).

Usage on the device::

    python3 run_bundle.py --data test.npz --bench            # accuracy, escalation rate, latency percentiles
    python3 run_bundle.py --data images/ --predictions out.csv
    python3 run_bundle.py --data test.npz --bench --graph dynamic --threads 4

``--data`` takes an ``.npz`` (``x_test``/``y_test``, ``x``/``y`` or ``images``/``labels``; integer arrays
are raw pixels, NHWC or NCHW, and get the manifest's preprocessing, float arrays are taken as ready model
input) or an image folder (one subfolder per class, or loose files without labels; PNG, PPM/PGM and
``.npy`` are read with numpy alone, other formats need Pillow).

Inside the package the same code is :class:`nni_bigLittle.deploy.export.BigLittleRuntime`; this file imports
nothing from the package, so the bundle runs where PyTorch and NNI are not installed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

MANIFEST_FORMAT = 'nni_bigLittle.onnx/1'
IMAGE_SUFFIXES = ('.png', '.ppm', '.pgm', '.pnm', '.npy', '.jpg', '.jpeg', '.bmp', '.webp', '.gif', '.tif', '.tiff')
NEVER = float('-inf')  # a threshold no confidence is below: the little network answers every input


# This script runs on devices without the package and imports nothing of it; loaded as part of the package
# (whose ``__init__`` imports nni_bigLittle.errors), its errors also derive from the package's BigLittleError.
_PACKAGE_BASE = ((sys.modules['nni_bigLittle.errors'].BigLittleError,)
                 if __name__.startswith('nni_bigLittle.') and 'nni_bigLittle.errors' in sys.modules else ())


class BundleError(*_PACKAGE_BASE, RuntimeError):
    """A bundle or its input data cannot be used; the message says what to do."""


def read_manifest(folder) -> dict:
    path = Path(folder) / 'manifest.json'
    if not path.is_file():
        raise FileNotFoundError(f'{Path(folder)} holds no manifest.json; write the bundle with '
                                '`nni-biglittle export` (or nni_bigLittle.deploy.export.export_onnx).')
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise BundleError(f'{path} is not valid JSON ({err}); export the bundle again.') from None
    if manifest.get('format') != MANIFEST_FORMAT:
        raise BundleError(f'{path} is not a {MANIFEST_FORMAT} manifest (format {manifest.get("format")!r}).')
    return manifest


def session_options(threads=None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


# The routing rule, a numpy copy of nni_bigLittle.nn.router.escalation_mask (this file imports nothing of the
# package; tests/test_routing_rule.py holds the two to the same answers).
def escalation(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Escalate when ``confidence < threshold``; a threshold >= 1 escalates everything."""
    if threshold >= 1.0:
        return np.ones(confidence.shape, dtype=bool)
    return confidence < threshold


def escalates(confidence: float, threshold: float) -> bool:
    """:func:`escalation` for one image, on Python scalars (right after a session run numpy's comparisons
    and reductions run on a cold cache and cost ~5 us each, ~2 % of a small little network). ``confidence``
    comes from a float32 graph: the threshold is compared at float32 precision too, as the batch path does."""
    return threshold >= 1.0 or confidence < float(np.float32(threshold))


class BigLittleRuntime:
    """An exported pair run with ONNX Runtime, input by input.

    :meth:`predict` runs ``little.onnx`` on a batch, compares the router's confidence with the threshold
    and runs ``big_tail.onnx`` only on the escalated rows of the cached fork features (batch splitting).
    :meth:`predict_dynamic` runs ``dynamic.onnx`` (one graph, ``If`` node) image by image.
    :meth:`records` gives per-sample records: prediction, escalation, wall latency of its batch (ms), the
    process's peak resident memory (MB) and, given an energy meter (RAPL or tegrastats from
    ``nni_bigLittle.hw_predictors.energy``), the energy of its batch per image (mJ).
    """

    def __init__(self, folder, threads=None, providers=('CPUExecutionProvider',)):
        import onnxruntime as ort
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.threads = threads
        self.providers = list(providers)
        options = session_options(threads)
        self.little = ort.InferenceSession(str(self.folder / 'little.onnx'), options, providers=self.providers)
        self.big_tail = ort.InferenceSession(str(self.folder / 'big_tail.onnx'), options, providers=self.providers)
        self.threshold = float(self.manifest['router']['threshold'])
        self._dynamic = None

    @property
    def dynamic(self):
        """The ``dynamic.onnx`` session, opened on first use (older bundles have none)."""
        if self._dynamic is None:
            import onnxruntime as ort
            path = self.folder / 'dynamic.onnx'
            if not path.is_file():
                raise BundleError(f'{self.folder} has no dynamic.onnx; export the bundle again to get it.')
            options = session_options(self.threads)
            # the threshold is an initializer listed as an input (a default callers may override), which ONNX
            # Runtime warns about on every load; it only feeds two comparisons, so nothing is lost
            options.log_severity_level = 3
            self._dynamic = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._dynamic

    def predict(self, x: np.ndarray, threshold=None):
        """``(predictions, escalated)`` for a batch ``x`` of shape ``(n, 3, H, W)`` (float32)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        logits, confidence, fork = self.little.run(None, {'input': x})
        threshold = self.threshold if threshold is None else float(threshold)
        if len(x) == 1:
            escalate = escalates(confidence.item(), threshold)  # one image, the edge-device case
            pred = (self.big_tail.run(None, {'fork_features': fork})[0] if escalate else logits).argmax(1)
            return pred, np.array([escalate])
        escalated = escalation(confidence, threshold)
        pred = logits.argmax(1)
        count = np.count_nonzero(escalated)
        if count:
            rows = fork if count == len(x) else fork[escalated]
            pred[escalated] = self.big_tail.run(None, {'fork_features': rows})[0].argmax(1)
        return pred, escalated

    def predict_dynamic(self, x: np.ndarray, threshold=None):
        """The same with ``dynamic.onnx``, one image per ``session.run`` (its ``If`` needs batch 1)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        feeds = {}
        if threshold is not None:
            feeds['threshold'] = np.asarray([threshold], dtype=np.float32)  # -inf is fine: never escalates
        pred = np.empty(len(x), dtype=np.int64)
        escalated = np.empty(len(x), dtype=bool)
        for i in range(len(x)):
            logits, esc = self.dynamic.run(None, {'input': x[i:i + 1], **feeds})[:2]
            pred[i], escalated[i] = logits.argmax(1)[0], bool(esc.reshape(-1)[0])
        return pred, escalated

    def records(self, images: np.ndarray, batch_size: int = 1, threshold=None, meter=None):
        """Per-sample records of running ``images`` in batches of ``batch_size``. With an energy ``meter``
        (``start()``, then ``stop(n)`` returning a reading with ``joules``, e.g. the RAPL or tegrastats
        backends of ``nni_bigLittle.hw_predictors.energy``), each record carries its batch's measured energy
        per image in mJ; without one, ``energy_mj`` is None."""
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            if meter is not None:
                meter.start()
            began = time.perf_counter()
            pred, escalated = self.predict(chunk, threshold)
            latency = (time.perf_counter() - began) * 1e3
            energy = meter.stop(len(chunk)).joules * 1e3 / len(chunk) if meter is not None else None
            peak = peak_rss_mb()
            out.extend({'prediction': int(p), 'escalated': bool(e), 'batch_latency_ms': latency,
                        'batch_size': len(chunk), 'peak_rss_mb': peak, 'energy_mj': energy}
                       for p, e in zip(pred, escalated))
        return out


# ---------------------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------------------
def peak_rss_mb():
    """Peak resident memory of this process in MB (None where the platform does not say).

    On Linux from /proc (VmHWM): ``getrusage``'s ru_maxrss survives ``execve``, so a process started by a
    large one would report its parent's peak."""
    try:
        with open('/proc/self/status') as fh:
            for line in fh:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == 'darwin' else peak / 1024.0  # bytes on macOS, KiB on Linux


def percentile(ordered, q):
    """Linear-interpolation percentile (numpy's default) of a sorted list."""
    position = (len(ordered) - 1) * q / 100.0
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(times_ms, images=None):
    """p50 / p90 / p99 / mean / std / min / max of per-call times (ms) and throughput (images/s)."""
    if not times_ms:
        raise ValueError('no timings to summarise')
    ordered = sorted(float(t) for t in times_ms)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in ordered) / (n - 1)) if n > 1 else 0.0
    stats = {'calls': n, 'p50_ms': percentile(ordered, 50), 'p90_ms': percentile(ordered, 90),
             'p99_ms': percentile(ordered, 99), 'mean_ms': mean, 'std_ms': std, 'min_ms': ordered[0],
             'max_ms': ordered[-1]}
    stats['throughput_per_s'] = (images if images is not None else n) / (sum(ordered) / 1e3)
    return stats


def _cpu_model():
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
    try:
        with open('/proc/device-tree/model', 'rb') as fh:
            return fh.read().rstrip(b'\x00\n').decode('utf-8', errors='replace') or None
    except OSError:
        return None


def environment(threads=None, providers=None):
    """What makes a latency number interpretable later: CPU, board, threads, library versions."""
    import onnxruntime as ort
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {'cpu': _cpu_model(), 'board': _board_model(), 'machine': platform.machine(),
            'cpu_count': os.cpu_count(), 'system': f'{platform.system()} {platform.release()}',
            'python': platform.python_version(), 'numpy': np.__version__, 'onnxruntime': ort.__version__,
            'providers': list(providers or ['CPUExecutionProvider']), 'intra_op_threads': threads,
            'load_average': load}


def run_bench(runtime: BigLittleRuntime, x: np.ndarray, labels=None, batch_size=1, threshold=None, graph='split',
              warmup=10):
    """Run every image of ``x`` through ``runtime`` in batches, timing each call; accuracy (when ``labels``
    are given), escalation rate, latency percentiles, throughput and peak memory."""
    if graph not in ('split', 'dynamic'):
        raise ValueError(f"graph must be 'split' or 'dynamic', got {graph!r}")
    if graph == 'dynamic' and batch_size != 1:
        raise BundleError('dynamic.onnx runs one image at a time (its If node needs batch 1); use --batch-size 1 '
                          'or --graph split.')
    call = runtime.predict if graph == 'split' else runtime.predict_dynamic
    for start in range(0, min(warmup, len(x)) * batch_size, batch_size):  # lazy allocations, caches
        call(x[start:start + batch_size], threshold)
    preds, escalated, times = [], [], []
    clock = time.perf_counter
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        began = clock()
        pred, esc = call(chunk, threshold)
        times.append((clock() - began) * 1e3)
        preds.append(pred)
        escalated.append(esc)
    preds, escalated = np.concatenate(preds), np.concatenate(escalated)
    result = {'images': int(len(x)), 'batch_size': int(batch_size), 'graph': graph,
              'threshold': runtime.threshold if threshold is None else float(threshold),
              'escalation_rate': float(escalated.mean()), 'accuracy': None,
              **latency_stats(times, images=len(x)), 'peak_rss_mb': peak_rss_mb()}
    if labels is not None:
        result['accuracy'] = float((preds == labels).mean())
    result['predictions'], result['escalated'] = preds, escalated
    return result


# ---------------------------------------------------------------------------------------------------------
# input data: .npz or an image folder, preprocessed as the manifest says
# ---------------------------------------------------------------------------------------------------------
NPZ_KEYS = (('x_test', 'y_test'), ('x', 'y'), ('images', 'labels'))


def preprocess(pixels: np.ndarray, manifest: dict) -> np.ndarray:
    """Raw pixels (N, H, W, 3) or (N, 3, H, W), 0..255 -> the model's float32 NCHW input."""
    spec = manifest.get('preprocess')
    if not spec:
        raise BundleError('This bundle\'s manifest has no "preprocess" section, so raw pixels cannot be '
                          'normalised; pass float arrays that are already the model input, or export again '
                          'with `nni-biglittle export` from a run.')
    x = np.asarray(pixels)
    if x.ndim == 3:  # grey images
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise BundleError(f'images must be (N, H, W, 3) or (N, 3, H, W); got shape {tuple(x.shape)}.')
    if x.shape[-1] != 3:  # NCHW -> NHWC
        x = x.transpose(0, 2, 3, 1)
    size = int(manifest['input']['shape'][-1])
    if x.shape[1:3] != (size, size):
        x = np.stack([resize_bilinear(image, size) for image in x.astype(np.float32)])
    x = x.astype(np.float32) * np.float32(spec.get('scale', 1.0 / 255.0))
    x = (x - np.asarray(spec['mean'], np.float32)) / np.asarray(spec['std'], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) -> (size, size, C), bilinear with half-pixel centres (PyTorch's align_corners=False; no
    antialiasing, so shrinking large images differs slightly from torchvision's Resize)."""
    h, w = image.shape[:2]

    def axis(n_in):
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low).astype(np.float32)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def load_npz(path: Path, manifest: dict, limit=None):
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # BadZipFile, OSError, ValueError
        raise BundleError(f'Cannot read {path} as .npz ({err}).') from None
    with data:
        keys = next((k for k in NPZ_KEYS if k[0] in data.files), None)
        if keys is None:
            raise BundleError(f'{path} has none of the image arrays {[k[0] for k in NPZ_KEYS]} (found {data.files}).')
        x = data[keys[0]][:limit]
        y = data[keys[1]][:limit].reshape(-1).astype(np.int64) if keys[1] in data.files else None
    if y is not None and len(y) != len(x):
        raise BundleError(f'{path}: {len(x)} images but {len(y)} labels.')
    if np.issubdtype(x.dtype, np.floating):
        expected = tuple(manifest['input']['shape'][1:])
        if tuple(x.shape[1:]) != expected:
            raise BundleError(f'{path}: float arrays are taken as ready model input and must be (N, '
                              f'{", ".join(map(str, expected))}); got {tuple(x.shape)}. Pass raw uint8 pixels to '
                              'have them preprocessed.')
        return np.ascontiguousarray(x, dtype=np.float32), y
    return preprocess(x, manifest), y


def read_png(path) -> np.ndarray:
    """A non-interlaced PNG (8 or 16 bit; grey, RGB, palette, with or without alpha) as uint8 (H, W, 3)."""
    data = Path(path).read_bytes()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise BundleError(f'{path} is not a PNG file.')
    pos, idat, palette, header = 8, [], None, None
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b'IHDR':
            header = struct.unpack('>IIBBBBB', chunk)
        elif kind == b'PLTE':
            palette = np.frombuffer(chunk, np.uint8).reshape(-1, 3)
        elif kind == b'IDAT':
            idat.append(chunk)
        elif kind == b'IEND':
            break
    if header is None:
        raise BundleError(f'{path}: PNG without a header.')
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None or depth not in (1, 2, 4, 8, 16) or interlace:
        raise BundleError(f'{path}: this reader handles non-interlaced PNGs; install Pillow for interlaced ones.')
    bpp = max(1, channels * depth // 8)  # the filters' byte distance
    stride = (width * channels * depth + 7) // 8
    raw = np.frombuffer(zlib.decompress(b''.join(idat)), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.int32)
    for row in range(height):
        kind, line = raw[row, 0], raw[row, 1:].astype(np.int32)
        if kind == 0:
            current = line
        elif kind == 2:
            current = (line + previous) & 0xFF
        elif kind == 3 or kind == 1 or kind == 4:  # these depend on the reconstructed left neighbour
            current = np.zeros(stride, np.int32)
            for i in range(stride):
                left = current[i - bpp] if i >= bpp else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + previous[i]) // 2
                else:
                    up_left = previous[i - bpp] if i >= bpp else 0
                    p = left + previous[i] - up_left
                    pa, pb, pc = abs(p - left), abs(p - previous[i]), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (previous[i] if pb <= pc else up_left)
                current[i] = (line[i] + predictor) & 0xFF
        else:
            raise BundleError(f'{path}: corrupt PNG (filter type {kind}).')
        out[row] = current
        previous = current
    if depth < 8:  # packed samples, most significant bits first
        bits = np.unpackbits(out, axis=1)[:, :width * channels * depth].reshape(height, width * channels, depth)
        out = (bits * (1 << np.arange(depth - 1, -1, -1))).sum(-1).astype(np.uint8)
        if color == 0:
            out = (out.astype(np.int32) * 255 // ((1 << depth) - 1)).astype(np.uint8)
    pixels = out.reshape(height, width, -1)
    if depth == 16:
        pixels = pixels[..., 0::2]  # the high byte of each big-endian sample
    if color == 3:
        if palette is None:
            raise BundleError(f'{path}: palette PNG without a palette.')
        return palette[pixels[..., 0]]
    if channels in (1, 2):
        return np.repeat(pixels[..., :1], 3, axis=-1)
    return pixels[..., :3]


def read_pnm(path) -> np.ndarray:
    """A binary PPM (P6) or PGM (P5), maxval < 256, as uint8 (H, W, 3)."""
    data = Path(path).read_bytes()
    tokens, pos = [], 0
    while len(tokens) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b'#':
            pos = data.index(b'\n', pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        tokens.append(data[pos:end])
        pos = end
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic not in (b'P5', b'P6') or maxval > 255:
        raise BundleError(f'{path}: only binary 8-bit PPM (P6) / PGM (P5) are read without Pillow.')
    channels = 3 if magic == b'P6' else 1
    pixels = np.frombuffer(data[pos + 1:pos + 1 + width * height * channels], np.uint8).reshape(height, width,
                                                                                               channels)
    return np.repeat(pixels, 3, axis=-1) if channels == 1 else pixels


def read_image(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == '.npy':
        image = np.load(path, allow_pickle=False)
        return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
    try:
        if suffix == '.png':
            return read_png(path)
        if suffix in ('.ppm', '.pgm', '.pnm'):
            return read_pnm(path)
    except BundleError:
        pass  # let Pillow try what the small readers cannot
    try:
        from PIL import Image
    except ImportError:
        raise BundleError(f'{path}: reading {suffix} images needs Pillow (pip install pillow), or convert them '
                          'to PNG.') from None
    with Image.open(path) as image:
        return np.asarray(image.convert('RGB'))


def load_folder(folder: Path, manifest: dict, limit=None):
    """Images of ``folder``: labelled by subfolder (class names from the manifest when they match, else the
    sorted subfolder names), or unlabelled when the images lie in the folder itself."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes:
        known = manifest.get('class_names') or []
        index = {name: i for i, name in enumerate(known)} if set(classes) <= set(known) else \
            {name: i for i, name in enumerate(classes)}
        files = [(p, index[c]) for c in classes for p in sorted((folder / c).iterdir())
                 if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [(p, None) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BundleError(f'{folder} holds no images ({", ".join(IMAGE_SUFFIXES)}), directly or in class subfolders.')
    files = files[:limit]
    size = int(manifest['input']['shape'][-1])
    images = []
    for path, _ in files:
        image = read_image(path)
        images.append(image if image.shape[:2] == (size, size) else resize_bilinear(image.astype(np.float32), size))
    labels = None if files[0][1] is None else np.asarray([label for _, label in files], dtype=np.int64)
    return preprocess(np.stack(images), manifest), labels


def load_data(path, manifest: dict, limit=None):
    """``(x, labels or None)``: the model input (float32 NCHW) of an .npz or an image folder."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f'--data {path}: no such file or folder.')
    if path.is_dir():
        return load_folder(path, manifest, limit)
    return load_npz(path, manifest, limit)


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------
def format_bench(result: dict) -> str:
    acc = 'n/a (no labels)' if result['accuracy'] is None else f'{result["accuracy"]:.4f}'
    peak = 'n/a' if result['peak_rss_mb'] is None else f'{result["peak_rss_mb"]:.1f} MB'
    return '\n'.join([
        f'images {result["images"]}, batch {result["batch_size"]}, graph {result["graph"]}, '
        f'threshold {result["threshold"]:.4g}',
        f'accuracy {acc}, escalation rate {result["escalation_rate"]:.3f}',
        f'latency per call (ms): p50 {result["p50_ms"]:.3f}  p90 {result["p90_ms"]:.3f}  p99 {result["p99_ms"]:.3f}  '
        f'mean {result["mean_ms"]:.3f}  (min {result["min_ms"]:.3f}, max {result["max_ms"]:.3f})',
        f'throughput {result["throughput_per_s"]:.1f} images/s, peak RSS {peak}',
    ])


def build_parser():
    parser = argparse.ArgumentParser(description='Run an nni_bigLittle bundle (little.onnx + big_tail.onnx + '
                                     'manifest.json) with ONNX Runtime.')
    parser.add_argument('--bundle', default=os.path.dirname(os.path.abspath(__file__)),
                        help='the bundle folder (default: the folder of this script)')
    parser.add_argument('--data', required=True, help='an .npz or an image folder (see the module docstring)')
    parser.add_argument('--bench', action='store_true',
                        help='print accuracy, escalation rate, latency percentiles, throughput and peak memory')
    parser.add_argument('--graph', choices=('split', 'dynamic'), default='split',
                        help='split: little.onnx then big_tail.onnx on the escalated rows (any batch); dynamic: '
                             'dynamic.onnx with its If node (batch 1)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='ONNX Runtime intra-op threads (default: its own)')
    parser.add_argument('--threshold', type=float, default=None,
                        help='router threshold (default: the calibrated one in the manifest; 0 never escalates)')
    parser.add_argument('--limit', type=int, default=None, help='use the first N images only')
    parser.add_argument('--warmup', type=int, default=10, help='untimed calls first (default 10)')
    parser.add_argument('--predictions', default=None, help='write index,prediction,escalated[,label] to this CSV')
    parser.add_argument('--json', default=None, help='write the results and the environment to this JSON file')
    return parser


MEMORY_ROWS = ('split', 'dynamic', 'never', 'little', 'big')


def memory_probe(bundle, row, data, threads=None, limit=None, batch_size=1):
    """Peak RSS of a fresh process that runs one row of ``nni-biglittle bench`` over the data: ``row`` is one of
    MEMORY_ROWS or the path of an ONNX model. Returns the peak before the sessions open (interpreter, numpy,
    onnxruntime, data) and after running every image, in MB."""
    import onnxruntime as ort
    manifest = read_manifest(bundle)
    x, _ = load_data(data, manifest, limit)
    try:  # reset the high-water mark to the current RSS, so that loading the data's peak does not count (Linux)
        with open('/proc/self/clear_refs', 'w') as fh:
            fh.write('5')
    except OSError:
        pass
    before = peak_rss_mb()
    if row in ('split', 'dynamic', 'never'):
        runtime = BigLittleRuntime(bundle, threads=threads)
        call = {'split': runtime.predict, 'never': lambda b: runtime.predict(b, NEVER),
                'dynamic': runtime.predict_dynamic}[row]
    else:
        path = Path(bundle) / 'little.onnx' if row == 'little' else Path(bundle) / 'big.onnx' if row == 'big' \
            else Path(row)
        session = ort.InferenceSession(str(path), session_options(threads), providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        call = lambda b: session.run(None, {name: b})  # noqa: E731
    for start in range(0, len(x), batch_size):
        call(x[start:start + batch_size])
    return {'row': str(row), 'before_sessions_mb': before, 'peak_rss_mb': peak_rss_mb()}


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == '--memory-probe':  # used by `nni-biglittle bench`, one fresh process per row
        probe = argparse.ArgumentParser()
        for flag in ('--memory-probe', '--bundle', '--data'):
            probe.add_argument(flag, required=True)
        for flag in ('--threads', '--limit', '--batch-size'):
            probe.add_argument(flag, type=int, default=None)
        a = probe.parse_args(argv)
        print(json.dumps(memory_probe(a.bundle, a.memory_probe, a.data, a.threads, a.limit, a.batch_size or 1)))
        return 0
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise BundleError(f'--batch-size must be >= 1, got {args.batch_size}.')
        runtime = BigLittleRuntime(args.bundle, threads=args.threads)
        x, labels = load_data(args.data, runtime.manifest, args.limit)
        result = run_bench(runtime, x, labels, args.batch_size, args.threshold, args.graph,
                           warmup=args.warmup if args.bench else 0)
    except (BundleError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    preds, escalated = result.pop('predictions'), result.pop('escalated')
    result['environment'] = environment(args.threads)
    if args.bench:
        print(format_bench(result))
        env = result['environment']
        print(f'environment: {env["cpu"]} ({env["cpu_count"]} CPUs{", " + env["board"] if env["board"] else ""}), '
              f'threads {args.threads or "default"}, onnxruntime {env["onnxruntime"]}, numpy {env["numpy"]}, '
              f'python {env["python"]}')
    else:
        acc = '' if result['accuracy'] is None else f'accuracy {result["accuracy"]:.4f}, '
        print(f'{result["images"]} images: {acc}escalation rate {result["escalation_rate"]:.3f}')
    if args.predictions:
        with open(args.predictions, 'w') as fh:
            fh.write('index,prediction,escalated' + (',label' if labels is not None else '') + '\n')
            for i, (p, e) in enumerate(zip(preds, escalated)):
                fh.write(f'{i},{int(p)},{int(e)}' + (f',{int(labels[i])}' if labels is not None else '') + '\n')
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
