"""Where predictors are looked up: the bundled folder, the user folder (``$NNI_BIGLITTLE_PREDICTORS``),
:func:`load_predictor` and :func:`list_bundled`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nni_bigLittle.hw_predictors.devices.common import predictor_filename
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor, PredictorError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / 'bundled'   # hw_predictors/bundled/
USER_DIR_ENV = 'NNI_BIGLITTLE_PREDICTORS'


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
