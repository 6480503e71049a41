"""The big/little search space as data: choices, labels, validation and decoding.

Torch-free on purpose: a sample can be checked, decoded and costed without building a network.
Labels are hierarchical and stable::

    trunk/s{i}/width   trunk/s{i}/depth   trunk/s{i}/b{j}/kernel   trunk/s{i}/b{j}/expand
    little/fork        little/s{i}/width  little/s{i}/depth        little/s{i}/b{j}/kernel  little/s{i}/b{j}/expand
    router/policy      router/threshold

``little/fork`` is the number of trunk stages the little network shares with the big one
(0 = fork right after the stem, a nearly separate co-trained cascade; the largest value leaves
one trunk stage for the big tail). Little stages allow depth 0; with every little depth at 0
the little network is a plain early exit on the fork features.
"""
from __future__ import annotations

import math

import numbers
import random as _random
from dataclasses import dataclass
from typing import Any, Mapping

from nni.mutable import SampleValidationError

from nni_bigLittle.nn.arch import (
    ACTIVATIONS, ROUTER_POLICIES, ArchConfig, BlockConfig, ConvConfig, HeadConfig, RouterConfig, StageConfig,
    block_hidden_channels, se_channels, stage_channels,
)
from nni_bigLittle.errors import BigLittleError

__all__ = [
    'WIDTH_CHOICES', 'DEPTH_CHOICES', 'LITTLE_DEPTH_CHOICES', 'KERNEL_CHOICES', 'EXPAND_CHOICES',
    'THRESHOLD_CHOICES', 'StageSpec', 'SpaceSpec', 'InvalidSampleError', 'little_stage_specs', 'make_valid',
]

