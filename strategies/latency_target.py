"""Latency-target search (LightNAS): one differentiable search that lands on a latency target ``T``.

Luo et al., "You Only Search Once: On Lightweight Differentiable Architecture Search for
Resource-Constrained Embedded Platforms", DAC 2022. The architecture loss of DARTS becomes

    L(w, alpha) + lam * (LAT(alpha) / T - 1)

where ``LAT(alpha)`` is the expected latency of the architecture distribution and ``lam`` is a
learned Lagrange multiplier of the *equality* constraint ``LAT = T``. ``alpha`` descends the loss;
``lam`` ascends it, once per architecture step:

    lam <- lam + lam_lr * (LAT(alpha) / T - 1)        (d loss / d lam = LAT / T - 1)

so ``lam`` grows while the architecture is too slow (the term pushes towards cheaper choices) and
falls, through zero to negative values, while it is too fast (the term then *rewards* latency and
the task loss is free to pick larger choices). At equilibrium ``LAT(alpha) = T``: no sweep over a
penalty weight. ``lam`` starts at ``lam_init`` (0); the default ``lam_lr`` is
:data:`DEFAULT_LAM_LR` = 2 (a 5 % violation moves ``lam`` by 0.1 per step: on the cifar preset
``|lam|`` of 0.5 to 3 balances the task loss, reached in 10 to 30 steps).

How it plugs into NNI
---------------------
:class:`LatencyTargetSearch` is NNI's ``GumbelDARTS`` (``relaxation='gumbel'``, default: Gumbel-
softmax path weights, temperature annealed by NNI) or, with ``relaxation='softmax'``, plain DARTS
weights, run through ``NasExperiment(space, evaluator, strategy)`` on a ``BigLittleSpace`` (relaxed
by :mod:`nni_bigLittle.search_spaces.relaxation`). The LightNAS term is an NNI
``ExpectationProfilerPenalty`` (:class:`LagrangeLatencyPenalty`) that NNI's
``DartsLightningModule.training_step`` adds to every architecture step, with

    LAT(alpha) = profiler.expectation(export_probs(supernet))

the exact, differentiable expected latency of :class:`~nni_bigLittle.hw_predictors.nni_bridge.
BigLittleCostProfiler` under the independent label distributions ``softmax(alpha)`` (NNI's Adam,
``arc_learning_rate`` default :data:`DEFAULT_ARC_LR` = 0.05, moves ``alpha``). The one-shot module
(:class:`LatencyTargetLightningModule`) logs per epoch ``latency_target/expected_latency``
(``LAT(alpha)``), ``latency_target/tempered_latency`` (the constrained value, below),
``latency_target/argmax_latency`` (the argmax architecture's ``profiler.profile``),
``latency_target/lam`` and the relative errors to the Lightning logger, and keeps the same records
in ``history``; the penalty keeps one record per architecture step in ``steps``.

Two additions make one short search land (both can be switched off)
-------------------------------------------------------------------
**Annealed latency temperature** (``latency_temperature=(1.0, 0.1)``). ``LAT(alpha)`` is the
latency of the *distribution*; the export is the *argmax* of each label, and on the cifar preset
the two differ by up to 50 % mid-search (the task loss tilts many labels towards their larger
values by small margins: the argmax takes every one of them, the expectation only a little of
each). Gumbel annealing does not close that gap: Gumbel-max samples follow ``softmax(alpha)`` at
any temperature. So the constrained quantity is ``LAT_t(alpha)``, the expected latency under
``softmax(alpha / t)``: ``t = 1`` at the start (exactly the ``LAT(alpha)`` above) and falls
linearly to 0.1 over the first :data:`ANNEAL_SHARE` (75 %) of the batches, then stays: as ``t``
falls the distribution tends to its argmax, so the equality constraint moves from the
distribution to (nearly) the architecture that is exported, and ``lam`` settles on it during the
last quarter. ``latency_temperature=1.0`` keeps the plain ``LAT(alpha)`` throughout.

**Damping** (``damping=``:data:`DEFAULT_DAMPING` = 20). Under Adam, which moves each ``alpha`` by
about ``arc_learning_rate`` per step whatever the gradient's size, the plain Lagrangian dynamics
is an undamped oscillator: ``lam`` integrates the violation and ``alpha`` follows the sign of
``lam`` minus the value that balances the task loss, so a search that starts a violation ``g0``
away overshoots by about ``|g0|`` on the other side whatever ``lam_lr`` (which only sets the
period); that is what a 4-epoch search on the cifar preset does. ``damping = rho`` adds the
augmented-Lagrangian term of the method of multipliers,

    L + lam * g + rho / 2 * g ** 2,        g = LAT_t(alpha) / T - 1,

whose gradient acts as the multiplier ``lam + rho * g``: it turns back before ``g`` crosses zero,
and the oscillation dies out; at ``g = 0`` the term and its gradient vanish, so the equilibrium
(``LAT = T``, ``lam`` balancing the task loss) is LightNAS's. ``damping=0`` gives the plain
LightNAS loss.

**Projection at export** (``repair=True``): a deterministic safety net for what is left. The
argmax of labels whose ``alpha`` are nearly tied is a coin toss that the temperature cannot
resolve, so when the argmax architecture's ``profiler.profile(sample)`` is outside
``T * (1 +- tolerance)``, :func:`project_to_target` changes one label at a time, each time taking
the change that costs the least preference (drop of ``log softmax(alpha)``) per millisecond it
moves the latency towards ``T``, until the error is within ``repair_margin * tolerance`` (half the
tolerance) or no change helps; near-tied labels cost almost nothing and go first.
:class:`LatencyTargetResult` reports the argmax (``argmax_latency``) as well as the export,
``repaired`` (the labels changed) and ``repair_cost`` (the preference given up, in nats), so it
says whether a landing came from the search alone. With ``repair=False`` the export is the argmax
(checked against the tolerance: ``within_tolerance``, and a ``RuntimeWarning`` if missed).

What the search does with the big/little labels
-----------------------------------------------
- ``little/fork``: searched like every other label. Its latency term is exact: the trunk
  stages before the fork run for every input, those after it only for escalated inputs (rate
  ``p``), and each fork has its own little branch. The task loss reaches it through the mixture
  of the little branches' logits.
- ``router/policy``: only the latency term reaches it (the task loss does not depend on the
  router); the policies differ only by the router's own cost (the learned MLP costs a few
  microseconds more), so it barely moves; the projection never changes it.
- ``router/threshold``: **not searched**. The profiler charges the big tail with a *fixed*
  escalation rate ``p`` (``BigLittleCostProfiler(escalation_rate=0.3)``; ``escalation_rate``
  here), so the threshold has no latency gradient and no task-loss gradient; its exported value
  is the argmax of untouched (near-uniform) logits and means nothing. Calibrate the threshold
  after the search so that the router escalates the share ``p`` the latency was computed for
  (:func:`nni_bigLittle.nn.router.calibrate_threshold` with ``target_escalation=p``); the latency
  target holds at that rate. The result records ``escalation_rate``.

The achievable range
--------------------
A target below the cheapest or above the most expensive valid pair of the space cannot be met;
:func:`latency_range` finds both ends (coordinate search over the labels from
``space.smallest()`` / ``space.largest()``, keeping only valid pairs; the dearest pair is not
``largest()``: a late fork with a large little branch runs more of the network for every input),
and the strategy raises :class:`TargetOutOfRangeError` (a ``ValueError``) before any training.

Entry points: :class:`LatencyTargetSearch` (an NNI strategy) and :func:`search_latency_target`
(builds the evaluator and the ``NasExperiment``, runs it, returns a :class:`LatencyTargetResult`).
"""
from __future__ import annotations

