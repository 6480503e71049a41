"""The optimizer recipe every training of the package uses."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from nni_bigLittle.errors import ConfigError

__all__ = ['Recipe', 'configure_sgd', 'warmup_cosine']


@dataclass(frozen=True)
class Recipe:
    """SGD with (Nesterov) momentum, weight decay on conv/linear weights only (not on BN or biases),
    ``warmup_epochs`` of linear warm-up then cosine decay to zero, stepped every batch; gradients clipped to
    ``grad_clip`` (L2 norm, ``None``: no clipping)."""
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    nesterov: bool = True
    warmup_epochs: float = 1.0
    grad_clip: float | None = 5.0

    def __post_init__(self):
        for name in ('learning_rate', 'momentum', 'weight_decay', 'warmup_epochs', 'grad_clip'):
            value = getattr(self, name)
            if not (value is None and name == 'grad_clip') and (
                    not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)):
                raise ConfigError(f'{name} must be a number, got {value!r}.')
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f'nesterov must be true or false, got {self.nesterov!r}.')
        if not self.learning_rate > 0:
            raise ConfigError(f'learning_rate must be > 0, got {self.learning_rate!r}.')
        if not 0 <= self.momentum < 1:
            raise ConfigError(f'momentum must be in [0, 1), got {self.momentum!r}.')
        if not self.weight_decay >= 0:
            raise ConfigError(f'weight_decay must be >= 0, got {self.weight_decay!r}.')
        if not self.warmup_epochs >= 0:
            raise ConfigError(f'warmup_epochs must be >= 0, got {self.warmup_epochs!r}.')
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f'grad_clip must be > 0 or null, got {self.grad_clip!r}.')

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> 'Recipe':
        """From a config's ``optimizer:`` mapping; unknown keys are an error that lists the valid ones."""
        options = dict(options or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f'Unknown optimizer key(s) {unknown}; valid: {valid}.')
        return cls(**options)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up over ``warmup_steps``, then cosine to zero."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def configure_sgd(parameters: Iterable[torch.nn.Parameter], recipe: Recipe, total_steps: int,
                  steps_per_epoch: int) -> dict[str, Any]:
    """The optimizer and per-step schedule of ``recipe``, in the form Lightning's ``configure_optimizers``
    returns."""
    decay, no_decay = [], []
    for p in parameters:
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    optimizer = torch.optim.SGD([{'params': decay, 'weight_decay': recipe.weight_decay},
                                 {'params': no_decay, 'weight_decay': 0.0}],
                                lr=recipe.learning_rate, momentum=recipe.momentum, nesterov=recipe.nesterov)
    total = max(1, int(total_steps))
    warmup = min(total - 1, int(round(recipe.warmup_epochs * max(1, steps_per_epoch))))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
    return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'}}
