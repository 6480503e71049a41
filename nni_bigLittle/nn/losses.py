"""The joint co-training loss of a big/little pair.

``L = alpha * L_big + beta * L_little + gamma * L_routing + lam * L_consistency``

- ``L_big``: cross-entropy of the big head.
- ``L_little``: ``(1 - d) * CE(little, y) + d * T^2 * KL(teacher || little)`` with in-place
  distillation (Yu et al., BigNAS 2020; Cai et al., Once-for-All 2020): the teacher is the big
  network's *detached* soft prediction, by default the pair's own big head, in the sandwich rule
  the largest big network of the batch.
- ``L_routing``: the learned router predicts "the little answer is right" (BCE on its pre-sigmoid
  output; the router reads detached little features so this term never bends the little
  network). Difficulty-aware weights: inputs the little network gets wrong but the big one gets
  right are where escalation pays, weight ``escalate_gain`` (2); inputs both get wrong cannot be
  fixed by escalating, weight ``hopeless`` (0.5); all others 1.
- ``L_consistency``: on the inputs the active router would *keep* (confidence >= threshold), the
  symmetric KL between the little and big predictions, so the answer an input receives does not
  depend much on whether it was escalated. Zero when no input is kept.

Defaults (``LossWeights()``): ``alpha = beta = 1``, ``gamma = 0.5``, ``lam = 0.1``,
distillation share ``d = 0.5`` at temperature ``T = 1``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from nni_bigLittle.nn.router import escalation_mask, router_logit

__all__ = ['LossWeights', 'JointLoss', 'distillation', 'routing_loss', 'consistency_loss', 'active_threshold']


@dataclass(frozen=True)
class LossWeights:
    alpha: float = 1.0           # big cross-entropy
    beta: float = 1.0            # little (cross-entropy + distillation)
    gamma: float = 0.5           # routing (learned router)
    lam: float = 0.1             # consistency on kept inputs
    distill: float = 0.5         # share d of distillation in the little term
    temperature: float = 1.0     # distillation temperature T
    escalate_gain: float = 2.0   # routing weight where little is wrong and big right
    hopeless: float = 0.5        # routing weight where both are wrong
    label_smoothing: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'Loss weight {f.name} must be a number >= 0, got {value!r}.')
        if self.distill > 1:
            raise ValueError(f'distill is a share in [0, 1], got {self.distill}.')
        if self.temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {self.temperature}.')

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> 'LossWeights':
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'Unknown loss weight(s) {unknown}; valid: {sorted(known)}.')
        return cls(**{key: float(value) for key, value in values.items()})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, batch mean; the teacher is detached."""
    t = temperature
    teacher = F.softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), teacher, reduction='batchmean') * t * t


def routing_loss(mlp: torch.nn.Module, little_logits: torch.Tensor, little_features: torch.Tensor,
                 big_logits: torch.Tensor, target: torch.Tensor, escalate_gain: float = 2.0,
                 hopeless: float = 0.5) -> torch.Tensor:
    """Difficulty-aware BCE training the learned router to predict that the little answer is right."""
    little_ok = little_logits.argmax(1) == target
    big_ok = big_logits.argmax(1) == target
    weight = torch.ones_like(little_ok, dtype=little_logits.dtype)
    weight = torch.where(~little_ok & big_ok, torch.full_like(weight, escalate_gain), weight)
    weight = torch.where(~little_ok & ~big_ok, torch.full_like(weight, hopeless), weight)
    logit = router_logit(mlp, little_logits.detach(), little_features.detach())
    return F.binary_cross_entropy_with_logits(logit, little_ok.to(logit.dtype), weight=weight)


def consistency_loss(little_logits: torch.Tensor, big_logits: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between little and big predictions on the ``kept`` inputs (0 when none is kept)."""
    if not bool(kept.any()):
        return little_logits.sum() * 0.0
    log_little = F.log_softmax(little_logits[kept], dim=1)
    log_big = F.log_softmax(big_logits[kept], dim=1)
    forward = F.kl_div(log_little, log_big, log_target=True, reduction='batchmean')
    backward = F.kl_div(log_big, log_little, log_target=True, reduction='batchmean')
    return 0.5 * (forward + backward)


class JointLoss:
    """``JointLoss(weights)(output, target, teacher_logits=None, router=None)`` -> ``(loss, parts)``.

    ``output`` is a :class:`~nni_bigLittle.nn.model.BigLittleOutput` (``forward_all`` of the supernet or
    of a frozen model); ``router`` the module holding the learned router's ``mlp`` and the active
    policy/threshold (``ElasticRouter`` or ``Router``); without it the routing and consistency terms
    are skipped. ``parts`` holds detached floats of every term for logging.
    """

    def __init__(self, weights: LossWeights | Mapping[str, Any] | None = None):
        self.weights = weights if isinstance(weights, LossWeights) else LossWeights.from_dict(weights)

    def __call__(self, output, target: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                 router: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        big = F.cross_entropy(output.big_logits, target, label_smoothing=w.label_smoothing)
        little_ce = F.cross_entropy(output.little_logits, target, label_smoothing=w.label_smoothing)
        teacher = output.big_logits if teacher_logits is None else teacher_logits
        kd = distillation(output.little_logits, teacher, w.temperature) if w.distill > 0 else little_ce * 0.0
        little = (1.0 - w.distill) * little_ce + w.distill * kd
        loss = w.alpha * big + w.beta * little
        parts = {'loss_big': float(big.detach()), 'loss_little': float(little_ce.detach()),
                 'loss_distill': float(kd.detach())}
        mlp = getattr(router, 'mlp', None)
        if router is not None and mlp is not None and w.gamma > 0:
            route = routing_loss(mlp, output.little_logits, output.little_features, output.big_logits, target,
                                 w.escalate_gain, w.hopeless)
            loss = loss + w.gamma * route
            parts['loss_routing'] = float(route.detach())
        threshold = active_threshold(router) if router is not None else None
        if threshold is not None and w.lam > 0:
            kept = ~escalation_mask(output.confidence.detach(), threshold)  # the inputs the little network answers
            consistency = consistency_loss(output.little_logits, output.big_logits, kept)
            loss = loss + w.lam * consistency
            parts['loss_consistency'] = float(consistency.detach())
        parts['loss'] = float(loss.detach())
        return loss, parts


def active_threshold(router: Any) -> float | None:
    """The threshold the router applies now; ``None`` when it has none (a relaxed router of DARTS-like
    strategies, or a supernet router before any sample was activated)."""
    try:
        value = getattr(router, 'active_threshold', None)
    except RuntimeError:  # ElasticRouter before activation
        return None
    if value is None:
        value = getattr(router, 'threshold', None)
    return None if value is None else float(value)
