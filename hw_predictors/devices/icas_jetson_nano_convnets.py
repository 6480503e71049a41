"""Data source ``icas_jetson_nano_convnets/``: iCAS TensorRT-fp32 conv / depthwise-separable stacks measured
on the Jetson Nano (network latency and GPU-rail energy): loading, the layer-additive fit, the real-network
check and the builders of ``jetson_nano_trt_fp32`` (latency and energy)."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.devices.common import (
    ICAS_DIR, METRICS, SEED, FitReport, LatencyDataError, _base_metadata, _Context,
)
from nni_bigLittle.hw_predictors.devices.fitting import (
    _flops_baseline, _forest, _metrics, _nnls_weighted, _split, predict_totals,
)
from nni_bigLittle.hw_predictors.devices.kernel_shapes import _conv, _fc
from nni_bigLittle.hw_predictors.devices.measurements import NetworkData, _numeric, _read_csv
from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import (
    BASIS_NAMES, ForestModel, KernelLatencyPredictor, LinearComponentModel, PredictorError,
)

# --------------------------------------------------------------------------------- iCAS (Jetson Nano, TRT)

ICAS_COLUMNS = ('subset', 'model_name', 'layers_json', 'total_params', 'latency_ms', 'latency_ms_60s_power_run',
                'gpu_energy_per_inference')
ICAS_RAW_COLUMNS = ('Model Name', 'Avrg_POM_5V_GPU', 'Total_POM_5V_GPU', 'num_inferences')


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

ICAS_SOURCE = (f'{ICAS_DIR}/ (iCAS-Lab/NAS-Performance-Modeling @ 50e67092, data/**; paper: Juneja et al., '
               '"Accelerating Hardware-Aware NAS with ML-Based Edge GPU Performance Modeling", 2025). '
               'Licence: the repository states none; only fitted model parameters are shipped, no data.')

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
