"""Accuracy and escalation of a (little, big) pair at an operating point, threshold calibration and the
metrics a trial or a report shows (:mod:`~nni_bigLittle.evaluation.pairs`), and searched fronts on disk
(:mod:`~nni_bigLittle.evaluation.front`).

Names are imported lazily, so that reading a front file does not load torch.
"""
from __future__ import annotations

import importlib

_PAIRS = ('PairOutputs', 'OperatingPoint', 'collect_outputs', 'subnet_outputs', 'operating_point', 'pair_metrics',
          'evaluate_pair', 'mnasnet_reward', 'MNASNET_EXPONENT', 'load_supernet', 'energy_devices')
_FRONT = ('FRONT_FILE', 'TUNER_FRONT_FILE', 'FrontError', 'write_front', 'read_front', 'searched_folders',
          'entry_point')
_EXPORTS = {**{name: 'pairs' for name in _PAIRS}, **{name: 'front' for name in _FRONT}}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