import math
import tempfile
import warnings
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

import torch

# NNI import order: nni.nas.strategy before nni.nas.oneshot.pytorch.strategy (see tests/conftest.py)
import nni_bigLittle._nni_compat  # noqa: F401
import nni
import nni.nas.strategy  # noqa: F401
from nni.nas.evaluator.pytorch import LightningModule
from nni.nas.oneshot.pytorch.differentiable import GumbelDartsLightningModule
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.oneshot.pytorch.strategy import GumbelDARTS
from nni.nas.oneshot.pytorch.supermodule.differentiable import GumbelSoftmax
from torch import nn

from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
from nni_bigLittle.nn.losses import JointLoss, LossWeights
from nni_bigLittle.search_spaces.spec import SpaceSpec
from nni_bigLittle.errors import BigLittleError

__all__ = [
    'DEFAULT_LAM_LR', 'DEFAULT_DAMPING', 'DEFAULT_ARC_LR', 'ANNEAL_SHARE', 'RELAXATIONS', 'FROZEN_IN_PROJECTION',
    'TargetOutOfRangeError', 'LatencyRange', 'latency_range', 'check_target', 'project_to_target', 'temper',
    'LagrangeLatencyPenalty', 'LatencyTargetLightningModule', 'LatencyTargetSearch', 'LatencyTargetResult',
    'LatencyTargetTask', 'search_latency_target',
]

DEFAULT_LAM_LR = 2.0
"""Step of the gradient ascent on ``lam`` (per architecture step, on the relative violation)."""

DEFAULT_ARC_LR = 0.05
"""Adam step of the architecture parameters (NNI's DARTS default, 3e-4, is for 50-epoch searches)."""

DEFAULT_DAMPING = 20.0
"""Weight ``rho`` of the augmented-Lagrangian term ``rho / 2 * g ** 2`` (``rho * g`` = 1 at g = 5 %)."""

RELAXATIONS = ('gumbel', 'softmax')

ANNEAL_SHARE = 0.75
"""Share of the training batches over which the latency temperature falls to its final value; it
stays there for the rest, so that ``lam`` settles on the (near-)argmax latency before the end."""

# labels the projection never changes: the threshold has no cost (fixed escalation rate) and the
# policy only changes the router's few-microsecond cost
FROZEN_IN_PROJECTION = ('router/threshold', 'router/policy')


