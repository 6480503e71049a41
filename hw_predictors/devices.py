"""Bundled device predictors fitted from public measurements, and where predictors are looked up.

Six predictors ship with the package (``hw_predictors/bundled/``), each refitted from the public data
in ``../shared/data/latency`` by :func:`rebuild_bundled` (``nni-biglittle predictor rebuild --data
../shared/data/latency``); the raw data are never copied into the package:

=========================  ========  =====================================================================
file                       metric    fitted from
=========================  ========  =====================================================================
jetson_nano_trt_fp32       latency   iCAS: 12,534 TensorRT-fp32 conv / depthwise-separable stacks (network
                                     totals), split into per-layer costs by a layer-additive fit
jetson_nano_trt_fp32       energy    same networks, GPU-rail energy per inference (mJ, calibrated here)
jetson_nano_tvm            latency   TVM TopHub per-kernel AutoTVM records (conv, dwconv)
jetson_tx2_tvm             latency   idem
raspberry_pi_3b_tvm        latency   idem (arm_cpu)
raspberry_pi_4             latency   HW-NAS-Bench FBNet space via HELP: 5,000 whole-network latencies
=========================  ========  =====================================================================

Every fit is evaluated on held-out data split *by network* (a seeded 80/20 split of networks;
TopHub has no networks, so its split is by workload shape), next to a FLOPs-only baseline
(``cost = a * MACs + b`` fitted on the same training split), then refitted on all the data for the
bundled file. The held-out metrics are stored in the file's metadata (``fit_metrics``).

:func:`load_predictor` finds a predictor by name: an explicit ``.npz`` path, then the user's
predictor folder (``$NNI_BIGLITTLE_PREDICTORS``, default ``~/.cache/nni_bigLittle/predictors``),
then the bundled folder. Latency predictors are ``<name>.npz``, energy predictors
``<name>.energy.npz``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import (
    BASIS_NAMES, RANGE_FEATURES, ForestModel, KernelLatencyPredictor, LinearComponentModel, PredictorError,
    component_basis, regression_metrics,
)

__all__ = [
    'BUNDLED_DIR', 'USER_DIR_ENV', 'LatencyDataError', 'DeviceSpec', 'FitReport', 'DEVICES', 'rebuild_bundled',
    'build_predictor', 'format_fit_report', 'write_fit_report', 'list_bundled', 'load_predictor',
    'predictor_filename', 'user_predictor_dir', 'predict_totals', 'main',
]

BUNDLED_DIR = Path(__file__).resolve().with_name('bundled')
USER_DIR_ENV = 'NNI_BIGLITTLE_PREDICTORS'
REPORT_NAME = 'FIT_REPORT.md'
REBUILD_COMMAND = 'nni-biglittle predictor rebuild --data ../shared/data/latency'
SEED = 0                # split seed and forest seed: a rebuild reproduces the bundled files exactly
TEST_FRACTION = 0.2     # share of networks (or TopHub shapes) held out
METRICS = ('latency', 'energy')

ICAS_DIR = 'icas_jetson_nano_convnets'
TOPHUB_DIR = 'tvm_tophub_jetson_rpi'
FBNET_DIR = 'help_fbnet_rpi4'


class LatencyDataError(PredictorError):
    """A measurement file is missing or malformed (the message names the file and what is expected).

    Called ``DataError`` before 0.2, a name now kept by :class:`nni_bigLittle.errors.DataError` (datasets)."""


def __getattr__(name: str):
    if name == 'DataError':  # the 0.1 name, kept for one release
        import warnings
        warnings.warn('nni_bigLittle.hw_predictors.devices.DataError is now LatencyDataError (removed in 0.3).',
                      DeprecationWarning, stacklevel=2)
        return LatencyDataError
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# ============================================================================================ records


@dataclass
class FitReport:
    """The outcome of fitting one bundled predictor."""

    name: str
    metric: str
    unit: str
    n: int                                  # measurements used (networks or kernels)
    heldout: dict[str, float]               # our predictor on the held-out split
    baseline: dict[str, float]              # FLOPs-only linear baseline on the same split
    notes: list[str] = field(default_factory=list)
    path: Path | None = None
    split: str = ''
    n_networks: int = 0
    device: str = ''
    extra: dict[str, Any] = field(default_factory=dict)   # out-of-distribution checks, model selection
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return _stem(self.name, self.metric)


@dataclass(frozen=True)
class DeviceSpec:
    """One bundled predictor: its name, metric and the function that fits it from the data folder."""

    name: str
    metric: str
    builder: Callable[['_Context'], tuple[KernelLatencyPredictor, FitReport]]
    description: str
    device: str
    data_folder: str

    @property
    def key(self) -> str:
        return _stem(self.name, self.metric)

    @property
    def filename(self) -> str:
        return predictor_filename(self.name, self.metric)


def _stem(name: str, metric: str) -> str:
    return name if metric == 'latency' else f'{name}.{metric}'


def predictor_filename(name: str, metric: str = 'latency') -> str:
    """``<name>.npz`` for latency, ``<name>.<metric>.npz`` otherwise (``<name>.energy.npz``)."""
    if metric not in METRICS:
        raise PredictorError(f'Unknown metric {metric!r}; use one of {list(METRICS)}.')
    return _stem(name, metric) + '.npz'


# ============================================================================================ kernels


def _conv(name: str, hw: int, cin: int, cout: int, k: int, *, out_hw: int | None = None, stride: int = 1,
          groups: int = 1, act: str = 'relu', bias: bool = False) -> Kernel:
    """A conv(+bn)(+act) kernel with the features kernels.py computes (MACs, params, bytes at fp32)."""
    if out_hw is None:
        out_hw = (hw + 2 * (k // 2) - k) // stride + 1
    flops = out_hw * out_hw * cout * (cin // groups) * k * k
    params = cout * (cin // groups) * k * k + (cout if bias else 0)
    depthwise = groups > 1 and groups == cin and cout % cin == 0
    return Kernel('dwconv-bn-act' if depthwise else 'conv-bn-act', name, hw=int(hw), cin=int(cin), cout=int(cout),
                  kernel=int(k), stride=int(stride), groups=int(groups), act=act, out_hw=int(out_hw),
                  flops=float(flops), params=float(params), bytes_in=float(hw * hw * cin * 4),
                  bytes_out=float(out_hw * out_hw * cout * 4))


def _fc(name: str, cin: int, cout: int, bias: bool = True) -> Kernel:
    return Kernel('fc', name, hw=1, cin=int(cin), cout=int(cout), out_hw=1, flops=float(cin * cout),
                  params=float(cin * cout + (cout if bias else 0)), bytes_in=float(cin * 4), bytes_out=float(cout * 4))


def _add(name: str, hw: int, channels: int) -> Kernel:
    n = hw * hw * channels
    return Kernel('add', name, hw=hw, cin=channels, cout=channels, out_hw=hw, flops=float(n),
                  bytes_in=float(2 * n * 4), bytes_out=float(n * 4))


def _global_pool(name: str, hw: int, channels: int) -> Kernel:
    return Kernel('global-pool', name, hw=hw, cin=channels, cout=channels, out_hw=1, flops=float(hw * hw * channels),
                  bytes_in=float(hw * hw * channels * 4), bytes_out=float(channels * 4))


def _mbconv(name: str, hw: int, cin: int, cout: int, k: int, expansion: int, stride: int, groups: int = 1
            ) -> Kernel:
    """HW-NAS-Bench FBNet block: 1x1 (groups) + BN + ReLU [+ shuffle] -> dw kxk (stride) + BN + ReLU
    -> 1x1 (groups) + BN [+ residual add when Cin == Cout and stride 1]; convs without bias."""
    mid = cin * expansion
    expand = _conv(f'{name}.expand', hw, cin, mid, 1, groups=groups)
    dw = _conv(f'{name}.dw', hw, mid, mid, k, stride=stride, groups=mid)
    project = _conv(f'{name}.project', dw.out_hw, mid, cout, 1, groups=groups, act='none')
    parts = [expand, dw, project]
    residual = cin == cout and stride == 1
    if residual:
        parts.append(_add(f'{name}.add', dw.out_hw, cout))
    return Kernel('mbconv', name, hw=hw, cin=cin, cout=cout, kernel=k, stride=stride, groups=groups,
                  expansion=float(expansion), act='relu', residual=residual, out_hw=dw.out_hw,
                  flops=sum(p.flops for p in parts), params=sum(p.params for p in parts), bytes_in=expand.bytes_in,
                  bytes_out=parts[-1].bytes_out, parts=tuple(parts))


# ============================================================================================ data files


def _read_csv(path: Path, columns: Sequence[str], what: str):
    """Read a CSV and check its columns; errors name the file and what was expected."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise LatencyDataError(f'{path} not found: expected {what}. Pass the latency data folder that holds '
                        f'{ICAS_DIR}/, {TOPHUB_DIR}/ and {FBNET_DIR}/ (e.g. --data ../shared/data/latency).')
    try:
        frame = pd.read_csv(path, low_memory=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a malformed file
        raise LatencyDataError(f'{path} cannot be read as CSV ({exc}); expected {what}.') from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LatencyDataError(f'{path} lacks column(s) {missing}; expected {what} with columns {list(columns)}.')
    if frame.empty:
        raise LatencyDataError(f'{path} has no rows; expected {what}.')
    return frame


def _numeric(frame, columns: Sequence[str], path: Path, allow_nan: Sequence[str] = ()):
    import pandas as pd
    for c in columns:
        values = pd.to_numeric(frame[c], errors='coerce')
        bad = values.isna() & (frame[c].notna() if c in allow_nan else True)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise LatencyDataError(f'{path}: column {c!r} must be numeric; row {row} holds {frame[c].iloc[row]!r}.')
        frame[c] = values
    return frame


# --------------------------------------------------------------------------------- iCAS (Jetson Nano, TRT)

ICAS_COLUMNS = ('subset', 'model_name', 'layers_json', 'total_params', 'latency_ms', 'latency_ms_60s_power_run',
                'gpu_energy_per_inference')
ICAS_RAW_COLUMNS = ('Model Name', 'Avrg_POM_5V_GPU', 'Total_POM_5V_GPU', 'num_inferences')


@dataclass
class NetworkData:
    """Whole-network measurements: kernels per network and one measured total each."""

    names: list[str]
    networks: list[list[Kernel]]
    targets: np.ndarray
    unit: str
    source_files: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def icas_network(layers: Sequence[dict[str, Any]]) -> list[Kernel]:
    """Kernels of one iCAS model from its ``layers_json``: a conv layer is conv + ReLU (bias); a
    depthwise-separable layer is a depthwise kxk (groups = Cin, bias, no activation) then a pointwise
    1x1 + ReLU (bias); the head is Flatten + Linear(F*H*W -> 10)."""
    kernels: list[Kernel] = []
    for i, layer in enumerate(layers):
        hw, cin, cout, k, out_hw = (int(layer[key]) for key in ('in_hw', 'cin', 'cout', 'k', 'out_hw'))
        if layer['type'] == 'conv':
            kernels.append(_conv(f'layer{i}', hw, cin, cout, k, out_hw=out_hw, bias=True))
        elif layer['type'] == 'dwsep':
            kernels.append(_conv(f'layer{i}.dw', hw, cin, cin, k, out_hw=out_hw, groups=cin, act='none', bias=True))
            kernels.append(_conv(f'layer{i}.pw', out_hw, cin, cout, 1, out_hw=out_hw, bias=True))
        else:
            raise ValueError(f'unknown layer type {layer["type"]!r} (expected conv or dwsep)')
    last = layers[-1]
    kernels.append(_fc('fc', int(last['out_hw']) ** 2 * int(last['cout']), 10))
    return kernels


def _icas_power(root: Path, subsets: Iterable[str]):
    """Average GPU-rail power (mW) per (subset, model) from the per-subset raw CSVs next to the tidy file."""
    import pandas as pd
    frames = []
    for subset in sorted(set(subsets)):
        folder = root / subset
        candidates = sorted(p for p in folder.glob('*.csv')) if folder.is_dir() else []
        if not candidates:
            raise LatencyDataError(f'{folder}/*.csv not found: the energy target needs the per-subset iCAS CSV '
                            f'(columns {list(ICAS_RAW_COLUMNS)}) beside {ICAS_DIR}/icas_jetson_nano_convnets_tidy.csv.')
        raw = _read_csv(candidates[0], ICAS_RAW_COLUMNS, f'the iCAS {subset} power summary')
        raw = _numeric(raw.copy(), ICAS_RAW_COLUMNS[1:], candidates[0], allow_nan=ICAS_RAW_COLUMNS[1:])
        raw = raw.assign(subset=subset)[['subset', 'Model Name', 'Avrg_POM_5V_GPU', 'Total_POM_5V_GPU',
                                         'num_inferences']]
        frames.append(raw)
    return pd.concat(frames, ignore_index=True).drop_duplicates(['subset', 'Model Name'])


@functools.lru_cache(maxsize=4)
def load_icas(data_root: str, metric: str = 'latency') -> NetworkData:
    """The measured iCAS models (rows without a latency were never measured and are skipped).

    ``latency``: ``latency_ms`` (mean of 100 TensorRT runs, H2D/D2H copies included).
    ``energy``: GPU-rail energy per inference in mJ = average ``POM_5V_GPU`` power of the 60-s power run
    (mW, from the per-subset CSV) x that run's mean latency (ms) / 1000. The tidy file's
    ``gpu_energy_per_inference`` is Σ(power samples, mW) / inferences, i.e. mW x (sampling interval
    ≈ 1.01 s) per inference; the calibrated value is that times (run time / number of samples).
    """
    root = Path(data_root) / ICAS_DIR
    path = root / 'icas_jetson_nano_convnets_tidy.csv'
    frame = _read_csv(path, ICAS_COLUMNS, 'the iCAS tidy table (one row per model with layers_json and latency_ms)')
    frame = _numeric(frame.copy(), ('total_params', 'latency_ms', 'latency_ms_60s_power_run',
                                    'gpu_energy_per_inference'), path,
                     allow_nan=('latency_ms', 'latency_ms_60s_power_run', 'gpu_energy_per_inference'))
    frame = frame[frame['latency_ms'].notna()].reset_index(drop=True)
    if frame.empty:
        raise LatencyDataError(f'{path} has no measured rows (latency_ms is empty everywhere).')
    sources = [f'{ICAS_DIR}/icas_jetson_nano_convnets_tidy.csv']
    info: dict[str, Any] = {}
    if metric == 'latency':
        targets = frame['latency_ms'].to_numpy(float)
        unit = 'ms'
    elif metric == 'energy':
        power = _icas_power(root, frame['subset'])
        merged = frame.merge(power, left_on=['subset', 'model_name'], right_on=['subset', 'Model Name'], how='left')
        if merged['Avrg_POM_5V_GPU'].isna().any():
            miss = merged.loc[merged['Avrg_POM_5V_GPU'].isna(), ['subset', 'model_name']].iloc[0].tolist()
            raise LatencyDataError(f'{root}/{miss[0]}/*.csv has no power row for model {miss[1]!r}.')
        targets = (merged['Avrg_POM_5V_GPU'] * merged['latency_ms_60s_power_run'] / 1000.0).to_numpy(float)
        unit = 'mJ'
        samples = (merged['Total_POM_5V_GPU'] / merged['Avrg_POM_5V_GPU']).to_numpy(float)
        info = {'median_ratio_to_tidy': float(np.median(targets / merged['gpu_energy_per_inference'].to_numpy(float))),
                'median_power_samples': float(np.median(samples)),
                'median_cpu_to_gpu': float(np.median(frame['cpu_energy_per_inference'] /
                                                     frame['gpu_energy_per_inference']))
                if 'cpu_energy_per_inference' in frame else float('nan')}
        sources += [f'{ICAS_DIR}/{s}/*.csv' for s in sorted(frame['subset'].unique())]
    else:
        raise PredictorError(f'Unknown metric {metric!r}; use one of {list(METRICS)}.')
    if not np.all(np.isfinite(targets)) or np.any(targets <= 0):
        raise LatencyDataError(f'{path}: the {metric} targets must be positive and finite.')
    networks, names = [], []
    for row in frame.itertuples(index=False):
        try:
            layers = json.loads(row.layers_json)
            kernels = icas_network(layers)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise LatencyDataError(f'{path}: model {row.model_name!r} has a malformed layers_json ({exc}); expected a '
                            'list of {type: conv|dwsep, in_hw, cin, cout, k, pad, out_hw}.') from exc
        if abs(sum(k.params for k in kernels) - float(row.total_params)) > 0.5:
            raise LatencyDataError(f'{path}: model {row.model_name!r}: the layers_json rebuild has '
                            f'{sum(k.params for k in kernels):.0f} parameters, total_params says {row.total_params}.')
        networks.append(kernels)
        names.append(str(row.model_name))
    return NetworkData(names, networks, targets, unit, sources, info)


# iCAS real-world networks, rebuilt from torchvision / timm for an out-of-distribution check.
REAL_MODELS = {
    'VGG16': ('torchvision', 'vgg16'), 'VGG19': ('torchvision', 'vgg19'),
    'Shufflenet_v2': ('torchvision', 'shufflenet_v2_x1_0'), 'ResNet50': ('torchvision', 'resnet50'),
    'MobileNetV2': ('torchvision', 'mobilenet_v2'), 'Xception': ('timm', 'legacy_xception'),
    'EfficientNet_v1': ('torchvision', 'efficientnet_b4'), 'EfficientNet_v2': ('torchvision', 'efficientnet_v2_m'),
}
REAL_COLUMNS = ('Model Name', 'Total Parameters', 'Input Size', 'average_latency(ms)', 'Avrg_POM_5V_GPU',
                'Avrg_POM_5V_IN', 'Total_POM_5V_GPU')


@functools.lru_cache(maxsize=2)
def _icas_real_models(data_root: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The iCAS real networks we can rebuild (same parameter count), with kernels and measured targets."""
    notes = []
    path = Path(data_root) / ICAS_DIR / 'real_data' / 'real_models.csv'
    frame = _read_csv(path, REAL_COLUMNS, 'the iCAS real-network table')
    frame = _numeric(frame.copy(), REAL_COLUMNS[1:], path)
    try:
        import timm
        import torchvision
    except ImportError as exc:  # pragma: no cover - both are install requirements
        return [], [f'real-network check skipped: {exc}']
    from nni_bigLittle.hw_predictors.kernels import detect_kernels
    rows = []
    for rec in frame.to_dict('records'):
        name = rec['Model Name']
        if name not in REAL_MODELS:
            notes.append(f'{name}: not rebuilt (no torchvision/timm definition), left out of the check')
            continue
        lib, arch = REAL_MODELS[name]
        model = (torchvision.models.get_model(arch) if lib == 'torchvision' else timm.create_model(arch)).eval()
        params = sum(p.numel() for p in model.parameters())
        if params != int(rec['Total Parameters']):
            notes.append(f'{name}: {lib} {arch} has {params} parameters, the table {int(rec["Total Parameters"])}; '
                         'left out')
            continue
        size = int(rec['Input Size'])
        kernels = detect_kernels(model, 'torch', (1, 3, size, size))
        # Power columns: in some rows (EfficientNet) the Avrg_* columns are shifted by two places; the GPU
        # average is the value whose ratio to Total_POM_5V_GPU is a whole number of samples.
        power = None
        for column in ('Avrg_POM_5V_GPU', 'Avrg_POM_5V_IN'):
            samples = rec['Total_POM_5V_GPU'] / rec[column] if rec[column] > 0 else 0.0
            if 10 <= samples <= 150 and abs(samples - round(samples)) < 0.005:
                power = rec[column]
                if column != 'Avrg_POM_5V_GPU':
                    notes.append(f'{name}: real_models.csv power columns are shifted; GPU power read from the '
                                 f'column labelled {column} ({samples:.1f} samples)')
                break
        rows.append({'name': name, 'model': f'{lib}:{arch}', 'kernels': kernels,
                     'latency': float(rec['average_latency(ms)']),
                     'energy': None if power is None else float(power * rec['average_latency(ms)'] / 1000.0)})
    return rows, notes


# --------------------------------------------------------------------------------- TopHub (TVM, per kernel)

TOPHUB_FILE = 'tophub_jetson_rpi_kernels.csv'
TOPHUB_COLUMNS = ('device', 'op_type', 'batch', 'input_h', 'input_w', 'cin', 'cout', 'kernel_h', 'kernel_w', 'stride',
                  'dilation', 'groups', 'output_h', 'output_w', 'macs', 'latency_ms', 'is_best_template_for_shape')


@dataclass
class KernelData:
    kernels: list[Kernel]
    costs: np.ndarray
    dropped: dict[str, int]
    source_files: list[str]


@functools.lru_cache(maxsize=8)
def load_tophub(data_root: str, device: str) -> KernelData:
    """The fastest TopHub record per workload shape of ``device`` as conv / dwconv kernels (act none,
    no bias). Non-square kernels or inputs (Inception 1x7 / 7x1) and dilated convs are dropped."""
    path = Path(data_root) / TOPHUB_DIR / TOPHUB_FILE
    frame = _read_csv(path, TOPHUB_COLUMNS, 'the TopHub per-kernel table')
    frame = _numeric(frame.copy(), TOPHUB_COLUMNS[2:], path)
    rows = frame[(frame['device'] == device) & (frame['is_best_template_for_shape'] == 1)]
    if rows.empty:
        raise LatencyDataError(f'{path} has no best-template rows for device {device!r} '
                        f'(devices present: {sorted(frame["device"].unique())}).')
    keep = (rows['kernel_h'] == rows['kernel_w']) & (rows['input_h'] == rows['input_w']) & \
        (rows['output_h'] == rows['output_w']) & (rows['dilation'] == 1) & (rows['batch'] == 1)
    dropped = {'non-square or dilated': int((~keep).sum())}
    rows = rows[keep]
    kernels, costs = [], []
    for r in rows.itertuples(index=False):
        op = r.op_type
        if op not in ('conv', 'dwconv'):
            raise LatencyDataError(f'{path}: op_type {op!r} is neither conv nor dwconv.')
        k = _conv(f'{device}.{op}', int(r.input_h), int(r.cin), int(r.cout), int(r.kernel_h), out_hw=int(r.output_h),
                  stride=int(r.stride), groups=int(r.groups), act='none')
        if abs(k.flops - float(r.macs)) > 0.5:
            raise LatencyDataError(f'{path}: row {op} {r.input_h}x{r.input_h}x{r.cin}->{r.cout} k{r.kernel_h}: macs '
                            f'{r.macs} disagree with N*Cout*OH*OW*Cin/groups*KH*KW = {k.flops:.0f}.')
        if (op == 'dwconv') != (k.type == 'dwconv-bn-act'):
            raise LatencyDataError(f'{path}: row {op} with groups {r.groups} and cin {r.cin} is not a {op}.')
        if not r.latency_ms > 0:
            raise LatencyDataError(f'{path}: latency_ms must be positive (row {op} {r.input_h}x{r.cin}->{r.cout}).')
        kernels.append(k)
        costs.append(float(r.latency_ms))
    return KernelData(kernels, np.array(costs), dropped, [f'{TOPHUB_DIR}/{TOPHUB_FILE}'])


# --------------------------------------------------------------------------------- FBNet / Raspberry Pi 4

FBNET_FILE = 'help_fbnet_raspi4_archs.csv'
FBNET_OPS = ('k3_e1', 'k3_e1_g2', 'k3_e3', 'k3_e6', 'k5_e1', 'k5_e1_g2', 'k5_e3', 'k5_e6', 'skip')
# HW-NAS-Bench FBNet macro-architecture for CIFAR (hw_nas_bench_api/fbnet_models/model_infer.py):
# stem 3x3 conv 3->16 stride 1 + BN + ReLU; 22 searchable layers in stages (layers, channels, first stride);
# header 1x1 conv 352->1504 + BN + ReLU; global average pool; Linear(1504 -> 100) for CIFAR-100.
FBNET_STAGES = ((1, 16, 1), (4, 24, 1), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1))
FBNET_STEM, FBNET_HEADER, FBNET_CLASSES, FBNET_INPUT = 16, 1504, 100, 32


def fbnet_layer_shapes() -> list[tuple[int, int, int, int]]:
    """(input hw, cin, cout, stride) of the 22 searchable layers."""
    shapes, hw, cin = [], FBNET_INPUT, FBNET_STEM
    for n, cout, stride in FBNET_STAGES:
        for j in range(n):
            s = stride if j == 0 else 1
            shapes.append((hw, cin, cout, s))
            hw, cin = (hw - 1) // s + 1, cout
    return shapes


def fbnet_layer(name: str, op: str, hw: int, cin: int, cout: int, stride: int) -> list[Kernel]:
    """Kernels of one searchable layer: an MBConv block, or skip (identity = nothing; 1x1 conv + BN + ReLU
    where the layer changes channels or stride)."""
    if op == 'skip':
        return [] if stride == 1 and cin == cout else [_conv(f'{name}.skip', hw, cin, cout, 1, stride=stride)]
    if op not in FBNET_OPS:
        raise ValueError(f'unknown FBNet op {op!r}; expected one of {list(FBNET_OPS)}')
    k, e = int(op[1]), int(op.split('_')[1][1:])
    return [_mbconv(name, hw, cin, cout, k, e, stride, groups=2 if op.endswith('_g2') else 1)]


def fbnet_network(ops: Sequence[str]) -> list[Kernel]:
    kernels = [_conv('stem', FBNET_INPUT, 3, FBNET_STEM, 3)]
    shapes = fbnet_layer_shapes()
    for i, (op, (hw, cin, cout, s)) in enumerate(zip(ops, shapes)):
        kernels += fbnet_layer(f'layer{i}', op, hw, cin, cout, s)
    hw = (shapes[-1][0] - 1) // shapes[-1][3] + 1
    kernels += [_conv('header', hw, shapes[-1][2], FBNET_HEADER, 1), _global_pool('avgpool', hw, FBNET_HEADER),
                _fc('fc', FBNET_HEADER, FBNET_CLASSES)]
    return kernels


@functools.lru_cache(maxsize=2)
def load_fbnet(data_root: str) -> tuple[NetworkData, np.ndarray]:
    """The 5,000 FBNet networks (kernels, Raspberry Pi 4 latency in ms) and their op table (n x 22)."""
    path = Path(data_root) / FBNET_DIR / FBNET_FILE
    columns = [f'layer{i}_op' for i in range(22)]
    frame = _read_csv(path, ['arch_id', *columns, 'latency_ms'], 'the HELP/HW-NAS-Bench FBNet architecture table')
    frame = _numeric(frame.copy(), ('latency_ms',), path)
    ops = frame[columns].astype(str).to_numpy()
    bad = ~np.isin(ops, FBNET_OPS)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise LatencyDataError(f'{path}: row {r} {columns[c]} = {ops[r, c]!r}; expected one of {list(FBNET_OPS)}.')
    targets = frame['latency_ms'].to_numpy(float)
    if np.any(targets <= 0):
        raise LatencyDataError(f'{path}: latency_ms must be positive.')
    networks = [fbnet_network(row) for row in ops]
    return NetworkData([str(a) for a in frame['arch_id']], networks, targets, 'ms', [f'{FBNET_DIR}/{FBNET_FILE}']), ops


# ============================================================================================ fitting helpers


def _split(n: int, seed: int = SEED, fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` items: (train indices, test indices), both sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(fraction * n)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _forest(n_estimators: int = 40, max_depth: int | None = 14, min_samples_leaf: int = 3,
            max_features: float | None = 0.6, seed: int = SEED):
    from sklearn.ensemble import RandomForestRegressor
    return RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                 max_features=max_features, random_state=seed, n_jobs=1)


def _leaf_routes(predictor: KernelLatencyPredictor, kernel: Kernel, out: list[tuple[str, Kernel]]) -> None:
    route = predictor.routes.get(kernel.type)
    if route is None and kernel.parts:
        route = 'parts'
    if route == 'parts':
        for part in kernel.parts:
            _leaf_routes(predictor, part, out)
    elif route is not None:
        out.append((route, kernel))


def predict_totals(predictor: KernelLatencyPredictor, networks: Sequence[Sequence[Kernel]]) -> np.ndarray:
    """``predictor.predict_kernels(net).total`` for many networks at once (kernels batched per model)."""
    per_model: dict[str, tuple[list[int], list[Kernel]]] = {}
    for i, net in enumerate(networks):
        leaves: list[tuple[str, Kernel]] = []
        for kernel in net:
            _leaf_routes(predictor, kernel, leaves)
        for route, kernel in leaves:
            idx, ks = per_model.setdefault(route, ([], []))
            idx.append(i)
            ks.append(kernel)
    totals = np.full(len(networks), predictor.overhead, dtype=float)
    for route, (idx, ks) in per_model.items():
        unique: dict[Kernel, int] = {}
        codes = [unique.setdefault(k, len(unique)) for k in ks]
        values = predictor.models[route].predict(list(unique))
        np.add.at(totals, np.array(idx), values[np.array(codes)])
    return totals


def _flops_baseline(train_macs, train_y, test_macs) -> tuple[np.ndarray, dict[str, float]]:
    """``cost = a * MACs + b`` by least squares weighted by 1 / cost (relative error, like fit_sums)."""
    x = np.asarray(train_macs, float)
    y = np.asarray(train_y, float)
    a = np.c_[x, np.ones_like(x)] / y[:, None]
    (slope, intercept), *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
    return slope * np.asarray(test_macs, float) + intercept, {'a_per_mac': float(slope), 'b': float(intercept)}


def _metrics(y_true, y_pred) -> dict[str, float]:
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in regression_metrics(y_true, y_pred).items()}


def _nnls_weighted(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``a @ x ≈ y`` weighted by 1 / y (relative error)."""
    from scipy.optimize import nnls
    w = 1.0 / np.maximum(y, 1e-12)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
    sol, _ = nnls((a / scale) * w[:, None], y * w, maxiter=50 * a.shape[1])
    return sol / scale


# --------------------------------------------------------------------------------- layer-additive fit (iCAS)


def _additive_key(k: Kernel) -> tuple:
    """MAC-rate terms of the layer-additive model: per kernel type and size, the 3-channel input layer apart."""
    if k.type == 'fc':
        return ('fc', 1, False)
    return (k.type, k.kernel, k.cin <= 4)


class LayerAdditiveFit:
    """Network total = Σ_layers (α_key · MACs + β · elements moved) + intercept; NNLS with 1/total weights.

    ``key`` is (kernel type, kernel size, 3-channel input layer): one MAC rate per key, one per-element
    rate shared by all layers (memory traffic costs the same whoever moves it; a shared rate also keeps
    the depthwise half of a depthwise-separable layer from being given zero cost, which separate rates
    allow because dw and pw always occur together) and the intercept (per-inference overhead: launch,
    copies, synchronisation). No per-layer constant: with one first layer and one fc per network it
    would be confounded with the intercept. Used only to split measured network totals into per-layer
    shares for the per-type forests.
    """

    def __init__(self, networks: Sequence[Sequence[Kernel]], totals: np.ndarray):
        self.keys = sorted({_additive_key(k) for net in networks for k in net}, key=str)
        self.index = {key: i for i, key in enumerate(self.keys)}
        a = np.array([np.sum([self._basis(k) for k in net], axis=0) for net in networks])
        sol = _nnls_weighted(np.hstack([a, np.ones((len(a), 1))]), np.asarray(totals, float))
        self.coef, self.intercept = sol[:-1], float(sol[-1])

    def _basis(self, k: Kernel) -> np.ndarray:
        v = np.zeros(len(self.keys) + 1)
        j = self.index.get(_additive_key(k))
        if j is not None:
            v[j] = k.flops
        v[-1] = (k.bytes_in + k.bytes_out) / 4
        return v

    def layer_costs(self, net: Sequence[Kernel]) -> np.ndarray:
        return np.array([self._basis(k) @ self.coef for k in net])


def _shares(networks, totals, overhead: float, priors: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Split each measured total (minus the overhead) over its layers in proportion to the priors."""
    out = []
    for net, total, prior in zip(networks, totals, priors):
        prior = np.maximum(np.asarray(prior, float), 1e-9)
        rest = max(total - overhead, 0.02 * total)
        out.append(prior * rest / prior.sum())
    return out


def _fit_forests_on_shares(networks, shares, types: Sequence[str], seed: int) -> dict[str, ForestModel]:
    """One forest per kernel type on per-layer targets; identical layers are merged (geometric mean of
    their shares, weighted by their count) so the forests stay small."""
    rows: dict[tuple, list] = {}
    for net, values in zip(networks, shares):
        for k, v in zip(net, values):
            entry = rows.setdefault((k.type, tuple(k.features())), [k, 0.0, 0])
            entry[1] += math.log(v)
            entry[2] += 1
    models = {}
    for t in types:
        items = [(k, math.exp(s / c), c) for (kt, _), (k, s, c) in rows.items() if kt == t]
        if not items:
            continue
        models[t] = ForestModel.fit([i[0] for i in items], [i[1] for i in items], regressor=_forest(seed=seed),
                                    sample_weight=np.array([i[2] for i in items], float))
    return models


def _forest_layer_costs(models: dict[str, ForestModel], networks) -> list[np.ndarray]:
    out = [np.zeros(len(net)) for net in networks]
    for t, model in models.items():
        where = [(i, j, k) for i, net in enumerate(networks) for j, k in enumerate(net) if k.type == t]
        values = model.predict([k for _, _, k in where])
        for (i, j, _), v in zip(where, values):
            out[i][j] = v
    return out


ICAS_TYPES = ('conv-bn-act', 'dwconv-bn-act', 'fc')
ICAS_ELEMENTWISE = ('add', 'act', 'eltwise', 'pool', 'global-pool', 'concat')
BACKFIT_ROUNDS = 2


def fit_icas_predictor(networks, totals, metadata: dict[str, Any], seed: int = SEED
                       ) -> tuple[KernelLatencyPredictor, dict[str, Any]]:
    """Layer-additive decomposition of network totals, then per-type forests on the per-layer shares.

    1. :class:`LayerAdditiveFit` on the totals gives an intercept (per-inference overhead) and prior layer
       costs; 2. each measured total minus the intercept is split over its layers in proportion to the
       priors; 3. forests per kernel type fit these shares; 4. ``BACKFIT_ROUNDS`` times, the forests'
       own layer predictions become the priors and the forests are refitted.
    """
    totals = np.asarray(totals, float)
    additive = LayerAdditiveFit(networks, totals)
    priors = [additive.layer_costs(net) for net in networks]
    models: dict[str, ForestModel] = {}
    for _ in range(BACKFIT_ROUNDS + 1):
        shares = _shares(networks, totals, additive.intercept, priors)
        models = _fit_forests_on_shares(networks, shares, ICAS_TYPES, seed)
        priors = _forest_layer_costs(models, networks)
    routes = {t: t for t in models}
    routes.update({'mbconv': 'parts', 'se': 'parts'})
    element_rate = float(additive.coef[-1])
    if element_rate > 0:
        coef = np.zeros(len(BASIS_NAMES))
        coef[BASIS_NAMES.index('elements')] = element_rate
        models['elementwise'] = LinearComponentModel(coef, ranges={}, n_train=len(networks))
        routes.update({t: 'elementwise' for t in ICAS_ELEMENTWISE})
    info = {'additive_terms': len(additive.keys), 'overhead': additive.intercept, 'element_rate': element_rate}
    return KernelLatencyPredictor(models, routes, metadata, overhead=additive.intercept), info


# ============================================================================================ builders


class _Context:
    """What a builder gets: the data folder, a log function and whether to run slow extra checks."""

    def __init__(self, data_root: str | Path, log: Callable[[str], None], extra_checks: bool = True):
        self.data_root = str(Path(data_root).expanduser().resolve())
        self.log = log
        self.extra_checks = extra_checks


def _base_metadata(spec_name: str, metric: str, unit: str, **fields) -> dict[str, Any]:
    import sklearn

    from nni_bigLittle import __version__
    epoch = os.environ.get('SOURCE_DATE_EPOCH')
    created = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch
               else _dt.datetime.now(_dt.timezone.utc)).strftime('%Y-%m-%d')
    meta = {'name': spec_name, 'metric': metric, 'unit': unit, 'package_version': __version__,
            'created': created, 'sklearn_version': sklearn.__version__, 'seed': SEED,
            'rebuild_command': REBUILD_COMMAND}
    meta.update(fields)
    return meta


ICAS_SOURCE = (f'{ICAS_DIR}/ (iCAS-Lab/NAS-Performance-Modeling @ 50e67092, data/**; paper: Juneja et al., '
               '"Accelerating Hardware-Aware NAS with ML-Based Edge GPU Performance Modeling", 2025). '
               'Licence: the repository states none; only fitted model parameters are shipped, no data.')
TOPHUB_SOURCE = (f'{TOPHUB_DIR}/ (tlc-pack/tophub @ f05376e: cuda_v0.10.log, arm_cpu_v0.08.log, best AutoTVM '
                 'record per workload). Licence: the repository states none; only fitted model parameters are '
                 'shipped, no data.')
FBNET_SOURCE = (f'{FBNET_DIR}/ (HayeonLee/HELP data/fbnet, MIT; numbers from GATECH-EIC/HW-NAS-Bench, ICLR 2021, '
                'MIT). Network layout from HW-NAS-Bench hw_nas_bench_api/fbnet_models/model_infer.py.')

ICAS_COMMON_NOTES = [
    'Per-layer costs are not measured: each network total minus the fitted per-inference overhead is split over '
    'its layers by a layer-additive fit (NNLS on network totals: one MAC rate per kernel type and size, the '
    '3-channel input layer apart, one per-element rate shared by all layers, an intercept = the overhead), '
    'forests per kernel type are fitted to these shares, and the split is refined twice with the forests\' own '
    'predictions (backfitting). The split between the depthwise and pointwise halves of a depthwise-separable '
    'layer is only weakly identified (they always occur together).',
    'mbconv and se kernels are predicted as the sum of their parts. add, act, eltwise, pool, global-pool and '
    'concat kernels do not occur in the data: they are priced at the shared per-element rate of the '
    'layer-additive fit (elements read + written), an extrapolation that ignores TensorRT fusing many of them '
    'into neighbouring convs (their predictions carry no extrapolation flag, this note is the flag).',
]


def _icas_range_notes(networks) -> list[str]:
    """Data-range statements computed from the networks (what the forests saw, what they extrapolate)."""
    layers = [k for net in networks for k in net]

    def span(kind, attr, cond=lambda k: True):
        values = [getattr(k, attr) for k in layers if k.type == kind and cond(k)]
        return f'{min(values):,.0f}-{max(values):,.0f}' if values else 'none'
    dense = lambda k: k.cin > 4  # noqa: E731 - layers after the 3-channel input layer
    return [
        f'iCAS networks: {len(networks)} stride-1 stacks of conv or depthwise-separable layers plus one '
        f'Linear(F*H*W -> 10). Dense conv: kernels {span("conv-bn-act", "kernel")}, channels '
        f'{span("conv-bn-act", "cout", dense)} (after a 3-channel input layer), input maps '
        f'{span("conv-bn-act", "hw")} px; depthwise: kernels {span("dwconv-bn-act", "kernel")}, maps '
        f'{span("dwconv-bn-act", "hw")} px. Stride 2, fewer channels, larger depthwise kernels, expansion layers, '
        'SE and activations other than ReLU are outside the data and extrapolated by the forests (per unit of '
        'work = MACs + elements moved).',
        f'The fc forest is fitted on Linear(F*H*W -> 10) heads only ({span("fc", "cin")} inputs, 10 outputs, after '
        'a flatten): wide classifier layers such as VGG\'s 25088 -> 4096 are overpredicted several-fold (see the '
        'real-network check); narrow heads with few outputs are in range.',
        'Measured at batch 1 (TensorRT execute_async with the host-to-device input copy, device-to-host output copy '
        'and a stream synchronize; iCAS latency.py).',
    ]


def _build_icas(ctx: _Context, metric: str) -> tuple[KernelLatencyPredictor, FitReport]:
    data = load_icas(ctx.data_root, metric)
    nets, y = data.networks, data.targets
    train, test = _split(len(nets))
    ctx.log(f'  {len(nets)} networks, {sum(len(n) for n in nets)} layer kernels; fitting on {len(train)}, '
            f'holding out {len(test)}')
    tr_nets = [nets[i] for i in train]
    held_model, _ = fit_icas_predictor(tr_nets, y[train], {'metric': metric, 'unit': data.unit})
    pred = predict_totals(held_model, [nets[i] for i in test])
    heldout = _metrics(y[test], pred)
    macs = np.array([sum(k.flops for k in net) for net in nets])
    base_pred, base_coef = _flops_baseline(macs[train], y[train], macs[test])
    baseline = _metrics(y[test], base_pred)
    split = (f'seeded (seed {SEED}) random 80/20 split of the {len(nets)} measured networks: fitted on '
             f'{len(train)}, evaluated on the {len(test)} held-out networks (sum of kernel predictions + overhead)')
    notes = _icas_range_notes(nets) + list(ICAS_COMMON_NOTES)
    if metric == 'energy':
        cal = data.info
        notes.insert(0, 'Energy = GPU-rail (POM_5V_GPU) energy per inference in mJ, calibrated here as the average '
                        'GPU-rail power of the 60-s power run (mW, per-subset CSV Avrg_POM_5V_GPU) x that run\'s mean '
                        'latency (ms) / 1000. The tidy column gpu_energy_per_inference is sum(tegrastats power '
                        'samples, mW) / inferences, i.e. mW x sampling interval; with a median of '
                        f'{cal.get("median_power_samples", float("nan")):.0f} samples in ~60 s it is close to mJ: the '
                        f'calibrated value is {cal.get("median_ratio_to_tidy", float("nan")):.3f} x it (median). The '
                        f'CPU rail (median {100 * cal.get("median_cpu_to_gpu", float("nan")):.1f} % of the GPU rail) '
                        'and the rest of the board are not included; static GPU power is.')
    ctx.log('  refitting on all networks')
    metadata = _base_metadata(
        'jetson_nano_trt_fp32', metric, data.unit,
        device='NVIDIA Jetson Nano (128-core Maxwell GPU)',
        runtime='TensorRT (PyTorch -> ONNX -> TensorRT engine, default builder flags, 1 GB workspace, per the iCAS '
                'scripts; the TensorRT version is not recorded in the data, TensorRT 8 on JetPack 4.6 is likely but '
                'unverified)',
        precision='fp32', batch=1, data_source=ICAS_SOURCE, source_files=data.source_files,
        n_measurements=len(nets), n_networks=len(nets), notes=notes)
    if metric == 'energy':
        metadata['energy_calibration'] = {'definition': 'Avrg_POM_5V_GPU [mW] x latency_ms_60s_power_run [ms] / 1000',
                                          **{k: round(v, 6) for k, v in data.info.items()}}
    predictor, info = fit_icas_predictor(nets, y, metadata)
    fit_metrics: dict[str, Any] = {'heldout': heldout, 'flops_baseline': baseline,
                                   'flops_baseline_coef': base_coef, 'split': split,
                                   'overhead': round(info['overhead'], 6)}
    extra: dict[str, Any] = {}
    if ctx.extra_checks:
        ctx.log('  out-of-distribution check on the iCAS real networks (rebuilt from torchvision / timm)')
        rows, real_notes = _icas_real_models(ctx.data_root)
        rows = [r for r in rows if r[metric] is not None]
        if rows:
            values = predict_totals(predictor, [r['kernels'] for r in rows])
            measured = np.array([r[metric] for r in rows])
            ood = _metrics(measured, values)
            ood['models'] = {r['name']: {'model': r['model'], 'measured': round(r[metric], 4),
                                         'predicted': round(float(v), 4),
                                         'uncovered_kernels': int(sum(1 for k in r['kernels']
                                                                      for _ in _uncovered(predictor, k)))}
                             for r, v in zip(rows, values)}
            ood['notes'] = list(real_notes)
            ood['comparison'] = ('The predictor fitted on all synthetic networks predicts these. iCAS reports MAPE '
                                 '15.50 % (latency) and 15.28 % (energy) on its real-world models with its own '
                                 'MAC-share predictors; how that number was obtained is not in the data, so the '
                                 'comparison is indicative only.')
            if metric == 'energy':
                ood['notes'].append('Measured real-network energy = average GPU-rail power x mean latency; their '
                                    'power windows hold 56-88 samples for 55-67 s of inference (load time may be '
                                    'included), so this calibration is less certain than for the synthetic runs.')
            fit_metrics['ood_real_models'] = ood
            extra['ood'] = ood
    predictor.metadata['fit_metrics'] = fit_metrics
    return predictor, FitReport('jetson_nano_trt_fp32', metric, data.unit, len(nets), heldout, baseline, notes,
                                split=split, n_networks=len(nets), device=metadata['device'], extra=extra)


def _uncovered(predictor: KernelLatencyPredictor, kernel: Kernel) -> Iterable[Kernel]:
    route = predictor.routes.get(kernel.type)
    if route is None and kernel.parts:
        route = 'parts'
    if route == 'parts':
        for part in kernel.parts:
            yield from _uncovered(predictor, part)
    elif route is None:
        yield kernel


def build_icas_latency(ctx: _Context):
    return _build_icas(ctx, 'latency')


def build_icas_energy(ctx: _Context):
    return _build_icas(ctx, 'energy')


# --------------------------------------------------------------------------------- TopHub builders

TOPHUB_DEVICES = {
    'jetson_nano_tvm': ('jetson_nano', 'NVIDIA Jetson Nano GPU (128-core Maxwell)',
                        'TVM 0.7.dev0 AutoTVM, CUDA target "cuda -model=jetson-nano" (TopHub pre-tuned schedules)'),
    'jetson_tx2_tvm': ('jetson_tx2', 'NVIDIA Jetson TX2 GPU (256-core Pascal)',
                       'TVM 0.7.dev0 AutoTVM, CUDA target "cuda -model=tx2" (TopHub pre-tuned schedules)'),
    'raspberry_pi_3b_tvm': ('raspberry_pi_3b', 'Raspberry Pi 3B (BCM2837, 4x Cortex-A53, armv7l 32-bit)',
                            'TVM 0.7.dev0 AutoTVM, llvm arm_cpu target -model=bcm2837 +neon (TopHub pre-tuned '
                            'schedules)'),
}
DW_CANDIDATES = ('forest', 'linear', 'conv')


def _tophub_forest(kernels, costs, seed: int = SEED) -> ForestModel:
    return ForestModel.fit(kernels, costs, regressor=_forest(n_estimators=60, max_depth=14, min_samples_leaf=2,
                                                             max_features=None, seed=seed))


def _fit_tophub(kernels: list[Kernel], costs: np.ndarray, dw_choice: str, metadata: dict[str, Any]
                ) -> KernelLatencyPredictor:
    conv = [i for i, k in enumerate(kernels) if k.type == 'conv-bn-act']
    dw = [i for i, k in enumerate(kernels) if k.type == 'dwconv-bn-act']
    models: dict[str, Any] = {'conv': _tophub_forest([kernels[i] for i in conv], costs[conv])}
    routes = {'conv-bn-act': 'conv', 'fc': 'conv', 'mbconv': 'parts', 'se': 'parts'}
    if dw_choice == 'forest':
        models['dwconv'] = _tophub_forest([kernels[i] for i in dw], costs[dw])
        routes['dwconv-bn-act'] = 'dwconv'
    elif dw_choice == 'linear':
        models['dwconv'] = LinearComponentModel.fit([kernels[i] for i in dw], costs[dw])
        routes['dwconv-bn-act'] = 'dwconv'
    else:
        routes['dwconv-bn-act'] = 'conv'
    return KernelLatencyPredictor(models, routes, metadata)


def _choose_dw(kernels: list[Kernel], costs: np.ndarray) -> tuple[str, dict[str, float]]:
    """Pick the depthwise model by leave-one-out MAPE over the (training) depthwise kernels."""
    conv = [i for i, k in enumerate(kernels) if k.type == 'conv-bn-act']
    dw = [i for i, k in enumerate(kernels) if k.type == 'dwconv-bn-act']
    scores: dict[str, float] = {}
    if len(dw) < 3:
        return 'conv', {'conv': float('nan')}
    conv_model = _tophub_forest([kernels[i] for i in conv], costs[conv])
    truth = costs[dw]
    scores['conv'] = float(np.mean(np.abs(conv_model.predict([kernels[i] for i in dw]) - truth) / truth) * 100)
    for name in ('forest', 'linear'):
        preds = []
        for j in range(len(dw)):
            rest = [dw[m] for m in range(len(dw)) if m != j]
            ks, cs = [kernels[i] for i in rest], costs[rest]
            model = _tophub_forest(ks, cs) if name == 'forest' else LinearComponentModel.fit(ks, cs)
            preds.append(float(model.predict([kernels[dw[j]]])[0]))
        scores[name] = float(np.mean(np.abs(np.array(preds) - truth) / truth) * 100)
    best = min(DW_CANDIDATES, key=lambda c: (scores.get(c, float('inf')), DW_CANDIDATES.index(c)))
    return best, {k: round(v, 4) for k, v in scores.items()}


def _build_tophub(ctx: _Context, name: str) -> tuple[KernelLatencyPredictor, FitReport]:
    device_key, device, runtime = TOPHUB_DEVICES[name]
    data = load_tophub(ctx.data_root, device_key)
    kernels, costs = data.kernels, data.costs
    train, test = _split(len(kernels))
    tr_k, tr_c = [kernels[i] for i in train], costs[train]
    dw_choice, loo = _choose_dw(tr_k, tr_c)
    ctx.log(f'  {len(kernels)} kernels ({sum(k.type == "dwconv-bn-act" for k in kernels)} depthwise); '
            f'depthwise model: {dw_choice} (leave-one-out MAPE % {loo})')
    held = _fit_tophub(tr_k, tr_c, dw_choice, {})
    pred = predict_totals(held, [[kernels[i]] for i in test])
    heldout = _metrics(costs[test], pred)
    macs = np.array([k.flops for k in kernels])
    base_pred, base_coef = _flops_baseline(macs[train], costs[train], macs[test])
    baseline = _metrics(costs[test], base_pred)
    by_type = {}
    for t in ('conv-bn-act', 'dwconv-bn-act'):
        sel = [j for j, i in enumerate(test) if kernels[i].type == t]
        if sel:
            by_type[t] = _metrics(costs[test][sel], pred[sel])
    split = (f'TopHub has no network ids, so the split is by workload shape: after keeping the fastest template per '
             f'shape every row is a distinct shape; seeded (seed {SEED}) random 80/20 split of the {len(kernels)} '
             f'shapes: fitted on {len(train)}, evaluated per kernel on {len(test)}')
    n_dw = sum(k.type == 'dwconv-bn-act' for k in kernels)
    ranges = {f: sorted({int(getattr(k, f)) for k in kernels if k.type == 'conv-bn-act'})
              for f in ('kernel', 'stride')}
    notes = [
        f'Per-kernel AutoTVM measurements (best template per shape): {len(kernels) - n_dw} conv, {n_dw} depthwise; '
        f'{data.dropped["non-square or dilated"]} non-square (Inception 1x7 / 7x1) rows dropped because a Kernel '
        'has one square kernel size.',
        f'conv kernel sizes in the data: {ranges["kernel"]}, strides {ranges["stride"]}; depthwise kernels are 3x3 '
        'only, so depthwise 5x5 / 7x7 are extrapolated (per unit of work). Workloads come from standard ImageNet '
        'networks (ResNet, MobileNet, VGG, SqueezeNet, Inception), mostly at 7-112 px.',
        f'Depthwise model chosen by leave-one-out MAPE on the training depthwise kernels: {dw_choice} '
        f'(MAPE % forest / linear on depthwise rows / conv forest: {loo.get("forest")} / {loo.get("linear")} / '
        f'{loo.get("conv")}).',
        'Kernels are measured without a fused activation or batch norm (TVM operator workloads); the activation '
        'feature is ignored. fc kernels are predicted by the conv model as a 1x1 conv on a 1x1 map.',
        'mbconv and se kernels are the sum of their parts. add, act, eltwise, pool, global-pool and concat kernels '
        'are not covered (no such records in TopHub): they count 0 and are listed as uncovered in every prediction.',
        'These are TVM-tuned operator costs (no framework overhead, no fusion across operators), not TensorRT, '
        'PyTorch or TFLite latencies; whole-network sums are not validated against end-to-end measurements.',
    ]
    if len(test) < 60:
        notes.append(f'Only {len(test)} held-out kernels: the held-out metrics carry a wide uncertainty.')
    throughput = {}
    for t in ('conv-bn-act', 'dwconv-bn-act'):
        sel = [i for i, k in enumerate(kernels) if k.type == t]
        if len(sel) >= 5:
            rate = np.array([kernels[i].flops for i in sel]) / costs[sel]
            throughput[t] = float(np.percentile(rate, 90) / np.percentile(rate, 10))
    spread = ', '.join(f'{t} {v:.0f}x' for t, v in throughput.items())
    if heldout['within_10'] < 0.5:
        notes.append(f'Poor held-out accuracy ({100 * heldout["within_10"]:.0f} % within ±10 %, MAPE '
                     f'{heldout["mape"]:.0f} %): the records are the best schedule AutoTVM happened to find per '
                     f'workload, and their throughput (MACs per ms) spreads widely between similar shapes (90th / '
                     f'10th percentile: {spread}), which shape features cannot explain; with this few points the '
                     'forest mostly learns the typical throughput. Use it for rough ranking only.')
    else:
        notes.append(f'Throughput spread of the records (MACs per ms, 90th / 10th percentile): {spread}.')
    metadata = _base_metadata(name, 'latency', 'ms', device=device, runtime=runtime, precision='fp32', batch=1,
                              data_source=TOPHUB_SOURCE, source_files=data.source_files,
                              n_measurements=len(kernels), n_networks=0, notes=notes)
    predictor = _fit_tophub(kernels, costs, dw_choice, metadata)
    predictor.metadata['depthwise_model'] = {'choice': dw_choice, 'loo_mape_pct_train_split': loo}
    predictor.metadata['fit_metrics'] = {'heldout': heldout, 'flops_baseline': baseline,
                                         'flops_baseline_coef': base_coef, 'split': split,
                                         'heldout_by_type': by_type}
    report = FitReport(name, 'latency', 'ms', len(kernels), heldout, baseline, notes, split=split, device=device,
                       extra={'by_type': by_type, 'dw_choice': dw_choice})
    return predictor, report


# --------------------------------------------------------------------------------- Raspberry Pi 4 (FBNet)


def _tied_basis(net: Sequence[Kernel]) -> np.ndarray:
    """Component basis with dense kxk conv and fc MACs tied to pointwise MACs (the stem, header and fc are
    the same in every FBNet network, so their own rates cannot be told from the intercept)."""
    b = np.sum([component_basis(k) for k in net], axis=0)
    return np.array([b[0] + b[1] + b[4], b[2], b[3], b[5], b[6]])


def _fit_tied_linear(networks, totals) -> tuple[LinearComponentModel, float]:
    a = np.array([_tied_basis(net) for net in networks])
    sol = _nnls_weighted(np.hstack([a, np.ones((len(a), 1))]), np.asarray(totals, float))
    pw, grouped, dw, elements, ops = sol[:5]
    coef = dict(zip(BASIS_NAMES, (pw, pw, grouped, dw, pw, elements, ops)))
    return LinearComponentModel([coef[n] for n in BASIS_NAMES], ranges=_feature_ranges(networks),
                                n_train=len(networks)), float(sol[-1])


def _feature_ranges(networks) -> dict[str, list[float]]:
    """Training range of the features that flag extrapolation (over kernels and their parts)."""
    leaves = []
    stack = [k for net in networks for k in net]
    while stack:
        k = stack.pop()
        leaves.append(k)
        stack.extend(k.parts)
    return {f: [float(min(getattr(k, f) for k in leaves)), float(max(getattr(k, f) for k in leaves))]
            for f in RANGE_FEATURES}


def _fbnet_block_targets(ops: np.ndarray, totals: np.ndarray, linear: LinearComponentModel
                         ) -> tuple[list[Kernel], np.ndarray, dict[str, Any]]:
    """Per-block costs recovered from network totals (HW-NAS-Bench sums per-shape lookup-table entries).

    Regress totals on indicators of (layer shape, op); each shape group is identified only up to an
    offset, pinned so that the skip op costs what it physically is: 0 for an identity, the linear
    model's 1x1 conv + BN + ReLU cost where the skip is a conv.
    """
    shapes = fbnet_layer_shapes()
    distinct = sorted(set(shapes))
    col = {(s, op): j for j, (s, op) in enumerate((s, op) for s in distinct for op in FBNET_OPS)}
    a = np.zeros((len(ops), len(col) + 1))
    a[:, -1] = 1.0
    for r, row in enumerate(ops):
        for p, op in enumerate(row):
            a[r, col[(shapes[p], op)]] += 1.0
    sol, *_ = np.linalg.lstsq(a, totals, rcond=None)
    residual = float(np.sqrt(np.mean((a @ sol - totals) ** 2)))
    kernels, targets = [], []
    for s in distinct:
        hw, cin, cout, stride = s
        skip = fbnet_layer('skip', 'skip', hw, cin, cout, stride)
        offset = (float(linear.predict(skip).sum()) if skip else 0.0) - sol[col[(s, 'skip')]]
        for op in FBNET_OPS[:-1]:
            kernels.append(fbnet_layer('block', op, hw, cin, cout, stride)[0])
            targets.append(sol[col[(s, op)]] + offset)
    targets = np.array(targets)
    info = {'lut_rmse_ms': residual, 'n_blocks': len(kernels), 'n_clipped': int(np.sum(targets < 1e-3))}
    return kernels, np.maximum(targets, 1e-3), info


def _fbnet_forest(kernels, targets) -> ForestModel:
    return ForestModel.fit(kernels, targets, regressor=_forest(n_estimators=100, max_depth=None, min_samples_leaf=1,
                                                               max_features=None))


PI4_ROUTES = {t: 'linear' for t in ('conv-bn-act', 'dwconv-bn-act', 'fc', 'add', 'act', 'eltwise', 'pool',
                                    'global-pool', 'concat')}


def fit_fbnet_predictor(ops: np.ndarray, networks, totals, metadata: dict[str, Any], with_forest: bool = True
                        ) -> tuple[KernelLatencyPredictor, dict[str, Any]]:
    """Linear component model on network totals (+ a forest for MBConv blocks on recovered block costs)."""
    totals = np.asarray(totals, float)
    linear, intercept = _fit_tied_linear(networks, totals)
    models: dict[str, Any] = {'linear': linear}
    routes = dict(PI4_ROUTES, mbconv='linear', se='parts')
    info: dict[str, Any] = {'linear_intercept': intercept}
    overhead = intercept
    if with_forest:
        blocks, targets, binfo = _fbnet_block_targets(ops, totals, linear)
        models['mbconv'] = _fbnet_forest(blocks, targets)
        routes['mbconv'] = 'mbconv'
        info.update(binfo)
        draft = KernelLatencyPredictor(models, routes, {}, overhead=0.0)
        overhead = float(np.mean(totals - predict_totals(draft, networks)))
    return KernelLatencyPredictor(models, routes, metadata, overhead=overhead), info


def _loso_blocks(ops, totals, linear) -> dict[str, float]:
    """Leave-one-block-shape-out check on the recovered block costs: forest vs linear model (MAPE %)."""
    blocks, targets, _ = _fbnet_block_targets(ops, totals, linear)
    shapes = [(k.hw, k.cin, k.cout, k.stride) for k in blocks]
    err_f, err_l = [], []
    for s in sorted(set(shapes)):
        tr = [i for i, x in enumerate(shapes) if x != s]
        te = [i for i, x in enumerate(shapes) if x == s]
        forest = _fbnet_forest([blocks[i] for i in tr], targets[tr])
        truth = targets[te]
        err_f += list(np.abs(forest.predict([blocks[i] for i in te]) - truth) / truth)
        err_l += list(np.abs(linear.predict([blocks[i] for i in te]) - truth) / truth)
    return {'forest_mape_pct': round(100 * float(np.mean(err_f)), 3),
            'linear_mape_pct': round(100 * float(np.mean(err_l)), 3), 'n_shapes': len(set(shapes))}


def build_raspberry_pi_4(ctx: _Context) -> tuple[KernelLatencyPredictor, FitReport]:
    data, ops = load_fbnet(ctx.data_root)
    nets, y = data.networks, data.targets
    train, test = _split(len(nets))
    ctx.log(f'  {len(nets)} FBNet networks; fitting on {len(train)}, holding out {len(test)}')
    held, info = fit_fbnet_predictor(ops[train], [nets[i] for i in train], y[train], {})
    heldout = _metrics(y[test], predict_totals(held, [nets[i] for i in test]))
    linear_only, _ = fit_fbnet_predictor(ops[train], [nets[i] for i in train], y[train], {}, with_forest=False)
    heldout_linear = _metrics(y[test], predict_totals(linear_only, [nets[i] for i in test]))
    loso = _loso_blocks(ops[train], y[train], held.models['linear'])
    macs = np.array([sum(k.flops for k in net) for net in nets])
    base_pred, base_coef = _flops_baseline(macs[train], y[train], macs[test])
    baseline = _metrics(y[test], base_pred)
    split = (f'seeded (seed {SEED}) random 80/20 split of the {len(nets)} networks: fitted on {len(train)}, '
             f'evaluated on the {len(test)} held-out networks. All networks are built from the same 12 layer shapes '
             'x 9 ops, so this split tests new combinations of known blocks, not new block shapes (see the '
             'leave-one-shape-out check in the notes).')
    notes = [
        'HW-NAS-Bench FBNet latencies are sums of per-block lookup-table entries measured on the Raspberry Pi 4 '
        f'(HELP: residual of an exact per-shape additive fit {info["lut_rmse_ms"]:.1e} ms), not end-to-end runs; '
        'the predictor therefore models block-by-block latency without cross-layer fusion. Runtime not recorded in '
        'the data (TFLite according to the HW-NAS-Bench paper, unverified).',
        'Network layout (HW-NAS-Bench hw_nas_bench_api/fbnet_models/model_infer.py, CIFAR setting): stem 3x3 conv '
        '3->16 stride 1 + BN + ReLU at 32x32; 22 layers in stages (1,16,s1) (4,24,s1) (4,32,s2) (4,64,s2) '
        '(4,112,s1) (4,184,s2) (1,352,s1); MBConv = 1x1 (groups 1|2) + BN + ReLU [+ shuffle] -> dw kxk + BN + ReLU '
        '-> 1x1 (groups) + BN [+ add when Cin = Cout and stride 1]; skip = identity or 1x1 conv + BN + ReLU where '
        'the layer changes channels / stride; header 1x1 conv 352->1504 + BN + ReLU; global average pool; '
        'Linear(1504 -> 100).',
        'Linear component model (non-negative costs per MAC of pointwise, grouped and depthwise convs, per element '
        'and per kernel, + intercept) fitted on the network totals. The stem, header and fc are identical in every '
        'network, so dense kxk conv and fc MACs are tied to the pointwise rate and their remaining cost sits in the '
        'per-inference overhead.',
        'mbconv kernels: a forest on per-block costs recovered from the training networks (per-shape additive fit, '
        'offsets pinned by identity skip = 0 and conv skip = the linear model cost). Held-out by network: forest '
        f'MAPE {heldout["mape"]:.2f} % vs linear-only {heldout_linear["mape"]:.2f} %. Leave-one-block-shape-out '
        f'on the recovered block costs ({loso["n_shapes"]} shapes): forest {loso["forest_mape_pct"]:.1f} % vs '
        f'linear {loso["linear_mape_pct"]:.1f} % MAPE, so the forest also generalises better to unseen shapes.',
        'Data range: input 32x32 (layers at 32/16/8/4 px), kernels 3 and 5, expansion 1, 3, 6, groups 1 and 2, '
        'ReLU only, channels 16-352. Kernel 7, expansion 2 and 4, stride-2 blocks at other shapes, SE, hswish / '
        'SiLU and inputs larger than 32 px are extrapolated: the mbconv forest scales with work (MACs + elements) '
        'and ignores SE / activation; se kernels are the sum of their parts via the linear model.',
        'All kernel types are covered: conv-bn-act, dwconv-bn-act, fc, add, act, eltwise, pool, global-pool and '
        'concat by the linear model (its per-element rate is '
        f'{held.models["linear"].coef[5]:.3g} ms and per-kernel rate {held.models["linear"].coef[6]:.3g} ms in the '
        'held-out fit), which is an extrapolation for everything except the FBNet blocks.',
    ]
    ctx.log('  refitting on all networks')
    metadata = _base_metadata(
        'raspberry_pi_4', 'latency', 'ms', device='Raspberry Pi 4 (BCM2711, 4x Cortex-A72)',
        runtime='as measured by HW-NAS-Bench (TFLite per the HW-NAS-Bench paper; not recorded in the data)',
        precision='fp32 (unverified)', batch=1, data_source=FBNET_SOURCE, source_files=data.source_files,
        n_measurements=len(nets), n_networks=len(nets), notes=notes)
    predictor, _ = fit_fbnet_predictor(ops, nets, y, metadata)
    predictor.metadata['fit_metrics'] = {'heldout': heldout, 'flops_baseline': baseline,
                                         'flops_baseline_coef': base_coef, 'split': split,
                                         'heldout_linear_only': heldout_linear, 'leave_one_shape_out_blocks': loso}
    report = FitReport('raspberry_pi_4', 'latency', 'ms', len(nets), heldout, baseline, notes, split=split,
                       n_networks=len(nets), device=metadata['device'],
                       extra={'linear_only': heldout_linear, 'loso': loso})
    return predictor, report


# ============================================================================================ registry

DEVICES: dict[str, DeviceSpec] = {spec.key: spec for spec in (
    DeviceSpec('jetson_nano_trt_fp32', 'latency', build_icas_latency,
               'Jetson Nano, TensorRT fp32: per-type forests on per-layer shares of 12,534 iCAS network latencies',
               'NVIDIA Jetson Nano', ICAS_DIR),
    DeviceSpec('jetson_nano_trt_fp32', 'energy', build_icas_energy,
               'Jetson Nano, TensorRT fp32: GPU-rail energy per inference (mJ), same method on iCAS energy',
               'NVIDIA Jetson Nano', ICAS_DIR),
    DeviceSpec('jetson_nano_tvm', 'latency', lambda ctx: _build_tophub(ctx, 'jetson_nano_tvm'),
               'Jetson Nano GPU, TVM AutoTVM: forests on TopHub per-kernel records', 'NVIDIA Jetson Nano', TOPHUB_DIR),
    DeviceSpec('jetson_tx2_tvm', 'latency', lambda ctx: _build_tophub(ctx, 'jetson_tx2_tvm'),
               'Jetson TX2 GPU, TVM AutoTVM: forests on TopHub per-kernel records', 'NVIDIA Jetson TX2', TOPHUB_DIR),
    DeviceSpec('raspberry_pi_3b_tvm', 'latency', lambda ctx: _build_tophub(ctx, 'raspberry_pi_3b_tvm'),
               'Raspberry Pi 3B CPU, TVM AutoTVM: forests on TopHub per-kernel records', 'Raspberry Pi 3B',
               TOPHUB_DIR),
    DeviceSpec('raspberry_pi_4', 'latency', build_raspberry_pi_4,
               'Raspberry Pi 4: linear component model + MBConv forest fitted to 5,000 FBNet network latencies',
               'Raspberry Pi 4', FBNET_DIR),
)}


def _select(names: Iterable[str] | None) -> list[DeviceSpec]:
    if names is None:
        return list(DEVICES.values())
    chosen: list[DeviceSpec] = []
    for name in names:
        stem = str(name)[:-4] if str(name).endswith('.npz') else str(name)
        hits = [s for s in DEVICES.values() if stem in (s.key, s.name)]
        if not hits:
            raise PredictorError(f'No bundled predictor {name!r}; known: {sorted(DEVICES)}.')
        chosen += [h for h in hits if h not in chosen]
    return chosen


def build_predictor(name: str, data_root: str | Path, metric: str = 'latency', extra_checks: bool = True,
                    log: Callable[[str], None] | None = None) -> tuple[KernelLatencyPredictor, FitReport]:
    """Fit one bundled predictor from the data folder (held-out evaluation, then refit on all data)."""
    key = _stem(name, metric)
    if key not in DEVICES:
        raise PredictorError(f'No bundled predictor {key!r}; known: {sorted(DEVICES)}.')
    ctx = _Context(data_root, log or (lambda _msg: None), extra_checks)
    t0 = time.perf_counter()
    predictor, report = DEVICES[key].builder(ctx)
    report.seconds = time.perf_counter() - t0
    return predictor, report


def rebuild_bundled(data_root: str | Path, out_dir: str | Path = BUNDLED_DIR, names: Sequence[str] | None = None,
                    progress: bool = True, write_report: bool | None = None) -> list[FitReport]:
    """Refit the bundled predictors from ``data_root`` (the folder holding the three data sets) into ``out_dir``.

    ``names``: predictor names (``'raspberry_pi_4'``: all its metrics) or file stems
    (``'jetson_nano_trt_fp32.energy'``); default all. The Markdown fit report is written to
    ``out_dir/FIT_REPORT.md`` when all predictors are rebuilt (``write_report`` overrides).
    """
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir():
        raise LatencyDataError(f'{data_root} is not a folder; expected the latency data folder holding {ICAS_DIR}/, '
                        f'{TOPHUB_DIR}/ and {FBNET_DIR}/ (e.g. ../shared/data/latency).')
    specs = _select(names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda _msg: None)
    reports = []
    t_all = time.perf_counter()
    for spec in specs:
        log(f'[{spec.key}] {spec.description}')
        predictor, report = build_predictor(spec.name, data_root, spec.metric, log=log)
        report.path = predictor.save(out_dir / spec.filename)
        log(f'  held-out: MAPE {report.heldout["mape"]:.2f} %, within ±10 % {100 * report.heldout["within_10"]:.1f} % '
            f'(FLOPs baseline {report.baseline["mape"]:.2f} % / {100 * report.baseline["within_10"]:.1f} %); '
            f'{report.seconds:.1f} s -> {report.path}')
        reports.append(report)
    total = time.perf_counter() - t_all
    if write_report if write_report is not None else names is None:
        path = write_fit_report(reports, out_dir / REPORT_NAME, runtime_s=total)
        log(f'fit report -> {path}')
    return reports


# ============================================================================================ reports


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return 'n/a'
    return f'{x:.{digits}g}' if isinstance(x, float) else str(x)


def _row(m: dict[str, Any]) -> list[str]:
    return [_fmt(m.get('rmse')), f'{m["mape"]:.2f} %' if 'mape' in m else 'n/a',
            f'{100 * m["within_5"]:.1f} %' if 'within_5' in m else 'n/a',
            f'{100 * m["within_10"]:.1f} %' if 'within_10' in m else 'n/a', _fmt(m.get('spearman'))]


def format_fit_report(reports: Sequence[FitReport]) -> str:
    """Markdown: held-out metrics of each predictor next to the FLOPs-only baseline, then the notes."""
    lines = ['| predictor | metric | held-out n | ours RMSE | ours MAPE | ours ±5 % | ours ±10 % | ours Spearman '
             '| FLOPs RMSE | FLOPs MAPE | FLOPs ±5 % | FLOPs ±10 % | FLOPs Spearman |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in reports:
        lines.append('| ' + ' | '.join([f'`{r.key}`', f'{r.metric} ({r.unit})', str(r.heldout.get('n', 0)),
                                        *_row(r.heldout), *_row(r.baseline)]) + ' |')
    lines.append('')
    lines.append('RMSE in the predictor\'s unit; MAPE = mean absolute percentage error; ±5 % / ±10 % = share of '
                 'held-out items predicted within 5 % / 10 %; FLOPs = `cost = a·MACs + b` fitted on the same '
                 'training split (least squares weighted by 1/cost).')
    ood = [r for r in reports if r.extra.get('ood')]
    if ood:
        lines += ['', '### Out of distribution: iCAS real networks (Jetson Nano, TensorRT fp32)', '',
                  '| predictor | n | MAPE | ±10 % | Spearman | per network: measured → predicted |',
                  '|---|---:|---:|---:|---:|---|']
        for r in ood:
            o = r.extra['ood']
            per = '; '.join(f'{n} {v["measured"]:.4g} → {v["predicted"]:.4g}' for n, v in o['models'].items())
            lines.append(f'| `{r.key}` | {o["n"]} | {o["mape"]:.1f} % | {100 * o["within_10"]:.0f} % | '
                         f'{_fmt(o.get("spearman"))} | {per} |')
        lines += ['', ood[0].extra['ood'].get('comparison', ''), '']
        for note in dict.fromkeys(n for r in ood for n in r.extra['ood'].get('notes', [])):
            lines.append(f'- {note}')
    for r in reports:
        lines += ['', f'### `{r.key}`', '']
        if r.device:
            lines.append(f'- device: {r.device}')
        lines += [f'- measurements: {r.n}' + (' networks' if r.n_networks else ' kernels'), f'- split: {r.split}']
        if 'by_type' in r.extra:
            for t, m in r.extra['by_type'].items():
                lines.append(f'- held-out {t}: n {m["n"]}, MAPE {m["mape"]:.2f} %, ±10 % {100 * m["within_10"]:.1f} %')
        lines += [f'- {note}' for note in r.notes]
    return '\n'.join(lines)


def _environment() -> dict[str, str]:
    import scipy
    import sklearn
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as fh:
            names = [line.split(':', 1)[1].strip() for line in fh if line.startswith('model name')]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return {'cpu': cpu, 'cpu_count': str(os.cpu_count()), 'threads': '1 (scikit-learn n_jobs=1)',
            'python': platform.python_version(), 'numpy': np.__version__, 'scipy': scipy.__version__,
            'scikit-learn': sklearn.__version__, 'platform': platform.platform()}


_CAVEATS = {
    'jetson_nano_trt_fp32': 'per-layer costs are inferred from network totals of plain conv / depthwise-separable '
                            'stacks; on real networks (out of distribution) the error is much larger, see below',
    'raspberry_pi_4': 'the benchmark latencies are exact sums of per-block lookup-table entries over 108 block '
                      'variants, so held-out networks are new combinations of known blocks: near-perfect held-out '
                      'scores say little about new block shapes (leave-one-shape-out block MAPE in the notes)',
    'jetson_nano_tvm': 'few points and a wide throughput spread between similar workloads in the TopHub records',
    'jetson_tx2_tvm': 'few points (33 held out, 3 of them depthwise)',
    'raspberry_pi_3b_tvm': 'few points (42 held out, 2 of them depthwise)',
}


def _summary_lines(reports: Sequence[FitReport]) -> list[str]:
    lines = []
    for r in reports:
        w10 = r.heldout.get('within_10', 0.0)
        verdict = 'good' if w10 >= 0.9 else 'moderate' if w10 >= 0.5 else 'poor'
        gain = r.baseline.get('mape', float('nan')) / max(r.heldout.get('mape', float('nan')), 1e-9)
        line = (f'- `{r.key}`: {verdict} on held-out data ({100 * w10:.1f} % within ±10 %, MAPE '
                f'{r.heldout.get("mape", float("nan")):.2f} %; FLOPs baseline MAPE {r.baseline.get("mape", 0):.2f} %, '
                f'{gain:.1f}x higher)')
        if r.name in _CAVEATS:
            line += f'; caveat: {_CAVEATS[r.name]}'
        if r.extra.get('ood'):
            o = r.extra['ood']
            line += (f'. Real networks (VGG, ResNet, MobileNetV2, EfficientNet, ...): MAPE {o["mape"]:.0f} % on '
                     f'{o["n"]} networks vs 15.5 % (latency) / 15.3 % (energy) reported by iCAS for its own '
                     'predictors')
        lines.append(line + '.')
    return lines


def write_fit_report(reports: Sequence[FitReport], path: str | Path, runtime_s: float | None = None) -> Path:
    """FIT_REPORT.md: the rebuild command, the environment, the table, per-predictor notes and file sizes."""
    path = Path(path)
    env = _environment()
    lines = ['# Bundled predictors: fit report', '',
             'Generated by `rebuild_bundled` (`nni_bigLittle.hw_predictors.devices`). Reproduce from the repository '
             'root with:', '', '```bash', REBUILD_COMMAND, '```', '',
             'With the same scikit-learn version a rebuild gives the same predictions (fixed split and forest seeds, '
             'single-threaded fits); only the `created` date in the metadata changes.', '',
             '## Environment', '']
    lines += [f'- {k}: {v}' for k, v in env.items()]
    if runtime_s is not None:
        lines.append(f'- full rebuild wall time: {runtime_s:.0f} s')
    lines += ['', '## Summary', ''] + _summary_lines(reports)
    lines += ['', '## Held-out accuracy vs a FLOPs-only baseline', '', format_fit_report(reports), '',
              '## Files', '', '| file | size | fit time |', '|---|---:|---:|']
    for r in reports:
        size = r.path.stat().st_size if r.path and Path(r.path).exists() else 0
        lines.append(f'| `{Path(r.path).name if r.path else r.key}` | {size / 1024:.0f} KiB | {r.seconds:.1f} s |')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')
    return path


# ============================================================================================ lookup


def user_predictor_dir() -> Path:
    """``$NNI_BIGLITTLE_PREDICTORS`` or ``~/.cache/nni_bigLittle/predictors``."""
    env = os.environ.get(USER_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'nni_bigLittle' / 'predictors'


def _available() -> list[str]:
    found = []
    for folder in (user_predictor_dir(), BUNDLED_DIR):
        if folder.is_dir():
            found += [p.name[:-4] for p in sorted(folder.glob('*.npz'))]
    return sorted(dict.fromkeys(found))


def load_predictor(name: str | Path, metric: str = 'latency') -> KernelLatencyPredictor:
    """A predictor by name (``'raspberry_pi_4'``; energy: ``metric='energy'``) or by ``.npz`` path.

    Search order: an explicit path, the user folder (``$NNI_BIGLITTLE_PREDICTORS``, default
    ``~/.cache/nni_bigLittle/predictors``), the bundled folder. Unknown names raise
    :class:`PredictorError` listing what is available.
    """
    text = str(name)
    candidate = Path(text).expanduser()
    if text.endswith('.npz') or candidate.is_file() or os.sep in text:
        if candidate.is_file():
            return KernelLatencyPredictor.load(candidate)
        raise PredictorError(f'No predictor file at {candidate}.')
    filename = predictor_filename(text, metric)
    for folder in (user_predictor_dir(), BUNDLED_DIR):
        path = folder / filename
        if path.is_file():
            return KernelLatencyPredictor.load(path)
    available = _available()
    raise PredictorError(f'No {metric} predictor named {text!r} (looked for {filename} in {user_predictor_dir()} '
                         f'and {BUNDLED_DIR}). Available: {available or "none"} '
                         '(energy predictors end in .energy; pass metric="energy").')


def list_bundled() -> list[dict[str, Any]]:
    """One row per bundled predictor file: name, device, metric, unit, data source, measurements, held-out ±10 %."""
    rows = []
    for path in sorted(BUNDLED_DIR.glob('*.npz')):
        try:
            predictor = KernelLatencyPredictor.load(path)
        except PredictorError as exc:
            rows.append({'name': path.name[:-4], 'path': str(path), 'error': str(exc), 'metric': '?', 'unit': '?',
                         'device': '?', 'data_source': '?', 'n_measurements': 0, 'heldout_within_10': None})
            continue
        m = predictor.metadata
        heldout = m.get('fit_metrics', {}).get('heldout', {})
        rows.append({'name': m.get('name', path.name.split('.')[0]), 'device': m.get('device'),
                     'metric': m.get('metric'), 'unit': m.get('unit'), 'runtime': m.get('runtime'),
                     'data_source': str(m.get('data_source', '')).split(' (')[0],
                     'n_measurements': m.get('n_measurements'), 'heldout_within_10': heldout.get('within_10'),
                     'heldout_mape': heldout.get('mape'), 'path': str(path)})
    return rows


# ============================================================================================ command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nni_bigLittle.hw_predictors.devices rebuild --data ../shared/data/latency`` | ``list``."""
    parser = argparse.ArgumentParser(prog='python -m nni_bigLittle.hw_predictors.devices')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('rebuild', help='refit the bundled predictors from the data folder')
    p.add_argument('--data', required=True)
    p.add_argument('--out', default=None)
    p.add_argument('--only', action='append')
    p.add_argument('--quiet', action='store_true')
    sub.add_parser('list', help='bundled predictors')
    args = parser.parse_args(argv)
    if args.command == 'rebuild':
        reports = rebuild_bundled(args.data, out_dir=args.out or BUNDLED_DIR, names=args.only, progress=not args.quiet)
        print(format_fit_report(reports))
    else:
        for row in list_bundled():
            print(json.dumps(row))
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
