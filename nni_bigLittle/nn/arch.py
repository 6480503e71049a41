"""Framework-free records that describe one frozen big/little architecture.

A flat ``{label: value}`` sample is decoded (``nni_bigLittle.search_spaces.spec.decode``) into an
:class:`ArchConfig`; the standalone model, the cost model and the predictors all read this record,
so channel counts are computed once, by :func:`make_divisible`, and never re-derived elsewhere.
Nothing here imports torch, and NNI only when present.
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any

try:  # NNI is only needed to build the supernet; a frozen model runs without it
    from nni.mutable import MutableExpression
    from nni.mutable.symbol import SymbolicExpression
except ImportError:  # pragma: no cover - exercised by the no-NNI inference test in a subprocess
    MutableExpression = SymbolicExpression = None

__all__ = [
    'make_divisible', 'ConvConfig', 'BlockConfig', 'StageConfig', 'HeadConfig', 'RouterConfig', 'ArchConfig',
    'ACTIVATIONS', 'ROUTER_POLICIES', 'stage_channels', 'block_hidden_channels', 'se_channels',
]

ACTIVATIONS = ('relu', 'hswish')
ROUTER_POLICIES = ('max_softmax', 'entropy', 'margin', 'learned')


def make_divisible(value: Any, divisor: int = 8, min_value: int | None = None) -> Any:
    """Round a channel count to the nearest multiple of ``divisor``, never losing more than 10 %.

    The one channel-rounding rule of the package (MobileNet's). It takes a number or an NNI
    ``MutableExpression`` (e.g. ``width_choice * 24``) and returns an ``int`` or an expression
    that freezes to the very same ``int``, so the supernet allocates, slices and the frozen model
    builds with identical channel counts.
    """
    min_value = divisor if min_value is None else min_value
    if SymbolicExpression is not None and isinstance(value, SymbolicExpression):
        rounded = MutableExpression.to_int(value + divisor / 2) // divisor * divisor
        rounded = MutableExpression.max(min_value, rounded)
        return MutableExpression.condition(rounded < 0.9 * value, rounded + divisor, rounded)
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


SE_REDUCTION = 4


def stage_channels(base_channels: int, width: Any) -> Any:
    """Output channels of a stage at width multiplier ``width`` (a number or an NNI expression)."""
    return make_divisible(width * base_channels)


def block_hidden_channels(in_channels: Any, expand: Any) -> Any:
    """Channels inside an MBConv block (after the 1x1 expansion)."""
    return make_divisible(in_channels * expand)


def se_channels(hidden_channels: Any) -> Any:
    """Squeeze channels of a block's squeeze-excite."""
    return make_divisible(hidden_channels / SE_REDUCTION)


@dataclass(frozen=True)
class ConvConfig:
    """A plain conv-bn-act (the stem)."""
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    act: str


@dataclass(frozen=True)
class BlockConfig:
    """One MBConv block: 1x1 expand, k x k depthwise, optional SE, 1x1 project."""
    in_channels: int
    out_channels: int
    hidden_channels: int
    kernel_size: int
    expand_ratio: int
    stride: int
    act: str
    se_channels: int  # 0 = no squeeze-excite
    residual: bool


@dataclass(frozen=True)
class StageConfig:
    """A stage of MBConv blocks; ``blocks`` is empty for a depth-0 little stage (skipped)."""
    blocks: tuple[BlockConfig, ...]
    in_channels: int
    out_channels: int  # equals in_channels when the stage is skipped

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class HeadConfig:
    """1x1 conv to ``head_channels``, activation, global pooling, dropout, linear classifier."""
    in_channels: int
    head_channels: int
    num_classes: int
    act: str
    dropout: float


@dataclass(frozen=True)
class RouterConfig:
    """Escalation rule: escalate an input when the router's confidence is below ``threshold``.

    ``in_features`` / ``hidden`` describe the learned router's MLP
    (input = little head features + sorted little probabilities); unused by the other policies.
    """
    policy: str
    threshold: float
    in_features: int
    hidden: int


@dataclass(frozen=True)
class ArchConfig:
    """A whole frozen big/little pair.

    ``fork`` is the number of trunk stages the little network shares (0 = it forks right after
    the stem). Big = stem + all trunk stages + big head; little = stem + ``trunk[:fork]`` + little
    stages + little head; the big tail is ``trunk[fork:]`` + big head.
    """
    resolution: int
    num_classes: int
    stem: ConvConfig
    trunk: tuple[StageConfig, ...]
    fork: int
    little: tuple[StageConfig, ...]
    little_head: HeadConfig
    big_head: HeadConfig
    router: RouterConfig
    sample: dict[str, Any] = field(default_factory=dict, compare=False)

    def fork_channels(self) -> int:
        """Channels of the cached features the big tail resumes from."""
        return self.trunk[self.fork - 1].out_channels if self.fork > 0 else self.stem.out_channels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