class TargetOutOfRangeError(BigLittleError, ValueError):
    """The latency target lies outside what the space can reach on the device."""

    def __init__(self, message: str, target: float, low: float, high: float):
        super().__init__(message)
        self.target, self.low, self.high = target, low, high


# ----- the achievable range ---------------------------------------------------------------------------------------

class LatencyRange(NamedTuple):
    low: float
    high: float
    low_sample: dict
    high_sample: dict


_RANGES: 'weakref.WeakKeyDictionary[BigLittleCostProfiler, LatencyRange]' = weakref.WeakKeyDictionary()


def _valid_neighbours(spec, sample: Mapping[str, Any], labels: list[str]):
    """``(label index, label, candidate)`` for every valid sample one label away from ``sample``."""
    for order, label in enumerate(labels):
        for value in spec.choices()[label]:
            if value != sample[label]:
                candidate = {**sample, label: value}
                if spec.check(candidate) is None:
                    yield order, label, candidate


def _coordinate_search(profiler: BigLittleCostProfiler, start: Mapping[str, Any], sign: float,
                       max_sweeps: int = 10) -> tuple[float, dict]:
    """Greedy coordinate search minimising ``sign * profile(sample)`` over valid samples from ``start``."""
    spec = profiler.spec
    sample = dict(start)
    best = sign * profiler.profile(sample)
    labels = [label for label in spec.choices() if label != 'router/threshold']
    for _ in range(max_sweeps):
        improved = False
        for label in labels:  # one label at a time, each from the sample as improved so far
            for _, _, candidate in _valid_neighbours(spec, sample, [label]):
                cost = sign * profiler.profile(candidate)
                if cost < best - 1e-12:
                    best, sample, improved = cost, candidate, True
        if not improved:
            break
    return sign * best, sample


def latency_range(profiler: BigLittleCostProfiler) -> LatencyRange:
    """The cheapest and dearest valid samples of ``profiler``'s space and their latencies.

    Coordinate search (one label at a time, the best valid value, until a sweep changes nothing)
    from ``spec.smallest()`` downwards and from ``spec.largest()`` upwards. Cached per profiler.
    """
    if profiler in _RANGES:
        return _RANGES[profiler]
    spec = profiler.spec
    low, low_sample = _coordinate_search(profiler, spec.smallest(), +1.0)
    high, high_sample = _coordinate_search(profiler, spec.largest(), -1.0)
    result = LatencyRange(low, high, low_sample, high_sample)
    _RANGES[profiler] = result
    return result


def _device_name(profiler: BigLittleCostProfiler) -> str:
    return str(getattr(profiler.predictor, 'name', 'the device'))


def check_target(profiler: BigLittleCostProfiler, target: float) -> LatencyRange:
    """Raise :class:`TargetOutOfRangeError` unless ``low <= target <= high`` (see :func:`latency_range`)."""
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not math.isfinite(target) or target <= 0:
        raise ValueError(f'target must be a positive number of {profiler.unit}, got {target!r}.')
    rng = latency_range(profiler)
    if not rng.low <= target <= rng.high:
        unit = profiler.unit
        raise TargetOutOfRangeError(
            f'Latency target {target:.4g} {unit} is outside the achievable range [{rng.low:.4g}, {rng.high:.4g}] '
            f'{unit} of this space on {_device_name(profiler)} (escalation rate {profiler.escalation_rate}); '
            f'choose a target in that range, e.g. target={0.5 * (rng.low + rng.high):.4g}.',
            float(target), rng.low, rng.high)
    return rng


# ----- the projection at export -------------------------------------------------------------------------------------

def project_to_target(profiler: BigLittleCostProfiler, sample: Mapping[str, Any], target: float, tolerance: float,
                      preferences: Mapping[str, Mapping[Any, float]], *, margin: float = 0.5,
                      max_moves: int = 200) -> tuple[dict, dict[str, tuple[Any, Any]]]:
    """Move ``sample`` (valid) towards ``target`` when its latency is outside ``target * (1 +- tolerance)``.

    Deterministic greedy: each move changes one label (not the router's, see
    ``FROZEN_IN_PROJECTION``) to the value with the least preference cost
    ``max(0, pref[current] - pref[new])`` per unit of ``|latency - target|`` it removes (ties: the
    larger reduction, then label order), keeping the pair valid; it stops once the relative error is
    within ``margin * tolerance`` or no move reduces the error. ``preferences`` is
    ``{label: {value: log-probability}}``. Returns ``(sample, {label: (old, new)})``.
    """
    spec = profiler.spec
    sample = dict(sample)
    original = dict(sample)
    latency = profiler.profile(sample)
    if abs(latency / target - 1.0) <= tolerance:
        return sample, {}
    aim = margin * tolerance * target
    labels = [label for label in spec.choices() if label not in FROZEN_IN_PROJECTION]
    for _ in range(max_moves):
        gap = abs(latency - target)
        if gap <= aim:
            break
        best = None
        for order, label, candidate in _valid_neighbours(spec, sample, labels):
            pref, value = preferences[label], candidate[label]
            new_latency = profiler.profile(candidate)
            reduction = gap - abs(new_latency - target)
            if reduction <= 1e-12:
                continue
            cost = max(0.0, float(pref[sample[label]]) - float(pref[value]))
            key = (cost / reduction, -reduction, order)
            if best is None or key < best[0]:
                best = (key, candidate, new_latency)
        if best is None:
            break
        _, sample, latency = best
    changes = {label: (original[label], sample[label]) for label in sample if sample[label] != original[label]}
    return sample, changes


