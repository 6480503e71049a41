"""Data source ``tvm_tophub_jetson_rpi/``: TVM TopHub per-kernel AutoTVM records (conv, dwconv) of the Jetson
Nano, Jetson TX2 and Raspberry Pi 3B: loading and the builders of ``jetson_nano_tvm``, ``jetson_tx2_tvm``
and ``raspberry_pi_3b_tvm``."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nni_bigLittle.hw_predictors.devices.common import (
    SEED, TOPHUB_DIR, FitReport, LatencyDataError, _base_metadata, _Context,
)
from nni_bigLittle.hw_predictors.devices.fitting import _flops_baseline, _forest, _metrics, _split, predict_totals
from nni_bigLittle.hw_predictors.devices.kernel_shapes import _conv
from nni_bigLittle.hw_predictors.devices.measurements import _numeric, _read_csv
from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import ForestModel, KernelLatencyPredictor, LinearComponentModel

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


# --------------------------------------------------------------------------------- TopHub builders

TOPHUB_SOURCE = (f'{TOPHUB_DIR}/ (tlc-pack/tophub @ f05376e: cuda_v0.10.log, arm_cpu_v0.08.log, best AutoTVM '
                 'record per workload). Licence: the repository states none; only fitted model parameters are '
                 'shipped, no data.')
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
