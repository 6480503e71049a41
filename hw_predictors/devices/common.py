"""What the data-source modules share: the data folder layout, the split seed, :class:`LatencyDataError`,
:class:`FitReport`, predictor file names and the context (and metadata) a builder gets."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nni_bigLittle.hw_predictors.predictor import PredictorError

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


def _stem(name: str, metric: str) -> str:
    return name if metric == 'latency' else f'{name}.{metric}'


def predictor_filename(name: str, metric: str = 'latency') -> str:
    """``<name>.npz`` for latency, ``<name>.<metric>.npz`` otherwise (``<name>.energy.npz``)."""
    if metric not in METRICS:
        raise PredictorError(f'Unknown metric {metric!r}; use one of {list(METRICS)}.')
    return _stem(name, metric) + '.npz'


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
