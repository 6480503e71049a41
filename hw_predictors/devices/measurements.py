"""Reading the measurement CSVs of the latency data folder (columns and values checked; errors name the
file and what is expected) and :class:`NetworkData`, the whole-network measurement record."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nni_bigLittle.hw_predictors.devices.common import FBNET_DIR, ICAS_DIR, TOPHUB_DIR, LatencyDataError
from nni_bigLittle.hw_predictors.kernels import Kernel

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


@dataclass
class NetworkData:
    """Whole-network measurements: kernels per network and one measured total each."""

    names: list[str]
    networks: list[list[Kernel]]
    targets: np.ndarray
    unit: str
    source_files: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
