"""Kernel-level latency / energy predictors (nn-Meter's method) with a version-independent file format.

A :class:`KernelLatencyPredictor` predicts a model's cost as the sum of its kernels' costs
(:mod:`.kernels`) plus a per-inference overhead. Each kernel type is *routed* to a model:

- :class:`ForestModel` — a tree ensemble over :data:`~.kernels.FEATURE_NAMES` (random forest by
  default; any scikit-learn tree ensemble or a decision tree plugs in). It regresses
  ``log(cost / work)`` where ``work = MACs + elements moved + 1000``, so a kernel larger than anything
  seen in the data scales with its work instead of saturating at the largest leaf;
- :class:`LinearComponentModel` — non-negative costs per MAC of each conv flavour, per element
  moved and per op (:func:`component_basis`); fitted on whole-network sums when only network
  totals were measured, and the sensible choice for extrapolation;
- ``'parts'`` — a composite kernel (``mbconv``, ``se``) is the sum of its parts.

A kernel type routed nowhere is *uncovered*: predicted 0 and listed in the report, never silently.
A predictor may also carry a whole-network term (``metadata['network_term']``, see
:meth:`KernelLatencyPredictor.network_term`) that ``predict`` adds once per network.

File format (``.npz``, readable with ``numpy.load(path, allow_pickle=False)``; no pickle):
``__meta__`` holds UTF-8 JSON: ``format`` (``nni_bigLittle.predictor/1``), ``metadata`` (device,
runtime, precision, metric, unit, data source, measurement count, fit metrics, package version,
notes), ``routes`` ({kernel type: model name | 'parts'}), ``overhead`` (cost added once per
inference) and ``models`` ({name: {kind, target, feature ranges, ...}}). Tree models store
``<name>/left``, ``/right``, ``/feature``, ``/threshold``, ``/value`` (all trees concatenated,
child indices global) and ``/roots``, plus ``/scale`` and ``/bias`` (prediction = bias + scale · sum
of the trees' values, which covers forests and gradient boosting). Linear models store
``<name>/coef`` over the basis named in their JSON entry.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.kernels import FEATURE_NAMES, Kernel, detect_kernels
from nni_bigLittle.errors import BigLittleError

__all__ = [
    'FORMAT', 'BASIS_NAMES', 'PredictorError', 'ForestModel', 'LinearComponentModel', 'KernelPrediction',
    'Prediction', 'KernelLatencyPredictor', 'component_basis', 'work', 'regression_metrics', 'random_forest',
    'fit_kernel_predictor', 'network_term_value',
]

FORMAT = 'nni_bigLittle.predictor/1'
BASIS_NAMES = ('mac_pw', 'mac_conv', 'mac_grouped', 'mac_dw', 'mac_fc', 'elements', 'ops')
# Features whose training range decides whether a prediction extrapolates.
RANGE_FEATURES = ('hw', 'cin', 'cout', 'kernel', 'stride', 'expansion')


class PredictorError(BigLittleError, ValueError):
    """A predictor file or request is invalid (the message says what to do)."""


def work(kernel: Kernel) -> float:
    """The normaliser of forest targets: MACs plus elements moved plus a fixed launch term."""
    return float(kernel.flops + (kernel.bytes_in + kernel.bytes_out) / 4.0 + 1000.0)


def _leaves(kernel: Kernel) -> Iterable[Kernel]:
    if kernel.parts:
        for part in kernel.parts:
            yield from _leaves(part)
    else:
        yield kernel


def component_basis(kernel: Kernel) -> np.ndarray:
    """Physical cost components of a kernel, summed over its leaf parts (see :data:`BASIS_NAMES`)."""
    b = np.zeros(len(BASIS_NAMES))
    for leaf in _leaves(kernel):
        if leaf.type == 'dwconv-bn-act':
            b[3] += leaf.flops
        elif leaf.type == 'conv-bn-act':
            if 1 < leaf.groups:
                b[2] += leaf.flops
            elif leaf.kernel == 1:
                b[0] += leaf.flops
            else:
                b[1] += leaf.flops
        elif leaf.type == 'fc':
            b[4] += leaf.flops
        b[5] += (leaf.bytes_in + leaf.bytes_out) / 4.0
        b[6] += 1.0
    return b


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """RMSE, MAPE (%), share within ±5 % and ±10 %, Spearman rank correlation."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if len(t) == 0:
        return {'n': 0}
    rel = np.abs(p - t) / np.maximum(np.abs(t), 1e-12)
    metrics = {
        'n': int(len(t)),
        'rmse': float(np.sqrt(np.mean((p - t) ** 2))),
        'mape': float(100 * np.mean(rel)),
        'within_5': float(np.mean(rel <= 0.05)),
        'within_10': float(np.mean(rel <= 0.10)),
    }
    if len(t) > 1:
        rt, rp = _ranks(t), _ranks(p)
        metrics['spearman'] = float(np.corrcoef(rt, rp)[0, 1]) if rt.std() > 0 and rp.std() > 0 else float('nan')
    return metrics


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind='mergesort')
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    # average ranks of ties
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _ranges(kernels: Sequence[Kernel]) -> dict[str, list[float]]:
    if not kernels:
        return {}
    return {f: [float(min(getattr(k, f) for k in kernels)), float(max(getattr(k, f) for k in kernels))]
            for f in RANGE_FEATURES}


