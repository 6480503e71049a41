"""The router: how confident the little network is, when to escalate, and how to pick the threshold.

Every policy maps the little network's output to a *confidence* in [0, 1]; an input is escalated
to the big network when its confidence is below the threshold ``tau``:

- ``max_softmax``: the largest softmax probability;
- ``entropy``: ``1 - H(p) / log(C)``;
- ``margin``: difference of the two largest probabilities;
- ``learned``: an MLP on (little head features, sorted probabilities) predicting that the little
  answer is right (trained by the routing loss of the co-training strategies).

``tau <= 0`` never escalates and ``tau >= 1`` always escalates: :func:`escalation_mask` is THE routing
rule, for torch tensors and numpy arrays alike; evaluation, export, the report and the trials call it, and
the stand-alone bundle runner's numpy copy is held to it by a test. :func:`calibrate_threshold` picks
``tau`` on a validation split for a target escalation rate or a target accuracy (numpy only), and a
:class:`RouterSetting` records the policy, ``tau`` and what it was calibrated for, on which split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nni_bigLittle.nn.arch import ROUTER_POLICIES, RouterConfig
from nni_bigLittle.errors import BigLittleError

__all__ = [
    'router_confidence', 'router_logit', 'escalation_mask', 'ALWAYS', 'NEVER', 'build_router_mlp', 'Router',
    'RouterSetting', 'CalibrationResult', 'CalibrationError', 'calibrate_threshold', 'dynamic_accuracy',
]

ALWAYS = 1.0            # a threshold at which every input escalates
NEVER = float('-inf')   # a threshold no confidence is below: the little network answers every input


def build_router_mlp(in_features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def router_features(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Input of the learned router: little head features and the sorted little probabilities."""
    probs = logits.softmax(dim=1).sort(dim=1, descending=True).values
    return torch.cat([features, probs], dim=1)


def router_confidence(policy: str, logits: torch.Tensor, features: torch.Tensor | None = None,
                      mlp: nn.Module | None = None) -> torch.Tensor:
    """Confidence of the little network per input, shape ``(batch,)``, in [0, 1]."""
    if policy == 'max_softmax':
        return logits.softmax(dim=1).max(dim=1).values
    if policy == 'entropy':
        probs = logits.softmax(dim=1)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
        return (1.0 - entropy / math.log(logits.shape[1])).clamp(0.0, 1.0)
    if policy == 'margin':
        top2 = logits.softmax(dim=1).topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]
    if policy == 'learned':
        if mlp is None or features is None:
            raise ValueError('The learned router needs the little head features and its MLP.')
        return torch.sigmoid(mlp(router_features(logits, features)).squeeze(1))
    raise ValueError(f'Unknown router policy {policy!r}; choose one of {ROUTER_POLICIES}.')


