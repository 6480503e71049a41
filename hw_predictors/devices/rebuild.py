"""Fitting bundled predictors from the latency data folder: one (:func:`build_predictor`) or all of them
into a folder with the fit report (:func:`rebuild_bundled`)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from nni_bigLittle.hw_predictors.devices.common import (
    FBNET_DIR, ICAS_DIR, TOPHUB_DIR, FitReport, LatencyDataError, _Context, _stem,
)
from nni_bigLittle.hw_predictors.devices.fit_report import REPORT_NAME, write_fit_report
from nni_bigLittle.hw_predictors.devices.lookup import BUNDLED_DIR
from nni_bigLittle.hw_predictors.devices.registry import DEVICES, DeviceSpec
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor, PredictorError


def _select(names: Iterable[str] | None) -> list[DeviceSpec]:
    if names is None:
        return list(DEVICES.values())
    chosen: list[DeviceSpec] = []
    for name in names:
        stem = str(name)[:-4] if str(name).endswith('.npz') else str(name)
        hits = [s for s in DEVICES.values() if stem in (s.key, s.name)]
        if not hits:
            raise PredictorError(f'No bundled predictor {name!r}; known: {sorted(DEVICES)}.')
        chosen += [h for h in hits if h not in chosen]
    return chosen


def build_predictor(name: str, data_root: str | Path, metric: str = 'latency', extra_checks: bool = True,
                    log: Callable[[str], None] | None = None) -> tuple[KernelLatencyPredictor, FitReport]:
    """Fit one bundled predictor from the data folder (held-out evaluation, then refit on all data)."""
    key = _stem(name, metric)
    if key not in DEVICES:
        raise PredictorError(f'No bundled predictor {key!r}; known: {sorted(DEVICES)}.')
    ctx = _Context(data_root, log or (lambda _msg: None), extra_checks)
    t0 = time.perf_counter()
    predictor, report = DEVICES[key].builder(ctx)
    report.seconds = time.perf_counter() - t0
    return predictor, report


def rebuild_bundled(data_root: str | Path, out_dir: str | Path = BUNDLED_DIR, names: Sequence[str] | None = None,
                    progress: bool = True, write_report: bool | None = None) -> list[FitReport]:
    """Refit the bundled predictors from ``data_root`` (the folder holding the three data sets) into ``out_dir``.

    ``names``: predictor names (``'raspberry_pi_4'``: all its metrics) or file stems
    (``'jetson_nano_trt_fp32.energy'``); default all. The Markdown fit report is written to
    ``out_dir/FIT_REPORT.md`` when all predictors are rebuilt (``write_report`` overrides).
    """
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir():
        raise LatencyDataError(f'{data_root} is not a folder; expected the latency data folder holding {ICAS_DIR}/, '
                        f'{TOPHUB_DIR}/ and {FBNET_DIR}/ (e.g. ../shared/data/latency).')
    specs = _select(names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda _msg: None)
    reports = []
    t_all = time.perf_counter()
    for spec in specs:
        log(f'[{spec.key}] {spec.description}')
        predictor, report = build_predictor(spec.name, data_root, spec.metric, log=log)
        report.path = predictor.save(out_dir / spec.filename)
        log(f'  held-out: MAPE {report.heldout["mape"]:.2f} %, within ±10 % {100 * report.heldout["within_10"]:.1f} % '
            f'(FLOPs baseline {report.baseline["mape"]:.2f} % / {100 * report.baseline["within_10"]:.1f} %); '
            f'{report.seconds:.1f} s -> {report.path}')
        reports.append(report)
    total = time.perf_counter() - t_all
    if write_report if write_report is not None else names is None:
        path = write_fit_report(reports, out_dir / REPORT_NAME, runtime_s=total)
        log(f'fit report -> {path}')
    return reports
