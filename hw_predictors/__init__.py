"""Hardware latency / energy predictors, profilers and their NNI profiler adapters.

Names are imported lazily so that ``import nni_bigLittle.hw_predictors`` stays light (the NNI
bridge imports NNI, the profilers ONNX Runtime).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    'Kernel': 'kernels', 'detect_kernels': 'kernels', 'torch_to_onnx': 'kernels',
    'arch_kernels': 'arch_kernels',
    'KernelLatencyPredictor': 'predictor', 'ForestModel': 'predictor', 'LinearComponentModel': 'predictor',
    'PredictorError': 'predictor', 'regression_metrics': 'predictor',
    'load_predictor': 'devices', 'list_bundled': 'devices', 'rebuild_bundled': 'devices',
    'BigLittleCostProfiler': 'nni_bridge', 'ExpectedCostPenalty': 'nni_bridge', 'cost_filter': 'nni_bridge',
    'OnnxRuntimeProfiler': 'profilers', 'TensorRTProfiler': 'profilers', 'SSHProfiler': 'profilers',
    'ProfileResult': 'profilers', 'ProfilerError': 'profilers', 'ProfilerUnavailable': 'profilers',
    'Figure': 'energy', 'detect_energy_backends': 'energy', 'best_energy_backend': 'energy',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
