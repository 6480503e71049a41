"""Fitting helpers shared by the data sources: the seeded split, forests, batched network totals, the
FLOPs-only baseline, rounded metrics and weighted non-negative least squares."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from nni_bigLittle.hw_predictors.devices.common import SEED, TEST_FRACTION
from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor, regression_metrics

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