# ----- the LightNAS term --------------------------------------------------------------------------------------------

class LagrangeLatencyPenalty(ExpectationProfilerPenalty):
    """``loss + lam * (LAT(alpha) / T - 1)`` with ``lam`` updated by gradient ascent at every call.

    ``LAT = profiler.expectation(temper(probs, temperature))`` (``probs`` = NNI's ``export_probs()``,
    tensors with their graph to ``alpha``; ``temperature`` is 1, i.e. ``LAT(alpha)``, unless the
    one-shot module anneals it). ``lam`` is a float64 buffer (saved in the one-shot module's
    state dict); it enters the loss as a constant (no gradient to ``alpha`` through it) and is
    updated after the loss is formed: ``lam += lam_lr * (LAT / T - 1)``. ``steps`` records each call.
    ``damping`` > 0 adds the augmented-Lagrangian term ``damping / 2 * (LAT / T - 1) ** 2`` (0: the
    plain LightNAS loss; see the module docstring).
    """

    def __init__(self, profiler: BigLittleCostProfiler, target: float, lam_lr: float = DEFAULT_LAM_LR,
                 lam_init: float = 0.0, damping: float = 0.0):
        super().__init__(profiler, baseline=float(target), scale=1.0, nonlinear='linear', aggregate='add')
        if not lam_lr > 0:
            raise ValueError(f'lam_lr must be > 0, got {lam_lr!r}.')
        if not damping >= 0:
            raise ValueError(f'damping must be >= 0, got {damping!r}.')
        self.lam_lr = float(lam_lr)
        self.damping = float(damping)
        self.register_buffer('lam', torch.tensor(float(lam_init), dtype=torch.float64))
        self.temperature = 1.0  # of the latency distribution; the one-shot module anneals it
        self.steps: list[dict[str, float]] = []

    @property
    def target(self) -> float:
        return self.baseline

    def profile(self, sample: Mapping[str, Mapping[Any, Any]]) -> torch.Tensor:
        """``LAT``: the expected latency under ``sample`` tempered by :attr:`temperature`."""
        return self.profiler.expectation(temper(sample, self.temperature))

    def forward(self, loss: torch.Tensor, sample: Mapping[str, Any]) -> tuple[torch.Tensor, dict]:
        latency = self.profile(sample)
        violation = latency / self.target - 1.0
        lam = float(self.lam)
        term = lam * violation
        if self.damping:
            term = term + 0.5 * self.damping * violation ** 2
        new_loss = loss + term.to(loss.dtype)
        g = float(violation.detach())
        with torch.no_grad():
            self.lam += self.lam_lr * g  # gradient ascent on lam
        self.steps.append({'step': len(self.steps), 'latency': float(latency.detach()), 'violation': g,
                           'lam_before': lam, 'lam': float(self.lam), 'latency_temperature': self.temperature})
        details = {'latency': latency.detach().float(), 'violation': torch.tensor(g),
                   'lam': torch.tensor(float(self.lam)), 'loss_original': loss.detach(),
                   'loss_final': new_loss.detach().float()}
        return new_loss, details


def temper(probs: Mapping[str, Mapping[Any, Any]], temperature: float) -> dict[str, dict[Any, Any]]:
    """``{label: {value: p ** (1 / t) / sum}}``: ``softmax(alpha / t)`` from ``softmax(alpha)``, differentiable."""
    if temperature == 1.0:
        return {label: dict(dist) for label, dist in probs.items()}
    out = {}
    for label, dist in probs.items():
        values = list(dist)
        p = torch.stack([torch.as_tensor(dist[v], dtype=torch.float64) for v in values])
        q = torch.softmax(torch.log(p.clamp_min(1e-30)) / temperature, dim=0)
        out[label] = {v: q[i] for i, v in enumerate(values)}
    return out


def _schedule(value: Any, name: str) -> tuple[float, float]:
    pair = (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in pair) or pair[1] > pair[0]:
        raise ValueError(f'{name} must be a temperature > 0 or a pair (initial, final) with initial >= final > 0, '
                         f'got {value!r}.')
    return float(pair[0]), float(pair[1])


# ----- the one-shot module ------------------------------------------------------------------------------------------

