"""Data source ``help_fbnet_rpi4/``: HW-NAS-Bench FBNet networks via HELP, 5,000 whole-network latencies on the
Raspberry Pi 4: the FBNet network layout, loading, the linear component model + MBConv forest and the builder
of ``raspberry_pi_4``."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.devices.common import (
    FBNET_DIR, SEED, FitReport, LatencyDataError, _base_metadata, _Context,
)
from nni_bigLittle.hw_predictors.devices.fitting import (
    _flops_baseline, _forest, _metrics, _nnls_weighted, _split, predict_totals,
)
from nni_bigLittle.hw_predictors.devices.kernel_shapes import _conv, _fc, _global_pool, _mbconv
from nni_bigLittle.hw_predictors.devices.measurements import NetworkData, _numeric, _read_csv
from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import (
    BASIS_NAMES, RANGE_FEATURES, ForestModel, KernelLatencyPredictor, LinearComponentModel, component_basis,
)

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


# --------------------------------------------------------------------------------- Raspberry Pi 4 (FBNet)

FBNET_SOURCE = (f'{FBNET_DIR}/ (HayeonLee/HELP data/fbnet, MIT; numbers from GATECH-EIC/HW-NAS-Bench, ICLR 2021, '
                'MIT). Network layout from HW-NAS-Bench hw_nas_bench_api/fbnet_models/model_infer.py.')


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
