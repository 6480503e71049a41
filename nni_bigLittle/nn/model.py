"""The standalone dynamic model: a frozen big/little pair with its router (plain PyTorch, no NNI).

``forward(x)`` runs both networks (for training and evaluation of both heads);
``infer(x)`` is the input-adaptive path: little network, router, and the big tail only for the
escalated inputs, resumed from the cached fork features.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from nni_bigLittle.nn.arch import ArchConfig
from nni_bigLittle.nn.ops import ClassifierHead, ConvBNAct, Stage
from nni_bigLittle.nn.router import Router, escalation_mask

__all__ = ['BigLittleOutput', 'BigLittleForward', 'LittleNetwork', 'BigLittleModel', 'recalibrate_batchnorm']


class BigLittleOutput(NamedTuple):
    little_logits: torch.Tensor
    big_logits: torch.Tensor
    little_features: torch.Tensor  # pooled little head features (input of the learned router)
    confidence: torch.Tensor       # router confidence per input


class BigLittleForward:
    """Forward logic shared by the supernet (``BigLittleSpace``) and the frozen ``BigLittleModel``.

    Subclasses provide ``stem``, ``trunk``, ``big_head``, ``router`` and ``_little(features)``.
    """

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[stem output, trunk stage 0 output, ..., last stage output]``; entry ``f`` feeds fork ``f``."""
        features = [self.stem(x)]
        for stage in self.trunk:
            features.append(stage(features[-1]))
        return features

    def forward_all(self, x: torch.Tensor) -> BigLittleOutput:
        features = self.trunk_features(x)
        little_logits, little_features = self._little(features)
        big_logits, _ = self.big_head(features[-1])
        return BigLittleOutput(little_logits, big_logits, little_features, self.router(little_logits, little_features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_all(x)
        return out.little_logits, out.big_logits


class LittleNetwork(nn.Module):
    """Little branch after the fork: its stages and head. Returns ``(logits, pooled_features)``."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.stages = nn.ModuleList([Stage(cfg) for cfg in arch.little])
        self.head = ClassifierHead(arch.little_head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class BigLittleModel(BigLittleForward, nn.Module):
    """A frozen, deployable big/little pair. Build it with ``BigLittleSpace.freeze(sample)``
    (weights inherited from the supernet) or :meth:`from_sample` (fresh weights)."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        self.arch = arch
        self.fork = arch.fork
        self.stem = ConvBNAct.from_config(arch.stem)
        self.trunk = nn.ModuleList([Stage(cfg) for cfg in arch.trunk])
        self.little = LittleNetwork(arch)
        self.big_head = ClassifierHead(arch.big_head)
        self.router = Router(arch.router)

    @classmethod
    def from_sample(cls, spec, sample: dict[str, Any]) -> 'BigLittleModel':
        """A freshly initialised model for ``sample`` of ``spec`` (a ``SpaceSpec``)."""
        return cls(spec.decode(sample))

    @property
    def sample(self) -> dict[str, Any]:
        return dict(self.arch.sample)

    @property
    def threshold(self) -> float:
        return self.router.threshold

    def _little(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.little(features[self.fork])

    def fork_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.trunk[:self.fork]:
            x = stage(x)
        return x

    def big_tail(self, fork_features: torch.Tensor) -> torch.Tensor:
        """Big logits from the cached fork features (what an escalated input costs extra)."""
        x = fork_features
        for stage in self.trunk[self.fork:]:
            x = stage(x)
        return self.big_head(x)[0]

    def little_path(self) -> nn.Module:
        """Input -> little logits (stem, shared trunk, little branch, head); shares this model's weights."""
        return _LittlePath(self)

    def big_path(self) -> nn.Module:
        """Input -> big logits (stem, whole trunk, big head): the static big network; shares weights."""
        return _BigPath(self)

    def big_tail_module(self) -> nn.Module:
        """Fork features -> big logits: what an escalated input runs in addition; shares weights."""
        return _BigTail(self)

    @torch.no_grad()
    def infer(self, x: torch.Tensor, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input-adaptive inference. Returns ``(pred, escalated)``, both of shape ``(batch,)``.

        Kept inputs get the little network's argmax; escalated ones the big network's, computed
        only for them, from the cached fork features. ``threshold`` overrides the router's.
        """
        if self.training:
            raise RuntimeError('infer() needs eval mode (batch norm would use batch statistics of the escalated '
                               'subset); call model.eval() first.')
        shared = self.fork_features(x)
        little_logits, little_features = self.little(shared)
        confidence = self.router(little_logits, little_features)
        escalated = escalation_mask(confidence, self.router.threshold if threshold is None else float(threshold))
        pred = little_logits.argmax(dim=1)
        if bool(escalated.any()):
            pred[escalated] = self.big_tail(shared[escalated]).argmax(dim=1)
        return pred, escalated


class _LittlePath(nn.Module):
    def __init__(self, model: BigLittleModel):
        super().__init__()
        self.stem, self.shared, self.little = model.stem, nn.Sequential(*model.trunk[:model.fork]), model.little

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.little(self.shared(self.stem(x)))[0]


class _BigPath(nn.Module):
    def __init__(self, model: BigLittleModel):
        super().__init__()
        self.stem, self.trunk, self.head = model.stem, nn.Sequential(*model.trunk), model.big_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.stem(x)))[0]


class _BigTail(nn.Module):
    def __init__(self, model: BigLittleModel):
        super().__init__()
        self.trunk, self.head = nn.Sequential(*model.trunk[model.fork:]), model.big_head

    def forward(self, fork_features: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(fork_features))[0]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, forward=None) -> nn.Module:
    """Re-estimate every batch norm's running statistics of ``model`` on ``batches`` (Once-for-All's
    BN re-calibration of a subnet cut out of a supernet). ``forward(model, x)`` defaults to ``model(x)``.

    Statistics become the exact average over the given batches; momentum and train/eval mode are restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average = plain mean over the batches
        model.train()
        seen = 0
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            (forward or (lambda mdl, inp: mdl(inp)))(model, x)
            seen += 1
        if seen == 0:
            raise ValueError('recalibrate_batchnorm needs at least one batch.')
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return model