class LatencyTargetLightningModule(GumbelDartsLightningModule):
    """NNI's (Gumbel) DARTS module with :class:`LagrangeLatencyPenalty` as its penalty; adds per-epoch
    records (``history``) and the projected export (see the module docstring)."""

    def __init__(self, training_module: LightningModule, temperature_scheduler, *, penalty: LagrangeLatencyPenalty,
                 tolerance: float = 0.05, repair: bool = True, repair_margin: float = 0.5,
                 latency_temperature: Any = (1.0, 0.1), **kwargs: Any):
        if not isinstance(penalty, LagrangeLatencyPenalty):
            raise TypeError(f'penalty must be a LagrangeLatencyPenalty, got {type(penalty).__name__}.')
        super().__init__(training_module, temperature_scheduler, penalty=penalty, **kwargs)
        self.latency_temperature = _schedule(latency_temperature, 'latency_temperature')
        self.tolerance = float(tolerance)
        self.repair = bool(repair)
        self.repair_margin = float(repair_margin)
        self.history: list[dict[str, Any]] = []
        self._export_cache: tuple[bytes, dict, dict] | None = None

    @property
    def profiler(self) -> BigLittleCostProfiler:
        return self.penalty.profiler

    @property
    def target(self) -> float:
        return self.penalty.target

    # ----- what the search stands at ------------------------------------------------------------------------------
    def expected_latency(self, temperature: float = 1.0) -> float:
        """``LAT(alpha)`` now, under ``softmax(alpha / temperature)`` (no gradient)."""
        with torch.no_grad():
            return float(self.profiler.expectation(temper(self.export_probs(), temperature)))

    def argmax_sample(self) -> dict[str, Any]:
        """NNI's export: argmax per label (the little network shrunk if the pair is invalid)."""
        return super().export()

    def preferences(self) -> dict[str, dict[Any, float]]:
        """``{label: {value: log softmax(alpha)}}``."""
        with torch.no_grad():
            return {label: {value: math.log(max(float(p), 1e-30)) for value, p in dist.items()}
                    for label, dist in self.export_probs().items()}

    def export(self) -> dict[str, Any]:
        """The argmax sample, projected towards the target when ``repair`` (cached per ``alpha``)."""
        return self.export_with_changes()[0]

    def export_with_changes(self) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
        key = self._alpha_key()
        if self._export_cache is not None and self._export_cache[0] == key:
            return dict(self._export_cache[1]), dict(self._export_cache[2])
        sample, changes = self.argmax_sample(), {}
        if self.repair:
            sample, changes = project_to_target(self.profiler, sample, self.target, self.tolerance,
                                                self.preferences(), margin=self.repair_margin)
        self._export_cache = (key, dict(sample), dict(changes))
        return sample, changes

    def _alpha_key(self) -> bytes:
        return b''.join(p.detach().cpu().double().numpy().tobytes() for p in sorted(
            self.arch_parameters(), key=lambda p: id(p))) + repr((self.target, self.tolerance, self.repair)).encode()

    # ----- the latency temperature: linear over the first ANNEAL_SHARE of the training batches, then fixed --------
    def on_train_batch_start(self, batch, batch_idx, *args, **kwargs):
        init, final = self.latency_temperature
        self.penalty.temperature = init + (final - init) * min(1.0, self._progress(batch_idx) / ANNEAL_SHARE)
        return super().on_train_batch_start(batch, batch_idx, *args, **kwargs)

    def _progress(self, batch_idx: int) -> float:
        """0 at the first training batch, 1 at the last one (by ``max_epochs`` or ``max_steps``)."""
        trainer = self.trainer
        per_epoch = trainer.num_training_batches
        totals = []
        if math.isfinite(per_epoch) and trainer.max_epochs is not None and trainer.max_epochs > 0:
            totals.append(trainer.max_epochs * per_epoch)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            totals.append(trainer.max_steps / 2)  # an architecture and a weight step per batch
        if not totals:
            return 0.0
        done = trainer.current_epoch * per_epoch + batch_idx if math.isfinite(per_epoch) else trainer.global_step / 2
        return min(1.0, done / max(min(totals) - 1, 1))

    # ----- per-epoch records ----------------------------------------------------------------------------------------
    def on_train_epoch_end(self):
        expected = self.expected_latency()
        tempered = self.expected_latency(self.penalty.temperature)
        argmax = self.profiler.profile(self.argmax_sample())
        record = {'epoch': int(self.trainer.current_epoch), 'arch_steps': len(self.penalty.steps),
                  'expected_latency': expected, 'expected_error': expected / self.target - 1.0,
                  'tempered_latency': tempered, 'latency_temperature': self.penalty.temperature,
                  'argmax_latency': argmax, 'argmax_error': argmax / self.target - 1.0,
                  'lam': float(self.penalty.lam), 'gumbel_temperature': _temperature(self)}
        self.history.append(record)
        self.log_dict({f'latency_target/{name}': float(record[name]) for name in
                       ('expected_latency', 'expected_error', 'tempered_latency', 'latency_temperature',
                        'argmax_latency', 'argmax_error', 'lam')})
        return super().on_train_epoch_end()


def _temperature(module: nn.Module) -> float | None:
    for m in module.modules():
        if isinstance(m, GumbelSoftmax):
            return float(m.tau)
    return None


# ----- the strategy -------------------------------------------------------------------------------------------------