WIDTH_CHOICES = (0.25, 0.5, 0.75, 1.0)
DEPTH_CHOICES = (1, 2, 3, 4)
LITTLE_DEPTH_CHOICES = (0, 1, 2, 3, 4)
KERNEL_CHOICES = (3, 5, 7)
EXPAND_CHOICES = (1, 2, 4, 6)
THRESHOLD_CHOICES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _is_threshold(value: Any) -> bool:
    """A router threshold in [0, 1] (``tau >= 1`` escalates every input, ``tau <= 0`` none)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value <= 1.0)


class InvalidSampleError(BigLittleError, SampleValidationError):
    """A sample that does not describe a valid big/little pair.

    ``label`` names the offending choice (or choices) and ``allowed`` what would be accepted.
    It is a ``ValueError`` (through NNI's ``SampleValidationError``).
    """

    def __init__(self, message: str, label: str | None = None, allowed: Any = None):
        super().__init__(message)
        self.label = label
        self.allowed = allowed


@dataclass(frozen=True)
class StageSpec:
    """One elastic MBConv stage at full width: ``base_channels`` are scaled by the width choice."""
    base_channels: int
    stride: int
    act: str = 'relu'
    se: bool = False

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise ValueError(f'Unknown activation {self.act!r}; choose one of {ACTIVATIONS}.')
        if self.base_channels < 1 or self.stride not in (1, 2):
            raise ValueError(f'Invalid stage spec {self}: base_channels >= 1 and stride in (1, 2) required.')


@dataclass(frozen=True)
class SpaceSpec:
    """Everything that defines a ``BigLittleSpace`` besides its weights."""
    name: str
    resolution: int
    num_classes: int
    stem_channels: int
    stem_stride: int
    trunk: tuple[StageSpec, ...]
    little_stages: int
    little_width_ratio: float
    little_head_channels: int
    big_head_channels: int
    router_hidden: int = 32
    dropout: float = 0.0
    stem_act: str = 'hswish'
    head_act: str = 'hswish'
    width_choices: tuple[float, ...] = WIDTH_CHOICES
    depth_choices: tuple[int, ...] = DEPTH_CHOICES
    little_depth_choices: tuple[int, ...] = LITTLE_DEPTH_CHOICES
    kernel_choices: tuple[int, ...] = KERNEL_CHOICES
    expand_choices: tuple[int, ...] = EXPAND_CHOICES
    policy_choices: tuple[str, ...] = ROUTER_POLICIES
    threshold_choices: tuple[float, ...] = THRESHOLD_CHOICES

    def __post_init__(self):
        if len(self.trunk) < 2:
            raise ValueError('The trunk needs at least two stages: one shared, one in the big tail.')
        unknown = set(self.policy_choices) - set(ROUTER_POLICIES)
        if unknown:
            raise ValueError(f'Unknown router policies {sorted(unknown)}; choose from {ROUTER_POLICIES}.')
        if min(self.depth_choices) < 1:
            raise ValueError('Trunk stages need depth >= 1; only little stages may have depth 0.')

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> 'SpaceSpec':
        """The spec of ``dataclasses.asdict(spec)`` after a round trip through a file (lists back to tuples)."""
        fields = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
        fields['trunk'] = tuple(StageSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in stage.items()})
                                for stage in fields['trunk'])
        return cls(**fields)

    # ----- labels -------------------------------------------------------------------------------------------
    @property
    def forks(self) -> tuple[int, ...]:
        """Every fork point: 0 (after the stem) .. len(trunk) - 1 (one trunk stage left for the big tail)."""
        return tuple(range(len(self.trunk)))

    @property
    def max_little_depth(self) -> int:
        return max(self.little_depth_choices)

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Every label with its allowed values, in a stable order."""
        out: dict[str, tuple[Any, ...]] = {}
        for i in range(len(self.trunk)):
            out[f'trunk/s{i}/width'] = self.width_choices
            out[f'trunk/s{i}/depth'] = self.depth_choices
            for j in range(max(self.depth_choices)):
                out[f'trunk/s{i}/b{j}/kernel'] = self.kernel_choices
                out[f'trunk/s{i}/b{j}/expand'] = self.expand_choices
        out['little/fork'] = self.forks
        for i in range(self.little_stages):
            out[f'little/s{i}/width'] = self.width_choices
            out[f'little/s{i}/depth'] = self.little_depth_choices
            for j in range(self.max_little_depth):
                out[f'little/s{i}/b{j}/kernel'] = self.kernel_choices
                out[f'little/s{i}/b{j}/expand'] = self.expand_choices
        out['router/policy'] = self.policy_choices
        out['router/threshold'] = self.threshold_choices
        return out

    # ----- validation ---------------------------------------------------------------------------------------
    def check(self, sample: Mapping[str, Any]) -> InvalidSampleError | None:
        """Return what is wrong with ``sample`` (or ``None``); see :meth:`validate` for the raising form."""
        if not isinstance(sample, Mapping):
            return InvalidSampleError(f'A sample must be a dict {{label: value}}, got {type(sample).__name__}.')
        choices = self.choices()
        unknown = [label for label in sample if label not in choices]
        if unknown:
            return InvalidSampleError(
                f'Unknown label {unknown[0]!r} in sample. Known labels look like: '
                f'{", ".join(list(choices)[:4])}, ... (see space.simplify()).',
                label=unknown[0], allowed=sorted(choices))
        for label, allowed in choices.items():
            if label not in sample:
                return InvalidSampleError(f'Missing label {label!r}; allowed values: {list(allowed)}.',
                                          label=label, allowed=allowed)
            value = sample[label]
            if label == 'router/threshold' and _is_threshold(value):
                continue  # search draws from the grid; a threshold calibrated on data may lie anywhere in [0, 1]
            if isinstance(value, bool) or not any(_same(value, a) for a in allowed):
                return InvalidSampleError(f'{label!r} = {value!r} is out of range; allowed values: {list(allowed)}.',
                                          label=label, allowed=allowed)
        from nni_bigLittle.nn.costs import arch_costs  # local import: costs depends on arch records only
        costs = arch_costs(self._decode_unchecked(sample))
        if costs.little_macs >= costs.big_macs:
            return InvalidSampleError(
                f'The little network costs {costs.little_macs / 1e6:.2f} MMACs, not less than the big network '
                f'({costs.big_macs / 1e6:.2f} MMACs). Lower little/s*/width or little/s*/depth, or use a smaller '
                f'little/fork (allowed: {list(self.forks)}), or widen/deepen the trunk stages after the fork.',
                label='little/fork', allowed=self.forks)
        return None

    def validate(self, sample: Mapping[str, Any]) -> None:
        error = self.check(sample)
        if error is not None:
            raise error

    # ----- sampling -----------------------------------------------------------------------------------------
    def random_sample(self, rng: _random.Random | None = None, fixed: Mapping[str, Any] | None = None,
                      max_tries: int = 1000) -> dict[str, Any]:
        """Draw a valid sample uniformly per label (rejecting little >= big), keeping ``fixed`` labels."""
        rng = rng if rng is not None else _random.Random()
        fixed = dict(fixed or {})
        choices = self.choices()
        for _ in range(max_tries):
            sample = {label: fixed[label] if label in fixed else rng.choice(allowed)
                      for label, allowed in choices.items()}
            if self.check(sample) is None:
                return sample
        raise InvalidSampleError(f'No valid sample found in {max_tries} tries with fixed choices {fixed}; '
                                 'the fixed choices probably make the little network costlier than the big one.')

    def largest(self) -> dict[str, Any]:
        """The largest big network, with the cheapest little network (latest fork, depth-0 stages)."""
        return self._extreme(max)

    def smallest(self) -> dict[str, Any]:
        """The smallest big network, with the cheapest little network (latest fork, depth-0 stages)."""
        return self._extreme(min)

    def _extreme(self, pick) -> dict[str, Any]:
        from nni_bigLittle.nn.costs import arch_costs
        base = {label: (min(allowed) if label.startswith('little/') else pick(allowed))
                for label, allowed in self.choices().items()}
        base['router/policy'] = self.policy_choices[0]
        base['router/threshold'] = self.threshold_choices[len(self.threshold_choices) // 2]
        candidates = []
        for fork in self.forks:  # the fork at which the smallest little network is cheapest
            sample = {**base, 'little/fork': fork}
            if self.check(sample) is None:
                candidates.append((arch_costs(self._decode_unchecked(sample)).little_macs, fork, sample))
        if not candidates:
            raise InvalidSampleError('No fork point gives a little network cheaper than this big network.',
                                     label='little/fork', allowed=self.forks)
        return min(candidates, key=lambda c: c[:2])[2]

    # ----- decoding -----------------------------------------------------------------------------------------
    def decode(self, sample: Mapping[str, Any]) -> ArchConfig:
        """Validate ``sample`` and turn it into the :class:`ArchConfig` of the frozen pair."""
        self.validate(sample)
        return self._decode_unchecked(sample)

    def _decode_unchecked(self, sample: Mapping[str, Any]) -> ArchConfig:
        stem = ConvConfig(3, self.stem_channels, 3, self.stem_stride, self.stem_act)
        trunk = []
        channels = stem.out_channels
        for i, stage in enumerate(self.trunk):
            trunk.append(_stage_config(sample, f'trunk/s{i}', stage, channels))
            channels = trunk[-1].out_channels
        fork = int(sample['little/fork'])
        channels = trunk[fork - 1].out_channels if fork > 0 else stem.out_channels
        little = []
        for i, stage in enumerate(little_stage_specs(self, fork)):
            little.append(_stage_config(sample, f'little/s{i}', stage, channels))
            channels = little[-1].out_channels
        little_head = HeadConfig(channels, self.little_head_channels, self.num_classes, self.head_act, self.dropout)
        big_head = HeadConfig(trunk[-1].out_channels, self.big_head_channels, self.num_classes, self.head_act,
                              self.dropout)
        router = RouterConfig(str(sample['router/policy']), float(sample['router/threshold']),
                              self.little_head_channels + self.num_classes, self.router_hidden)
        return ArchConfig(self.resolution, self.num_classes, stem, tuple(trunk), fork, tuple(little),
                          little_head, big_head, router, sample=dict(sample))


def make_valid(spec: SpaceSpec, sample: Mapping[str, Any]) -> dict[str, Any]:
    """``sample`` unchanged if valid; else the same big network with its little network shrunk until
    it is cheaper than the big one. Deterministic:

    1. lower ``little/s{i}/depth`` one allowed value at a time, last little stage first;
    2. then lower ``little/s{i}/width`` the same way;
    3. then, with the smallest little stages, move ``little/fork`` to the valid fork point nearest
       to the chosen one (the earlier one on a tie).

    Raises :class:`InvalidSampleError` for a malformed sample (missing, unknown or out-of-range
    labels: those are not repaired), or when no little network is cheaper than the big one.
    """
    sample = dict(sample)
    error = spec.check(sample)
    if error is None:
        return sample
    malformed = _malformed(spec, sample)
    if malformed is not None:
        raise malformed
    for kind, allowed in (('depth', spec.little_depth_choices), ('width', spec.width_choices)):
        ordered = sorted(allowed)
        for i in reversed(range(spec.little_stages)):
            label = f'little/s{i}/{kind}'
            while True:
                lower = [v for v in ordered if v < sample[label] - 1e-9]
                if not lower:
                    break
                sample[label] = lower[-1]
                if spec.check(sample) is None:
                    return sample
    chosen_fork = int(sample['little/fork'])
    for fork in sorted(spec.forks, key=lambda f: (abs(f - chosen_fork), f)):
        candidate = {**sample, 'little/fork': fork}
        if spec.check(candidate) is None:
            return candidate
    raise InvalidSampleError('No little network of this space is cheaper than the big network of the sample '
                             f'{dict(sample)}; widen or deepen the trunk.', label='little/fork', allowed=spec.forks)


def _malformed(spec: SpaceSpec, sample: Mapping[str, Any]) -> InvalidSampleError | None:
    """The error of a missing, unknown or out-of-range label (``None`` if every label is in range)."""
    choices = spec.choices()
    for label in sample:
        if label not in choices:
            return InvalidSampleError(f'Unknown label {label!r} in sample.', label=label, allowed=sorted(choices))
    for label, allowed in choices.items():
        if label not in sample or not any(_same(sample[label], a) for a in allowed):
            return InvalidSampleError(f'{label!r} = {sample.get(label)!r} is missing or out of range; allowed values: '
                                      f'{list(allowed)}.', label=label, allowed=allowed)
    return None


def little_stage_specs(spec: SpaceSpec, fork: int) -> tuple[StageSpec, ...]:
    """The little branch of fork ``fork`` mirrors the trunk stages it replaces, thinner.

    Little stage ``i`` copies trunk stage ``fork + i`` (stride, activation, SE) at
    ``little_width_ratio`` of its channels; past the last trunk stage it repeats the last stage
    with stride 1.
    """
    stages = []
    last = len(spec.trunk) - 1
    for i in range(spec.little_stages):
        src = spec.trunk[min(fork + i, last)]
        stride = src.stride if fork + i <= last else 1
        channels = max(1, round(src.base_channels * spec.little_width_ratio))
        stages.append(StageSpec(channels, stride, src.act, src.se))
    return tuple(stages)


def _stage_config(sample: Mapping[str, Any], prefix: str, stage: StageSpec, in_channels: int) -> StageConfig:
    depth = int(sample[f'{prefix}/depth'])
    out_channels = stage_channels(stage.base_channels, sample[f'{prefix}/width'])
    blocks = []
    channels = in_channels
    for j in range(depth):
        expand = int(sample[f'{prefix}/b{j}/expand'])
        hidden = block_hidden_channels(channels, expand)
        blocks.append(BlockConfig(
            in_channels=channels, out_channels=out_channels, hidden_channels=hidden,
            kernel_size=int(sample[f'{prefix}/b{j}/kernel']), expand_ratio=expand,
            stride=stage.stride if j == 0 else 1, act=stage.act,
            se_channels=se_channels(hidden) if stage.se else 0,
            residual=j > 0,
        ))
        channels = out_channels
    return StageConfig(tuple(blocks), in_channels, out_channels if depth > 0 else in_channels)


def _same(value: Any, allowed: Any) -> bool:
    """Membership test that accepts 4 for 4.0 (JSON) but never True for 1 or '4' for 4."""
    if isinstance(allowed, str) or isinstance(value, str):
        return value == allowed
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return abs(float(value) - float(allowed)) < 1e-9
    return False
