"""The train stage: co-train a ``BigLittleSpace`` supernet through NNI.

``nni-biglittle cotrain CONFIG --run-dir DIR`` calls :func:`train_supernet`, which drives NNI:
``NasExperiment(BigLittleSpace(...), Lightning(CoTrainingModule(...), Trainer(...)), SandwichCoTraining(...))``.
Re-running the same command resumes from ``DIR/checkpoints/last.ckpt``; a finished run is not redone. The
config's keys are those of :mod:`nni_bigLittle.app.config`.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping

from nni_bigLittle.app.config import TrainConfig
from nni_bigLittle.app.runs import RunFolder, environment
from nni_bigLittle.app.stages.inputs import build_space, load_training_data

__all__ = ['train_supernet']


def train_supernet(config: Mapping[str, Any] | TrainConfig, run_dir: str | os.PathLike, progress: bool = True,
                   trace_steps: bool = False, on_epoch=None) -> dict[str, Any]:
    """Co-train a ``BigLittleSpace`` supernet (see the module docstring). Returns the status entry.

    ``on_epoch(row)`` is called with each epoch's metrics row (as written to ``metrics.csv``)."""
    cfg = TrainConfig.from_mapping(config)
    run = RunFolder(run_dir)
    resumed = run.open(cfg.to_dict(), ignore=('threads',))
    done = run.status().get('train', {})
    if done.get('done'):
        print(f'[cotrain] {run.path} is complete (supernet: {done["supernet"]}); nothing to do.')
        return done

    import torch
    import nni_bigLittle._nni_compat  # noqa: F401
    import nni.nas.strategy  # noqa: F401  (NNI import order: before the one-shot strategies)
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from nni.nas.experiment import NasExperiment
    from torch.utils.data import DataLoader
    from nni_bigLittle.strategies.cotraining import COTRAINING_STRATEGIES, CoTrainingModule, ResumableLoader
    from nni_bigLittle.training import make_trainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    splits = load_training_data(cfg)
    space = build_space(cfg.space, splits.num_classes, splits.resolution)
    train_loader = ResumableLoader(splits.train, cfg.batch_size, seed=cfg.seed)
    val_loader = DataLoader(splits.val, batch_size=256, shuffle=False)
    checkpoint = run.last_checkpoint
    if resumed and checkpoint is not None:
        print(f'[cotrain] resuming {run.path} from {checkpoint.name}')
    elif resumed:
        print(f'[cotrain] {run.path} has no checkpoint yet; starting from scratch.')
    module = CoTrainingModule(**cfg.optimizer, loss=dict(cfg.loss))
    trainer = make_trainer(cfg.epochs, checkpoints=run.checkpoints, checkpoint_every=cfg.checkpoint_every,
                           progress=progress, limit_train_batches=cfg.limit_train_batches, trainer_class=Trainer,
                           root=run.path)
    evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)
    started = time.time()
    sessions = list(done.get('sessions', [])) + [{'environment': environment(cfg.threads), 'wall_s': 0.0}]

    def record(row: Mapping[str, Any] | None = None) -> None:
        """Per-epoch metrics row, and the wall time of every invocation so far (a killed one keeps
        the time up to its last epoch end)."""
        if row is not None:
            run.upsert_metrics(row)
            if on_epoch is not None:
                on_epoch(dict(row))
        sessions[-1]['wall_s'] = round(time.time() - started, 1)
        run.update_status(train={**run.status().get('train', {}), 'sessions': sessions,
                                 'wall_s': round(sum(s['wall_s'] for s in sessions), 1)})

    common = dict(seed=cfg.seed, resume_from=str(checkpoint) if checkpoint else None,
                  metrics_callback=record, trace_file=str(run.path / 'steps.csv') if trace_steps else None)
    strategy = COTRAINING_STRATEGIES.get(cfg.strategy)(**cfg.strategy_options, **common)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(run.path / 'nni')
    run.update_status(train={'done': False})
    record()
    try:
        experiment.run()
    finally:
        experiment.stop()
        record()
    supernet_path = run.supernet_path
    space.save(supernet_path, config=cfg.to_dict())
    status = {**run.status()['train'], 'done': True, 'supernet': supernet_path.name,
              'epochs': cfg.epochs, 'final_metrics': (run.read_metrics() or [{}])[-1]}
    run.update_status(train=status)
    print(f'[cotrain] done in {status["wall_s"] / 60:.1f} min of wall time; supernet saved to {supernet_path}')
    return status