@dataclass
class LatencyTargetResult:
    """What a latency-target search returns (``to_dict()`` gives a flat, JSON-able record)."""
    sample: dict                 # the exported architecture (projected when needed)
    latency: float               # profiler.profile(sample)
    target: float
    relative_error: float        # latency / target - 1
    tolerance: float
    within_tolerance: bool
    lam: float                   # the final Lagrange multiplier
    expected_latency: float      # LAT(alpha) at the end
    argmax_sample: dict          # the argmax architecture before the projection
    argmax_latency: float
    repaired: dict               # {label: (argmax value, exported value)}; empty when the argmax landed
    repair_cost: float           # sum over repaired labels of log p(argmax value) - log p(exported value)
    device: str
    unit: str
    escalation_rate: float       # the fixed rate p the latency assumes (calibrate the threshold to it)
    achievable: tuple            # (low, high) of the space on the device
    settings: dict = field(default_factory=dict)     # lam_lr, lam_init, damping, relaxation, arc_learning_rate, ...
    history: list = field(default_factory=list)      # per epoch
    steps: list = field(default_factory=list)        # per architecture step

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out['repaired'] = {label: list(change) for label, change in self.repaired.items()}
        out['achievable'] = list(self.achievable)
        return out


class LatencyTargetSearch(GumbelDARTS):
    """LightNAS latency-target search as an NNI one-shot strategy (see the module docstring).

    Parameters
    ----------
    profiler
        A :class:`BigLittleCostProfiler` of the space, or a device predictor name
        (``'raspberry_pi_4'``), for which the profiler is built when the space arrives (with
        ``escalation_rate``).
    target
        The latency target ``T`` in the predictor's unit (ms).
    lam_lr
        Step of the gradient ascent on ``lam`` (default :data:`DEFAULT_LAM_LR`).
    lam_init
        Initial ``lam`` (0).
    damping
        Weight ``rho`` of the augmented-Lagrangian term ``rho / 2 * (LAT / T - 1) ** 2`` (default
        :data:`DEFAULT_DAMPING`; 0 = the plain LightNAS loss; see the module docstring).
    escalation_rate
        The fixed escalation rate ``p`` of a profiler built from a device name (default 0.3); a
        profiler object brings its own (a different value here raises ``ValueError``).
    tolerance
        Relative tolerance of the landing (0.05 = +-5 %); the export is projected into
        ``repair_margin * tolerance`` when the argmax architecture misses ``tolerance``.
    relaxation
        ``'gumbel'`` (GumbelDARTS weights, temperature annealed by NNI from ``temperature``) or
        ``'softmax'`` (DARTS weights).
    latency_temperature
        ``(initial, final)`` temperature ``t`` of the distribution ``softmax(alpha / t)`` whose
        expected latency is constrained, annealed linearly over the first :data:`ANNEAL_SHARE` of the
        training batches (default ``(1.0, 0.1)``); a single number keeps it fixed (``1.0``: always
        the plain ``LAT(alpha)``).
    repair, repair_margin
        See :func:`project_to_target`.
    arc_learning_rate, temperature, warmup_epochs, ...
        NNI's ``GumbelDARTS`` / ``DARTS`` arguments (``penalty`` is this strategy's own).
    """

    def __init__(self, profiler: BigLittleCostProfiler | str, target: float, *, lam_lr: float = DEFAULT_LAM_LR,
                 lam_init: float = 0.0, damping: float = DEFAULT_DAMPING, tolerance: float = 0.05,
                 escalation_rate: float | None = None,
                 relaxation: str = 'gumbel', latency_temperature: Any = (1.0, 0.1), repair: bool = True,
                 repair_margin: float = 0.5, arc_learning_rate: float = DEFAULT_ARC_LR,
                 temperature: Any = (1.0, 0.33), **kwargs: Any):
        if 'penalty' in kwargs:
            raise TypeError('LatencyTargetSearch makes its own penalty (the LightNAS term); do not pass penalty=.')
        if relaxation not in RELAXATIONS:
            raise ValueError(f'relaxation must be one of {RELAXATIONS}, got {relaxation!r}.')
        if not 0 < float(tolerance) < 1:
            raise ValueError(f'tolerance is a relative error in (0, 1), got {tolerance!r}.')
        if not 0 < float(repair_margin) <= 1:
            raise ValueError(f'repair_margin must be in (0, 1], got {repair_margin!r}.')
        if not float(lam_lr) > 0:
            raise ValueError(f'lam_lr must be > 0, got {lam_lr!r}.')
        if not isinstance(profiler, (str, BigLittleCostProfiler)):
            raise TypeError(f'profiler must be a BigLittleCostProfiler or a device predictor name, got '
                            f'{type(profiler).__name__}.')
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < math.inf:
            raise ValueError(f'target must be a positive latency (ms), got {target!r}.')
        if isinstance(profiler, BigLittleCostProfiler) and escalation_rate is not None \
                and not math.isclose(float(escalation_rate), profiler.escalation_rate):
            raise ValueError(f'escalation_rate={escalation_rate} differs from the profiler\'s '
                             f'({profiler.escalation_rate}); it is only for a profiler built from a device name.')
        super().__init__(arc_learning_rate=arc_learning_rate, temperature=temperature, **kwargs)
        self.target = float(target)
        if not float(damping) >= 0:
            raise ValueError(f'damping must be >= 0, got {damping!r}.')
        self.lam_lr = float(lam_lr)
        self.lam_init = float(lam_init)
        self.damping = float(damping)
        self.tolerance = float(tolerance)
        self.escalation_rate = 0.3 if escalation_rate is None else float(escalation_rate)
        self.relaxation = relaxation
        self.latency_temperature = _schedule(latency_temperature, 'latency_temperature')
        self.repair = bool(repair)
        self.repair_margin = float(repair_margin)
        self.device_name = profiler if isinstance(profiler, str) else _device_name(profiler)
        self.profiler: BigLittleCostProfiler | None = None
        self.achievable: LatencyRange | None = None
        self._result: LatencyTargetResult | None = None
        if isinstance(profiler, BigLittleCostProfiler):
            self._set_profiler(profiler)  # checks the target now, before any training

    def _set_profiler(self, profiler: BigLittleCostProfiler) -> None:
        self.achievable = check_target(profiler, self.target)
        self.profiler = profiler
        self.escalation_rate = profiler.escalation_rate
        self.penalty = LagrangeLatencyPenalty(profiler, self.target, self.lam_lr, self.lam_init, self.damping)

    # ----- NNI hooks ------------------------------------------------------------------------------------------------
    def configure_softmax(self) -> nn.Module:
        return GumbelSoftmax() if self.relaxation == 'gumbel' else nn.Softmax(dim=-1)

    def mutate_model(self, model):
        spec: SpaceSpec | None = getattr(model, 'spec', None)
        if not isinstance(spec, SpaceSpec):
            raise TypeError(f'LatencyTargetSearch searches a BigLittleSpace, got {type(model).__name__}.')
        if self.profiler is None:
            self._set_profiler(BigLittleCostProfiler(model, self.device_name, escalation_rate=self.escalation_rate,
                                                     build_expression=False))
        elif self.profiler.spec != spec:
            raise ValueError('The profiler was built for another space (its spec differs from the model\'s); build '
                             'it with BigLittleCostProfiler(space, device).')
        self._result = None
        return super().mutate_model(model)

    def configure_oneshot_module(self, training_module: LightningModule) -> LatencyTargetLightningModule:
        # NNI's module, built only to reuse GumbelDARTS's parsing of ``temperature`` into a scheduler
        base = super().configure_oneshot_module(training_module)
        return LatencyTargetLightningModule(
            training_module, base.temperature_scheduler, penalty=self.penalty, tolerance=self.tolerance,
            repair=self.repair, repair_margin=self.repair_margin, latency_temperature=self.latency_temperature,
            arc_learning_rate=self.arc_learning_rate,
            gradient_clip_val=self.gradient_clip_val, log_prob_every_n_step=self.log_prob_every_n_step,
            warmup_epochs=self.warmup_epochs)

    def settings(self) -> dict[str, Any]:
        """The search's hyper-parameters, as recorded in :class:`LatencyTargetResult`."""
        return {'relaxation': self.relaxation, 'lam_lr': self.lam_lr, 'lam_init': self.lam_init,
                'damping': self.damping, 'latency_temperature': self.latency_temperature,
                'arc_learning_rate': self.arc_learning_rate,
                'temperature': self.temperature, 'repair': self.repair, 'repair_margin': self.repair_margin}

    # ----- results --------------------------------------------------------------------------------------------------
    @property
    def lam(self) -> float:
        if self.penalty is None:
            raise RuntimeError('The strategy has no profiler yet; run it on a space first.')
        return float(self.penalty.lam)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.oneshot_module.history)

    def result(self) -> LatencyTargetResult:
        """The exported sample, its latency, the error to the target, ``lam`` and the history (after a run)."""
        if self._mutated_model_space is None or self.profiler is None:
            raise RuntimeError('LatencyTargetSearch has not run yet: use it in NasExperiment(space, evaluator, '
                               'strategy).run() (or search_latency_target) first.')
        module: LatencyTargetLightningModule = self.oneshot_module
        module.set_model(self.supernet)
        sample, changes = module.export_with_changes()
        argmax = module.argmax_sample()
        preferences = module.preferences()
        repair_cost = sum(preferences[label][old] - preferences[label][new] for label, (old, new) in changes.items())
        latency = self.profiler.profile(sample)
        error = latency / self.target - 1.0
        if abs(error) > self.tolerance:
            warnings.warn(f'The exported architecture ({latency:.4g} {self.profiler.unit}) misses the target '
                          f'{self.target:.4g} by {100 * error:+.1f} % (tolerance {100 * self.tolerance:.0f} %)'
                          + ('' if self.repair else '; repair=True projects it towards the target') + '.',
                          RuntimeWarning)
        return LatencyTargetResult(
            sample=sample, latency=latency, target=self.target, relative_error=error, tolerance=self.tolerance,
            within_tolerance=abs(error) <= self.tolerance, lam=self.lam, expected_latency=module.expected_latency(),
            argmax_sample=argmax, argmax_latency=self.profiler.profile(argmax), repaired=changes,
            repair_cost=float(repair_cost),
            device=self.device_name, unit=self.profiler.unit, escalation_rate=self.profiler.escalation_rate,
            achievable=(self.achievable.low, self.achievable.high), settings=self.settings(),
            history=list(module.history),
            steps=list(self.penalty.steps))


