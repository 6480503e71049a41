"""The pipeline (``nni-biglittle run``): the stages in order, each resumed or skipped when done.

train (:mod:`~nni_bigLittle.app.stages.train`) -> search (:mod:`~nni_bigLittle.app.stages.search`) -> export
(:mod:`~nni_bigLittle.app.stages.export`) -> deploy (:mod:`~nni_bigLittle.app.stages.deploy`) -> report
(:mod:`~nni_bigLittle.app.stages.evaluate`); the configs are :mod:`nni_bigLittle.app.config`. The names of the
stages and configs are importable from here too, as they were in 0.1 (``nni_bigLittle.pipeline``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from nni_bigLittle.app.config import (TRAIN_DEFAULTS, ConfigError, load_config, resolve_pipeline_config,  # noqa: F401
                                      resolve_train_config, set_dotted)
from nni_bigLittle.app.runs import RunFolder
from nni_bigLittle.app.stages.deploy import deploy_stage
from nni_bigLittle.app.stages.evaluate import evaluate_stage
from nni_bigLittle.app.stages.export import export_bundle, export_stage, load_exported  # noqa: F401
from nni_bigLittle.app.stages.inputs import load_training_data  # noqa: F401
from nni_bigLittle.app.stages.search import format_fronts, front_record, search_stage  # noqa: F401
from nni_bigLittle.app.stages.train import train_supernet

__all__ = ['run_pipeline', 'TRAIN_DEFAULTS', 'ConfigError', 'load_config', 'resolve_train_config', 'set_dotted',
           'train_supernet', 'search_stage', 'evaluate_stage', 'export_stage', 'load_exported', 'export_bundle',
           'deploy_stage', 'format_fronts']


def run_pipeline(config: Mapping[str, Any], run_dir: str | os.PathLike | None = None, progress: bool = True,
                 base: str | os.PathLike = '.') -> dict[str, Any]:
    """train supernet (NNI ``NasExperiment`` + co-training strategy) -> multi-objective search per device
    -> export front models -> deploy (ONNX bundles, verified, benchmarked here) -> report (test split); each
    stage resumes or is skipped when done. Relative
    ``run_dir`` and ``train.data_root`` are taken from ``base`` (the config file's folder). Prints the
    Pareto fronts and the report table; returns the status."""
    cfg = resolve_pipeline_config(config)
    base = Path(base)
    run_path = Path(run_dir) if run_dir is not None else base / cfg['run_dir']
    train = cfg['train']
    if train.data_root is not None and not Path(train.data_root).is_absolute():
        train = train.replace(data_root=str((base / train.data_root).resolve()))
    from nni_bigLittle.data import load_dataset
    load_dataset(train.dataset, train.data_root, val_size=train.val_size, seed=train.seed,
                 augment='none')  # a missing dataset fails here, before anything starts
    stages = [('train', 'co-train the supernet'), ('search', 'Pareto search per device'),
              ('export', 'freeze front models'), ('deploy', 'ONNX bundles, verified and measured here'),
              ('report', 'test-split report')]
    started = time.time()
    for i, (stage, what) in enumerate(stages):
        print(f'[run] stage {i + 1}/{len(stages)}: {stage} ({what})', flush=True)
        if stage == 'train':
            train_supernet(train, run_path, progress=progress)
        elif stage == 'search':
            search_stage(run_path, progress=progress, **cfg['search'])
        elif stage == 'export':
            files = export_stage(run_path, count=cfg['export']['count'])['files']
            print(f'[run] exported {len(files)} models to {run_path / "export"}')
        elif stage == 'deploy':
            deploy_stage(run_path, progress=progress, **cfg['deploy'])
        else:
            evaluate_stage(run_path, count=cfg['report']['count'])
    print(format_fronts(run_path))
    run = RunFolder(run_path)
    print((run.results_dir / 'front_models.md').read_text())
    run.update_status(pipeline={'done': True, 'wall_s_last_invocation': round(time.time() - started, 1)})
    return run.status()