def _outside(kernel: Kernel, ranges: dict[str, list[float]]) -> list[str]:
    out = []
    for f, (lo, hi) in ranges.items():
        v = float(getattr(kernel, f))
        if v < lo - 1e-9 or v > hi + 1e-9:
            out.append(f'{f}={v:g} outside [{lo:g}, {hi:g}]')
    return out


def random_forest(seed: int = 0, n_estimators: int = 60, max_depth: int | None = 14, min_samples_leaf: int = 2):
    """The default kernel regressor (scikit-learn random forest, sized to keep predictor files small)."""
    from sklearn.ensemble import RandomForestRegressor
    return RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                 random_state=seed, n_jobs=1)


class ForestModel:
    """Tree ensemble over kernel features, target ``log(cost / work(kernel))`` (see module docstring)."""

    kind = 'forest'

    def __init__(self, left, right, feature, threshold, value, roots, scale: float = 1.0, bias: float = 0.0,
                 ranges: dict[str, list[float]] | None = None, n_train: int = 0):
        self.left, self.right = np.asarray(left, np.int64), np.asarray(right, np.int64)
        self.feature, self.threshold = np.asarray(feature, np.int64), np.asarray(threshold, np.float64)
        self.value, self.roots = np.asarray(value, np.float64), np.asarray(roots, np.int64)
        self.scale, self.bias = float(scale), float(bias)
        self.ranges = ranges or {}
        self.n_train = int(n_train)

    @classmethod
    def fit(cls, kernels: Sequence[Kernel], costs: Sequence[float], regressor=None, sample_weight=None) -> 'ForestModel':
        """Fit on kernels and their measured costs. ``regressor``: an unfitted scikit-learn tree
        ensemble or decision tree (default :func:`random_forest`)."""
        costs = np.asarray(costs, dtype=float)
        if len(kernels) != len(costs) or len(kernels) == 0:
            raise PredictorError(f'Need as many costs as kernels (got {len(kernels)} kernels, {len(costs)} costs).')
        if np.any(costs <= 0) or not np.all(np.isfinite(costs)):
            raise PredictorError('Kernel costs must be positive and finite to fit a forest model.')
        x = np.array([k.features() for k in kernels])
        y = np.log(costs / np.array([work(k) for k in kernels]))
        reg = regressor if regressor is not None else random_forest()
        if sample_weight is not None:
            reg.fit(x, y, sample_weight=sample_weight)
        else:
            reg.fit(x, y)
        return cls.from_sklearn(reg, ranges=_ranges(kernels), n_train=len(kernels))

    @classmethod
    def from_sklearn(cls, reg, ranges=None, n_train: int = 0) -> 'ForestModel':
        trees, scale, bias = _sklearn_trees(reg)
        parts = {k: [] for k in ('left', 'right', 'feature', 'threshold', 'value')}
        roots, offset = [], 0
        for t in trees:
            n = t.node_count
            leaf = t.children_left == -1
            parts['left'].append(np.where(leaf, -1, t.children_left + offset))
            parts['right'].append(np.where(leaf, -1, t.children_right + offset))
            parts['feature'].append(np.where(leaf, 0, t.feature))
            parts['threshold'].append(t.threshold)
            parts['value'].append(t.value.reshape(n, -1)[:, 0])
            roots.append(offset)
            offset += n
        return cls(*(np.concatenate(parts[k]) for k in ('left', 'right', 'feature', 'threshold', 'value')),
                   roots=np.array(roots), scale=scale, bias=bias, ranges=ranges, n_train=n_train)

    def predict_log(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        total = np.zeros(len(x))
        rows = np.arange(len(x))
        for root in self.roots:
            node = np.full(len(x), root)
            while True:
                inner = self.left[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, self.feature[node]] <= self.threshold[node]
                node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
            total += self.value[node]
        return self.bias + self.scale * total

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        if not kernels:
            return np.zeros(0)
        x = np.array([k.features() for k in kernels])
        return np.exp(self.predict_log(x)) * np.array([work(k) for k in kernels])

    def to_arrays(self, name: str) -> tuple[dict, dict[str, np.ndarray]]:
        info = {'kind': self.kind, 'target': 'log(cost / work)', 'features': list(FEATURE_NAMES),
                'ranges': self.ranges, 'n_train': self.n_train, 'n_trees': int(len(self.roots)),
                'n_nodes': int(len(self.left))}
        arrays = {f'{name}/{k}': getattr(self, k) for k in ('left', 'right', 'feature', 'threshold', 'value', 'roots')}
        arrays[f'{name}/scale'] = np.array([self.scale])
        arrays[f'{name}/bias'] = np.array([self.bias])
        return info, arrays

    @classmethod
    def from_arrays(cls, name: str, info: dict, arrays) -> 'ForestModel':
        if info.get('features') != list(FEATURE_NAMES):
            raise PredictorError(f'Model {name!r} was fitted on features {info.get("features")}, this version uses '
                                 f'{list(FEATURE_NAMES)}; rebuild the predictor (nni-biglittle predictor rebuild).')
        get = lambda k: arrays[f'{name}/{k}']  # noqa: E731
        return cls(get('left'), get('right'), get('feature'), get('threshold'), get('value'), get('roots'),
                   float(get('scale')[0]), float(get('bias')[0]), info.get('ranges'), info.get('n_train', 0))


def _sklearn_trees(reg):
    """(list of sklearn ``Tree`` objects, scale, bias) so that prediction = bias + scale * Σ tree values."""
    name = type(reg).__name__
    if hasattr(reg, 'tree_') and not hasattr(reg, 'estimators_'):
        return [reg.tree_], 1.0, 0.0
    if name in ('RandomForestRegressor', 'ExtraTreesRegressor', 'BaggingRegressor') and hasattr(reg, 'estimators_'):
        trees = [e.tree_ for e in reg.estimators_]
        return trees, 1.0 / len(trees), 0.0
    if name == 'GradientBoostingRegressor':
        init = getattr(reg, 'init_', None)
        if init is not None and init != 'zero' and not hasattr(init, 'constant_'):
            raise PredictorError('GradientBoostingRegressor with a non-constant init cannot be stored; use init=None.')
        bias = float(np.ravel(init.constant_)[0]) if init is not None and init != 'zero' else 0.0
        return [e.tree_ for e in reg.estimators_[:, 0]], float(reg.learning_rate), bias
    raise PredictorError(f'{name} cannot be stored in the predictor format: use a decision tree, random forest, '
                         'extra-trees or gradient-boosting regressor (or a LinearComponentModel).')


class LinearComponentModel:
    """``cost = coef · component_basis(kernel)`` with non-negative coefficients."""

    kind = 'linear'

    def __init__(self, coef: Sequence[float], ranges: dict[str, list[float]] | None = None, n_train: int = 0):
        coef = np.asarray(coef, dtype=float)
        if coef.shape != (len(BASIS_NAMES),):
            raise PredictorError(f'A linear component model needs {len(BASIS_NAMES)} coefficients {BASIS_NAMES}.')
        self.coef = coef
        self.ranges = ranges or {}
        self.n_train = int(n_train)

    @classmethod
    def fit(cls, kernels: Sequence[Kernel], costs: Sequence[float]) -> 'LinearComponentModel':
        """Per-kernel fit (non-negative least squares, relative error weighting)."""
        return cls.fit_sums([[k] for k in kernels], costs)[0]

    @classmethod
    def fit_sums(cls, networks: Sequence[Sequence[Kernel]], totals: Sequence[float],
                 intercept: bool = True) -> tuple['LinearComponentModel', float]:
        """Fit on whole-network totals: ``total = Σ_kernels coef · basis + intercept``.

        Rows are weighted by 1 / total so that the fit minimises relative error. Returns the model
        and the intercept (a per-inference overhead).
        """
        from scipy.optimize import nnls
        totals = np.asarray(totals, dtype=float)
        a = np.array([np.sum([component_basis(k) for k in net], axis=0) if net else np.zeros(len(BASIS_NAMES))
                      for net in networks])
        if intercept:
            a = np.hstack([a, np.ones((len(a), 1))])
        w = 1.0 / np.maximum(totals, 1e-12)
        col_scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
        sol, _ = nnls((a / col_scale) * w[:, None], totals * w, maxiter=50 * a.shape[1])
        sol = sol / col_scale
        coef = sol[:len(BASIS_NAMES)]
        flat = [k for net in networks for k in net]
        return cls(coef, ranges=_ranges(flat), n_train=len(networks)), float(sol[-1]) if intercept else 0.0

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        if not kernels:
            return np.zeros(0)
        return np.array([component_basis(k) for k in kernels]) @ self.coef

    def to_arrays(self, name: str) -> tuple[dict, dict[str, np.ndarray]]:
        info = {'kind': self.kind, 'basis': list(BASIS_NAMES), 'ranges': self.ranges, 'n_train': self.n_train,
                'coef': dict(zip(BASIS_NAMES, map(float, self.coef)))}
        return info, {f'{name}/coef': self.coef}

    @classmethod
    def from_arrays(cls, name: str, info: dict, arrays) -> 'LinearComponentModel':
        if info.get('basis') != list(BASIS_NAMES):
            raise PredictorError(f'Model {name!r} uses basis {info.get("basis")}, this version {list(BASIS_NAMES)}; '
                                 'rebuild the predictor.')
        return cls(arrays[f'{name}/coef'], info.get('ranges'), info.get('n_train', 0))


_MODEL_KINDS = {'forest': ForestModel, 'linear': LinearComponentModel}


@dataclass
class KernelPrediction:
    kernel: Kernel
    value: float
    route: str                 # model name, 'parts' or 'uncovered'
    extrapolated: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    """A model's predicted cost with the per-kernel breakdown."""

    total: float
    unit: str
    metric: str
    predictor: str
    overhead: float
    kernels: list[KernelPrediction]

    @property
    def uncovered(self) -> list[Kernel]:
        return [k.kernel for k in self.kernels if k.route == 'uncovered']

    @property
    def extrapolated(self) -> list[KernelPrediction]:
        return [k for k in self.kernels if k.extrapolated]

    def figure(self, source: str | None = None):
        """The total as an :class:`~.energy.Figure` labelled *predicted*, with the predictor as its source."""
        from nni_bigLittle.hw_predictors.energy import Figure
        return Figure(self.total, self.unit, 'predicted', source or f'predictor {self.predictor}')

    def by_type(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in self.kernels:
            out[k.kernel.type] = out.get(k.kernel.type, 0.0) + k.value
        return out


class KernelLatencyPredictor:
    """Sum-of-kernels cost predictor for one device (see the module docstring).

    ``predict(model, model_type)`` follows nn-Meter's ``nnMeterPredictor.predict`` so that the object
    can be handed to NNI's ``NnMeterProfiler``; the result is in ``metadata['unit']`` (ms for latency).
    """

    def __init__(self, models: dict[str, Any], routes: dict[str, str], metadata: dict[str, Any] | None = None,
                 overhead: float = 0.0):
        for kernel_type, target in routes.items():
            if target != 'parts' and target not in models:
                raise PredictorError(f'Route {kernel_type!r} -> {target!r} names no model; models: {sorted(models)}.')
        self.models = dict(models)
        self.routes = dict(routes)
        self.metadata = {'metric': 'latency', 'unit': 'ms', **(metadata or {})}
        self.overhead = float(overhead)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return str(self.metadata.get('name', self.metadata.get('device', 'predictor')))

    @property
    def unit(self) -> str:
        return str(self.metadata['unit'])

    @property
    def metric(self) -> str:
        return str(self.metadata['metric'])

    def __repr__(self) -> str:
        return (f'KernelLatencyPredictor({self.name!r}, {self.metric} in {self.unit}, '
                f'routes={self.routes}, overhead={self.overhead:.4g})')

    # ------------------------------------------------------------------ prediction
    def network_term(self, kernels: Sequence[Kernel]) -> float:
        """A whole-network cost that no per-kernel sum can express, from ``metadata['network_term']``.

        Kind ``weight_streaming`` (fitted by the local builder): ``ms_per_mb · W · sigmoid((W − center_mb) /
        width_mb)`` with ``W`` the network's fp32 weight megabytes — weights that no longer fit in the
        per-core L2 cache stream from L3 on every inference. Zero for predictors without the term.
        """
        return network_term_value(self.metadata.get('network_term'), kernels)

    def predict_kernels(self, kernels: Sequence[Kernel]) -> Prediction:
        items = [self._predict_one(k) for k in kernels]
        total = self.overhead + sum(i.value for i in items) + self.network_term(kernels)
        source = self.metadata.get('data_source')
        name = f'{self.name} ({source})' if source else self.name
        return Prediction(total, self.unit, self.metric, name, self.overhead, items)

    def _predict_one(self, kernel: Kernel) -> KernelPrediction:
        route = self.routes.get(kernel.type)
        if route is None and kernel.parts:
            route = 'parts'
        if route == 'parts':
            subs = [self._predict_one(p) for p in kernel.parts]
            flags = [f for s in subs for f in s.extrapolated]
            if any(s.route == 'uncovered' for s in subs):
                flags.append('some parts uncovered')
            return KernelPrediction(kernel, float(sum(s.value for s in subs)), 'parts', flags)
        if route is None:
            return KernelPrediction(kernel, 0.0, 'uncovered')
        model = self.models[route]
        return KernelPrediction(kernel, float(model.predict([kernel])[0]), route, _outside(kernel, model.ranges))

    def cost_many(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Costs of many kernels at once (one vectorised call per model): what searches use."""
        leaves: list[tuple[int, Kernel]] = []

        def expand(i: int, k: Kernel) -> None:
            route = self.routes.get(k.type, 'parts' if k.parts else None)
            if route == 'parts':
                for p in k.parts:
                    expand(i, p)
            elif route is not None:
                leaves.append((i, k))
        for i, k in enumerate(kernels):
            expand(i, k)
        out = np.zeros(len(kernels))
        by_route: dict[str, list[tuple[int, Kernel]]] = {}
        for i, k in leaves:
            by_route.setdefault(self.routes[k.type], []).append((i, k))
        for route, items in by_route.items():
            values = self.models[route].predict([k for _, k in items])
            np.add.at(out, [i for i, _ in items], values)
        return out

    def predict_model(self, model, model_type: str = 'torch', input_shape=None) -> Prediction:
        """Detect the kernels of a PyTorch or ONNX model and predict them (full breakdown)."""
        return self.predict_kernels(detect_kernels(model, model_type, input_shape))

    def predict(self, model, model_type: str = 'torch', input_shape=(1, 3, 224, 224), apply_nni: bool = False) -> float:
        """nn-Meter's interface: total predicted cost of ``model`` (``model_type`` 'torch' or 'onnx').

        ``input_shape`` is used for PyTorch models (and for ONNX inputs with a dynamic shape);
        ``apply_nni`` is accepted for compatibility and ignored (detection always traces with torch.fx).
        """
        if model_type not in ('torch', 'onnx'):
            raise PredictorError(f"model_type must be 'torch' or 'onnx', not {model_type!r}.")
        shape = input_shape if model_type == 'torch' else _dynamic_only(model, input_shape)
        return self.predict_model(model, model_type, shape).total

    def without_overhead(self) -> 'KernelLatencyPredictor':
        """The same predictor without the per-inference overhead: for profilers that call ``predict`` once
        per sub-module and add the results (NNI's ``NnMeterProfiler``), where the overhead would count
        once per sub-module instead of once per inference."""
        metadata = {k: v for k, v in self.metadata.items() if k != 'network_term'}
        return KernelLatencyPredictor(self.models, self.routes, metadata, overhead=0.0)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != '.npz':
            path = path.with_suffix('.npz')
        path.parent.mkdir(parents=True, exist_ok=True)
        infos, arrays = {}, {}
        for name, model in self.models.items():
            info, arr = model.to_arrays(name)
            infos[name] = info
            arrays.update(arr)
        meta = {'format': FORMAT, 'metadata': self.metadata, 'routes': self.routes, 'overhead': self.overhead,
                'models': infos}
        blob = np.frombuffer(json.dumps(meta, indent=1, default=_json_default).encode(), dtype=np.uint8)
        with open(path, 'wb') as fh:
            np.savez_compressed(fh, __meta__=blob, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> 'KernelLatencyPredictor':
        path = Path(path)
        if not path.exists():
            raise PredictorError(f'No predictor file at {path}.')
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data['__meta__']).decode())
                arrays = {k: data[k] for k in data.files if k != '__meta__'}
        except (OSError, ValueError, KeyError) as exc:
            raise PredictorError(f'{path} is not a predictor file ({exc}).') from exc
        if meta.get('format') != FORMAT:
            raise PredictorError(f'{path} has format {meta.get("format")!r}; this version reads {FORMAT!r}.')
        models = {}
        for name, info in meta['models'].items():
            kind = _MODEL_KINDS.get(info.get('kind'))
            if kind is None:
                raise PredictorError(f'{path}: model {name!r} has unknown kind {info.get("kind")!r}.')
            models[name] = kind.from_arrays(name, info, arrays)
        return cls(models, meta['routes'], meta['metadata'], meta.get('overhead', 0.0))

    def describe(self) -> str:
        m = self.metadata
        lines = [f'{self.name}: {m.get("metric")} ({m.get("unit")}) on {m.get("device")}, {m.get("runtime")} '
                 f'{m.get("precision", "")}'.rstrip(),
                 f'  data: {m.get("data_source")} ({m.get("n_measurements")} measurements)']
        for kernel_type, route in sorted(self.routes.items()):
            lines.append(f'  {kernel_type:<13} -> {route}')
        if self.overhead:
            lines.append(f'  overhead per inference: {self.overhead:.4g} {self.unit}')
        for note in m.get('notes', []):
            lines.append(f'  note: {note}')
        return '\n'.join(lines)


def network_term_value(term: dict[str, Any] | None, kernels: Sequence[Kernel]) -> float:
    """Evaluate a ``metadata['network_term']`` record on a network's kernels (0 without one)."""
    if not term or term.get('kind') != 'weight_streaming' or not term.get('ms_per_mb'):
        return 0.0
    w = sum(k.params for k in kernels) * 4 / 1e6  # fp32 weight megabytes
    x = float(np.clip((w - term['center_mb']) / term['width_mb'], -60, 60))
    return float(term['ms_per_mb'] * w / (1.0 + np.exp(-x)))


def _dynamic_only(model, input_shape):
    """ONNX models carry their own input shape; pass ``input_shape`` only when the input is dynamic."""
    if input_shape is None:
        return None
    try:
        import onnx
        proto = model if hasattr(model, 'graph') else (
            onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model), load_external_data=False))
        inits = {i.name for i in proto.graph.initializer}
        first = next(i for i in proto.graph.input if i.name not in inits)
        dims = first.type.tensor_type.shape.dim
        return input_shape if any(not d.HasField('dim_value') for d in dims) else None
    except (StopIteration, Exception):  # noqa: BLE001 - detection reports unreadable models itself
        return None


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.name
    raise TypeError(f'{type(obj).__name__} is not JSON serialisable')


def fit_kernel_predictor(samples: dict[str, tuple[Sequence[Kernel], Sequence[float]]], metadata: dict[str, Any],
                         regressor_factory: Callable[[], Any] | None = None, routes: dict[str, str] | None = None,
                         overhead: float = 0.0) -> KernelLatencyPredictor:
    """One forest per kernel type from per-kernel measurements (the builder's and TopHub's case).

    ``samples``: {kernel type: (kernels, costs)}. Types without samples stay routed to their parts
    (composites) or uncovered. ``regressor_factory()`` returns a fresh unfitted regressor.
    """
    models = {}
    for kernel_type, (kernels, costs) in samples.items():
        if len(kernels) < 3:
            warnings.warn(f'Only {len(kernels)} samples for {kernel_type!r}; not fitting a model for it.')
            continue
        models[kernel_type] = ForestModel.fit(kernels, costs,
                                              regressor_factory() if regressor_factory else None)
    all_routes = {t: t for t in models}
    all_routes.update(routes or {})
    n = sum(len(k) for k, _ in samples.values())
    return KernelLatencyPredictor(models, all_routes, {'n_measurements': n, **metadata}, overhead)