def router_logit(mlp: nn.Module, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Pre-sigmoid output of the learned router (for a BCE routing loss)."""
    return mlp(router_features(logits, features)).squeeze(1)


def escalation_mask(confidence, threshold: float):
    """The routing rule: ``True`` where the input goes on to the big network, i.e. where its confidence is
    below ``threshold``; a threshold ``>= 1`` (:data:`ALWAYS`) escalates every input. ``confidence`` is a
    torch tensor or a numpy array (the mask is of the same kind)."""
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError('The router threshold is NaN; give a number (>= 1 escalates every input).')
    if isinstance(confidence, torch.Tensor):
        if threshold >= ALWAYS:
            return torch.ones_like(confidence, dtype=torch.bool)
        return confidence < threshold
    confidence = np.asarray(confidence)
    if threshold >= ALWAYS:
        return np.ones(confidence.shape, dtype=bool)
    return confidence < threshold


class Router(nn.Module):
    """The frozen router of a standalone :class:`~nni_bigLittle.nn.model.BigLittleModel`."""

    def __init__(self, cfg: RouterConfig):
        super().__init__()
        if cfg.policy not in ROUTER_POLICIES:
            raise ValueError(f'Unknown router policy {cfg.policy!r}; choose one of {ROUTER_POLICIES}.')
        self.policy = cfg.policy
        self.threshold = float(cfg.threshold)
        self.mlp = build_router_mlp(cfg.in_features, cfg.hidden) if cfg.policy == 'learned' else None

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return router_confidence(self.policy, logits, features, self.mlp)

    def escalate(self, logits: torch.Tensor, features: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        return escalation_mask(self(logits, features), self.threshold if threshold is None else float(threshold))

    def extra_repr(self) -> str:
        return f'policy={self.policy!r}, threshold={self.threshold}'


@dataclass(frozen=True)
class RouterSetting:
    """How a deployed pair routes: ``policy`` and ``threshold`` (escalate when confidence < threshold), and
    how the threshold was chosen: calibrated for ``target_escalation`` or ``target_accuracy`` on the
    ``calibrated_on`` split ('validation' during search), or given as is (all three ``None``)."""
    policy: str
    threshold: float
    target_escalation: float | None = None
    target_accuracy: float | None = None
    calibrated_on: str | None = None

    def __post_init__(self):
        if self.policy not in ROUTER_POLICIES:
            raise ValueError(f'Unknown router policy {self.policy!r}; choose one of {ROUTER_POLICIES}.')
        threshold = float(self.threshold)
        if math.isnan(threshold) or threshold == math.inf:
            raise ValueError(f'The router threshold must be a number or -inf (never escalate), got {self.threshold!r}.')
        object.__setattr__(self, 'threshold', threshold)
        if self.target_escalation is not None and self.target_accuracy is not None:
            raise ValueError('A threshold is calibrated for a target escalation or a target accuracy, not both.')
        for name in ('target_escalation', 'target_accuracy'):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value!r}.')

    def to_dict(self) -> dict:
        return {'policy': self.policy, 'threshold': self.threshold, 'target_escalation': self.target_escalation,
                'target_accuracy': self.target_accuracy, 'calibrated_on': self.calibrated_on}

    @classmethod
    def from_dict(cls, data) -> 'RouterSetting':
        known = ('policy', 'threshold', 'target_escalation', 'target_accuracy', 'calibrated_on')
        unknown = sorted(set(data) - set(known))
        if unknown or 'policy' not in data or 'threshold' not in data:
            raise ValueError(f'A router setting needs policy and threshold (optional: {list(known[2:])}); '
                             f'got keys {sorted(data)}.')
        return cls(**dict(data))


@dataclass(frozen=True)
class CalibrationResult:
    threshold: float
    escalation_rate: float
    accuracy: float | None  # dynamic accuracy on the calibration set, when correctness was given


class CalibrationError(BigLittleError, ValueError):
    """The requested target cannot be met on the calibration data."""


def dynamic_accuracy(confidence: np.ndarray, little_correct: np.ndarray, big_correct: np.ndarray,
                     threshold: float) -> float:
    escalated = escalation_mask(np.asarray(confidence, dtype=np.float64), threshold)
    return float(np.where(escalated, big_correct, little_correct).mean())


def calibrate_threshold(confidence: Sequence[float] | np.ndarray, *, target_escalation: float | None = None,
                        target_accuracy: float | None = None, little_correct: Sequence[bool] | None = None,
                        big_correct: Sequence[bool] | None = None) -> CalibrationResult:
    """Choose ``tau`` on validation data.

    With ``target_escalation`` the ``round(r * N)`` least confident inputs are escalated (fewer if
    confidences tie at the boundary). With ``target_accuracy`` (needs ``little_correct`` and
    ``big_correct``) the smallest escalation rate whose dynamic accuracy reaches the target is
    chosen; :class:`CalibrationError` says so, with the best reachable accuracy, if none does.
    """
    if (target_escalation is None) == (target_accuracy is None):
        raise ValueError('Give exactly one of target_escalation or target_accuracy.')
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    n = conf.size
    if n == 0:
        raise ValueError('Calibration needs at least one validation input.')
    if not np.all(np.isfinite(conf)):
        raise ValueError('Confidences contain NaN or inf.')
    order = np.argsort(conf, kind='stable')
    sorted_conf = conf[order]

    def threshold_for(k: int) -> float:
        """A threshold escalating exactly the k least confident inputs (k at a tie boundary)."""
        if k <= 0:
            return 0.0
        if k >= n:
            return 1.0
        return float((sorted_conf[k - 1] + sorted_conf[k]) / 2.0)

    boundaries = [0] + [k for k in range(1, n) if sorted_conf[k - 1] < sorted_conf[k]] + [n]
    have_correct = little_correct is not None and big_correct is not None
    if have_correct:
        little_ok = np.asarray(little_correct, dtype=np.float64).reshape(-1)[order]
        big_ok = np.asarray(big_correct, dtype=np.float64).reshape(-1)[order]
        if little_ok.size != n or big_ok.size != n:
            raise ValueError(f'little_correct and big_correct need {n} entries like confidence, '
                             f'got {little_ok.size} and {big_ok.size}.')
        # accuracy when the k least confident are escalated
        big_prefix = np.concatenate([[0.0], np.cumsum(big_ok)])
        little_suffix = np.concatenate([np.cumsum(little_ok[::-1])[::-1], [0.0]])
        acc_at = (big_prefix + little_suffix) / n

    if target_escalation is not None:
        if not 0.0 <= target_escalation <= 1.0:
            raise ValueError(f'target_escalation must be in [0, 1], got {target_escalation}.')
        wanted = int(round(target_escalation * n))
        k = max(b for b in boundaries if b <= wanted)
    else:
        if not have_correct:
            raise ValueError('target_accuracy needs little_correct and big_correct.')
        reachable = [b for b in boundaries if acc_at[b] >= target_accuracy - 1e-12]
        if not reachable:
            best = max(boundaries, key=lambda b: acc_at[b])
            raise CalibrationError(
                f'Target accuracy {target_accuracy:.4f} is not reachable on this data: the best dynamic accuracy is '
                f'{acc_at[best]:.4f} at escalation rate {best / n:.3f}. Lower the target or train the big network more.')
        k = min(reachable)
    return CalibrationResult(threshold_for(k), k / n, float(acc_at[k]) if have_correct else None)