# ----- the plain entry point ----------------------------------------------------------------------------------------

@nni.trace
class LatencyTargetTask(LightningModule):
    """The task loss ``L`` of the search: :class:`~nni_bigLittle.nn.losses.JointLoss` on the supernet's
    ``forward_all`` (big and little cross-entropy, little distilled from the detached big head; the
    routing and consistency terms need a concrete router and are left out), SGD on the weights."""

    def __init__(self, learning_rate: float = 0.05, momentum: float = 0.9, weight_decay: float = 4e-5,
                 loss_weights: Mapping[str, float] | None = None):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.loss = JointLoss(LossWeights.from_dict(loss_weights))

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, parts = self.loss(self.model.forward_all(x), y)
        self.log_dict({f'task/{k}': v for k, v in parts.items()})
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate, momentum=self.momentum,
                               weight_decay=self.weight_decay)


def search_latency_target(space, train_loader: Iterable, val_loader: Iterable, target: float,
                          device: str | BigLittleCostProfiler = 'raspberry_pi_4', epochs: int = 3, *,
                          escalation_rate: float | None = None, lam_lr: float = DEFAULT_LAM_LR,
                          lam_init: float = 0.0, damping: float = DEFAULT_DAMPING, tolerance: float = 0.05,
                          relaxation: str = 'gumbel', latency_temperature: Any = (1.0, 0.1), repair: bool = True,
                          arc_learning_rate: float = DEFAULT_ARC_LR, learning_rate: float = 0.05,
                          loss_weights: Mapping[str, float] | None = None, max_steps: int = -1,
                          logger: Any = False, working_dir: str | None = None, seed: int | None = 0,
                          trainer_kwargs: Mapping[str, Any] | None = None,
                          **strategy_kwargs: Any) -> LatencyTargetResult:
    """Run one latency-target search of ``space`` (a ``BigLittleSpace``, relaxed and trained *in place*:
    pass a ``copy.deepcopy`` to keep the original) and return its :class:`LatencyTargetResult`.

    ``train_loader`` trains the weights and ``val_loader`` the architecture (DARTS's split), for
    ``epochs`` epochs (or at most ``max_steps`` architecture+weight steps). ``device`` is a predictor
    name (the profiler then uses ``escalation_rate``, default 0.3) or a :class:`BigLittleCostProfiler`.
    The target is checked against the space's achievable range before
    anything is trained (:class:`TargetOutOfRangeError`). ``seed`` seeds torch once (Gumbel noise,
    initial ``alpha``); ``logger`` is the Lightning trainer's logger; ``working_dir`` NNI's experiment
    folder (a temporary folder, removed afterwards, when ``None``); ``trainer_kwargs`` go to the
    Lightning ``Trainer`` (e.g. ``limit_train_batches``) and ``strategy_kwargs`` to
    :class:`LatencyTargetSearch` (e.g. ``temperature``, ``warmup_epochs``).
    """
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from nni.nas.experiment import NasExperiment

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f'epochs must be a positive int, got {epochs!r}.')
    if isinstance(device, BigLittleCostProfiler):
        profiler = device
    else:
        profiler = BigLittleCostProfiler(space, device, build_expression=False,
                                         escalation_rate=0.3 if escalation_rate is None else escalation_rate)
        escalation_rate = None
    if seed is not None:
        torch.manual_seed(seed)
    strategy = LatencyTargetSearch(profiler, target, escalation_rate=escalation_rate, lam_lr=lam_lr,
                                   lam_init=lam_init, damping=damping, tolerance=tolerance,
                                   latency_temperature=latency_temperature, relaxation=relaxation, repair=repair,
                                   arc_learning_rate=arc_learning_rate,
                                   **strategy_kwargs)  # raises before training when the target is out of range
    trainer = Trainer(max_epochs=epochs, max_steps=2 * max_steps if max_steps > 0 else -1, logger=logger,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator='cpu', num_sanity_val_steps=0, **dict(trainer_kwargs or {}))
    evaluator = Lightning(LatencyTargetTask(learning_rate=learning_rate, loss_weights=loss_weights), trainer,
                          train_dataloaders=train_loader, val_dataloaders=val_loader)
    experiment = NasExperiment(space, evaluator, strategy)
    tmp = tempfile.TemporaryDirectory(prefix='latency_target_') if working_dir is None else None
    experiment.config.experiment_working_directory = tmp.name if tmp is not None else str(working_dir)
    try:
        experiment.run()
        return strategy.result()
    finally:
        experiment.stop()
        if tmp is not None:
            tmp.cleanup()
