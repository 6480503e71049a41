"""One network trained with the package's recipe, as a LightningModule."""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from nni_bigLittle.training.recipe import Recipe, configure_sgd

__all__ = ['ClassifierModule', 'LossFn', 'rng_state', 'set_rng_state']

# loss_fn(model, x, y) -> loss tensor; the default is cross-entropy on model(x)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x)
    if isinstance(out, (list, tuple)):  # several exits: the last one is the network's answer
        out = out[-1]
    return {'acc': (out.argmax(1) == y).float().mean()}


def rng_state() -> dict[str, Any]:
    """Torch and numpy global RNG states as tensors and plain types (Lightning loads checkpoints with
    ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {'torch': torch.get_rng_state(),
            'numpy': (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class ClassifierModule(pl.LightningModule):
    """Trains ``model`` with :class:`Recipe` and ``loss_fn(model, x, y)`` (cross-entropy by default).

    Logs per epoch ``train_loss`` and, with a validation loader, the ``val_*`` entries of
    ``eval_fn(model, x, y) -> {name: value}`` (default: ``val_acc`` of the model's output, or of its
    last output when it returns several). Inputs go in channels-last (about 2.5x faster on CPU,
    benchmarks/results/train_step.csv). The global RNGs (augmentation) and the summed training wall time
    are kept in the checkpoint, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, model: nn.Module, recipe: Recipe | None = None, loss_fn: LossFn | None = None,
                 eval_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
                 channels_last: bool = True):
        super().__init__()
        self.model = model
        self.recipe = recipe or Recipe()
        self.loss_fn = loss_fn or _cross_entropy
        self.eval_fn = eval_fn or _accuracy
        self.channels_last = channels_last
        self.wall_s = 0.0  # training time of finished epochs, summed over every invocation (kept in the checkpoint)
        self._epoch_start: float | None = None  # set while an epoch trains
        self._last_batch_end = 0.0
        self._loss_sum, self._seen = 0.0, 0

    def forward(self, x):
        return self.model(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = self._last_batch_end = time.time()
        self._loss_sum, self._seen = 0.0, 0

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._last_batch_end = time.time()

    @property
    def train_loss(self) -> float:
        """The mean training loss of the current (or last) epoch."""
        return self._loss_sum / max(1, self._seen)

    def _elapsed(self) -> float:
        """Training time of the current epoch up to its last finished batch: the epoch-end checkpoint (written
        before this module's ``on_train_epoch_end``) and that hook count the same time."""
        return 0.0 if self._epoch_start is None else self._last_batch_end - self._epoch_start

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.model, self.prepare(x), y)
        self._loss_sum += float(loss.detach()) * len(y)
        self._seen += len(y)
        self.log('train_loss', loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        elapsed = self._elapsed()
        self.wall_s += elapsed
        self._epoch_start = None
        self.log('epoch_time_s', elapsed, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        values = self.eval_fn(self.model, self.prepare(x), y)
        self.log_dict({f'val_{k}': v for k, v in values.items()}, on_step=False, on_epoch=True, prog_bar=True,
                      batch_size=len(y))

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        return configure_sgd(self.model.parameters(), self.recipe, total, per_epoch)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint['biglittle_rng'] = rng_state()
        # the epoch-end checkpoint is written before this module's on_train_epoch_end: count the epoch in it
        checkpoint['biglittle_wall_s'] = self.wall_s + self._elapsed()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if 'biglittle_rng' in checkpoint:
            set_rng_state(checkpoint['biglittle_rng'])
        self.wall_s = float(checkpoint.get('biglittle_wall_s', 0.0))
