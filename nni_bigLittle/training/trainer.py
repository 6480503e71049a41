"""The Trainer factory and :func:`fit`: Lightning runs the loop, writes ``last.ckpt`` atomically, shows
progress and logs per-epoch metrics to CSV."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from nni_bigLittle.training.module import ClassifierModule, LossFn
from nni_bigLittle.training.recipe import Recipe

__all__ = ['AtomicCheckpoint', 'make_trainer', 'FitResult', 'fit', 'LAST_CHECKPOINT']

LAST_CHECKPOINT = 'last.ckpt'


class AtomicCheckpoint(pl.Callback):
    """``<folder>/last.ckpt`` at each epoch end and, with ``every``, every ``every`` training steps; written to
    a temporary file and renamed, so a kill never leaves a truncated checkpoint."""

    def __init__(self, folder: str | os.PathLike, every: int | None = None):
        self.folder, self.every = Path(folder), every

    def _save(self, trainer: pl.Trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LAST_CHECKPOINT
        tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        trainer.save_checkpoint(str(tmp), weights_only=False)  # the full state, for resume
        os.replace(tmp, path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)


def make_trainer(epochs: int, *, checkpoints: str | os.PathLike | None = None, checkpoint_every: int | None = None,
                 log_dir: str | os.PathLike | None = None, progress: bool = True,
                 limit_train_batches: int | None = None, limit_val_batches: int | None = None,
                 callbacks: Sequence[pl.Callback] = (), trainer_class: type = pl.Trainer,
                 root: str | os.PathLike | None = None, **options: Any) -> pl.Trainer:
    """A Trainer of the package's recipe: ``epochs`` epochs on the GPU when there is one (else the CPU), a
    progress bar, an atomic ``last.ckpt`` in ``checkpoints`` (each epoch end, and every ``checkpoint_every``
    steps), the per-epoch metrics in ``<log_dir>/metrics.csv``. ``trainer_class`` is NNI's traced ``Trainer``
    when NNI's ``Lightning`` evaluator drives it."""
    all_callbacks = list(callbacks)
    if checkpoints is not None:
        all_callbacks.append(AtomicCheckpoint(checkpoints, checkpoint_every))
    logger = False
    if log_dir is not None:
        from pytorch_lightning.loggers import CSVLogger
        logger = CSVLogger(save_dir=str(log_dir), name='', version='')
    return trainer_class(
        max_epochs=epochs, accelerator='gpu' if torch.cuda.is_available() else 'cpu', devices=1,
        limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches, logger=logger,
        log_every_n_steps=1, enable_checkpointing=False, callbacks=all_callbacks, num_sanity_val_steps=0,
        enable_progress_bar=progress, enable_model_summary=False,
        default_root_dir=str(root or checkpoints or log_dir or Path.cwd()), **options)


@dataclass
class FitResult:
    wall_s: float  # training time, summed over every invocation that trained this network
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's logged metrics


def fit(model: nn.Module, train_loader, *, epochs: int, recipe: Recipe | None = None, folder: str | os.PathLike | None = None,
        val_loader=None, loss_fn: LossFn | None = None, eval_fn=None, progress: bool = True,
        limit_train_batches: int | None = None, limit_val_batches: int | None = None,
        callbacks: Sequence[pl.Callback] = ()) -> FitResult:
    """Train ``model`` in place with the recipe for ``epochs`` epochs (see :class:`ClassifierModule`).

    With a ``folder``, ``<folder>/last.ckpt`` is written at every epoch end and a later call resumes from it
    (a finished training returns at once), and ``<folder>/metrics.csv`` holds the per-epoch metrics. The model
    is left on the CPU in eval mode (evaluation and export run there)."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f'epochs must be a positive int, got {epochs!r}.')
    module = ClassifierModule(model, recipe, loss_fn=loss_fn, eval_fn=eval_fn)
    folder = Path(folder) if folder is not None else None
    trainer = make_trainer(epochs, checkpoints=folder, log_dir=folder, progress=progress,
                           limit_train_batches=limit_train_batches,
                           limit_val_batches=limit_val_batches if val_loader is not None else 0,
                           callbacks=callbacks, root=folder)
    checkpoint = folder / LAST_CHECKPOINT if folder is not None and (folder / LAST_CHECKPOINT).is_file() else None
    with warnings.catch_warnings():
        # the loaders hold preloaded tensors: workers would only compete for the cores
        warnings.filterwarnings('ignore', message='.*does not have many workers.*')
        warnings.filterwarnings('ignore', message='.*no `val_dataloader`.*')  # validation is optional here
        warnings.filterwarnings('ignore', message='.*isinstance.treespec, LeafSpec.*')  # Lightning vs newer torch
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(checkpoint) if checkpoint else None)
    model.to('cpu').eval()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return FitResult(wall_s=module.wall_s, epochs=epochs, metrics=metrics)
