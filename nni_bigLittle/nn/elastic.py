"""Elastic (weight-shared) MBConv ops of the supernet, built on NNI's mixed operations.

Weights are allocated at the largest choice and sliced by NNI's ``MixedConv2d`` /
``MixedBatchNorm2d`` (channel prefix, kernel centre)::

    weight[:out, :in // groups, c - k//2 : c + k//2 + 1, c - k//2 : c + k//2 + 1]   (c = centre of the 7x7)

That one routine (``MixedOperation.freeze_weight``) runs both in the supernet's forward and in
:func:`copy_sliced`, which fills the static twins of :mod:`nni_bigLittle.nn.ops`; so a frozen model
equals the supernet under the same sample. Every elastic block has ``extract_into(static, sample)``.

The ops start in NNI's path-sampling mode (``resample(memo)`` fixes the active choice), which is
what NNI's ``RandomOneShot`` / ``ENAS`` use; the space's ``extra_oneshot_hooks`` hand other NNI
strategies the same modules under their own policy.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

import nni_bigLittle._nni_compat  # noqa: F401  (quiet NNI import)
from nni.mutable import Categorical, MutableExpression, label_scope
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.operation import MixedBatchNorm2d, MixedConv2d, MixedOperation
from nni.nas.oneshot.pytorch.supermodule.sampling import MixedOpPathSamplingPolicy
from nni.nas.oneshot.pytorch.supermodule._expression_utils import traverse_all_options

from nni_bigLittle.nn.arch import HeadConfig, RouterConfig, StageConfig, block_hidden_channels, se_channels, stage_channels
from nni_bigLittle.nn.ops import ClassifierHead, ConvBNAct, MBConv, SqueezeExcite, Stage, make_activation
from nni_bigLittle.nn.router import Router, build_router_mlp, router_confidence

__all__ = [
    'elastic_conv2d', 'elastic_batchnorm2d', 'copy_sliced', 'ElasticConvBNAct', 'ElasticSqueezeExcite',
    'ElasticMBConv', 'ElasticStage', 'ElasticHead', 'ElasticRouter',
]


def _is_mutable(value: Any) -> bool:
    return isinstance(value, MutableExpression)


class CachedPathSamplingPolicy(MixedOpPathSamplingPolicy):
    """NNI's path sampling for mixed ops, with the op's labels and frozen arguments memoised.

    NNI re-simplifies the op and re-evaluates its expressions on every ``resample``; a
    supernet step activates several subnets, so this is done once per distinct choice tuple.
    """

    def __init__(self, operation: MixedOperation, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> None:
        super().__init__(operation, memo, mutate_kwargs)
        self._labels = operation.simplify()
        self._frozen: dict[tuple, dict[str, Any]] = {}

    def resample(self, operation: MixedOperation, memo: dict[str, Any]) -> dict[str, Any]:
        result = {label: memo[label] if label in memo else mutable.random() for label, mutable in self._labels.items()}
        key = tuple(result.values())
        if key not in self._frozen:
            self._frozen[key] = {name: expr.freeze(result) for name, expr in operation.mutable_arguments.items()}
        self._sampled = self._frozen[key]
        return result


def _path_sampling(op: MixedOperation) -> MixedOperation:
    op.sampling_policy = CachedPathSamplingPolicy(op, {}, {})
    return op


_MAX_OPTION: dict[str, Any] = {}


def _max_option(expr: MutableExpression) -> Any:
    """Largest value an expression can take, memoised: the same channel expression sizes many ops,
    and enumerating every combination of its choices is NNI's slow path."""
    key = repr(expr)
    if key not in _MAX_OPTION:
        _MAX_OPTION[key] = max(traverse_all_options(expr))
    return _MAX_OPTION[key]


class _SupernetConv2d(MixedConv2d):
    """NNI's ``MixedConv2d`` (same slicing, same hooks) with memoised allocation sizes."""

    def super_init_argument(self, name: str, value_choice: MutableExpression) -> Any:
        if name == 'groups' and self.mutable_arguments.get('in_channels') is value_choice:
            return _max_option(value_choice)  # depthwise: groups == in_channels, one channel per group
        if name in ('in_channels', 'out_channels', 'kernel_size', 'padding'):
            return _max_option(value_choice)
        return super().super_init_argument(name, value_choice)


class _SupernetBatchNorm2d(MixedBatchNorm2d):
    def super_init_argument(self, name: str, value_choice: MutableExpression) -> Any:
        return _max_option(value_choice)


def elastic_conv2d(in_channels: Any, out_channels: Any, kernel_size: Any = 1, stride: int = 1, groups: Any = 1,
                   bias: bool = False) -> nn.Module:
    """A conv whose channels / kernel may be NNI expressions; a plain ``nn.Conv2d`` when none is."""
    kwargs = dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
                  padding=kernel_size // 2, groups=groups, bias=bias)
    if not any(_is_mutable(v) for v in kwargs.values()):
        return nn.Conv2d(**kwargs)
    return _path_sampling(_SupernetConv2d(kwargs))


def elastic_batchnorm2d(num_features: Any) -> nn.Module:
    if not _is_mutable(num_features):
        return nn.BatchNorm2d(num_features)
    return _path_sampling(_SupernetBatchNorm2d({'num_features': num_features}))


@torch.no_grad()
def copy_sliced(src: nn.Module, dst: nn.Module, sample: dict[str, Any]) -> None:
    """Copy ``src``'s weights under ``sample`` into the static module ``dst`` (shapes must match exactly)."""
    if isinstance(src, MixedOperation):
        arguments = {**src.init_arguments}
        arguments.update({name: expr.freeze(sample) for name, expr in src.mutable_arguments.items()})
        state = {name: tensor for name, tensor in src.freeze_weight(**arguments).items() if tensor is not None}
        if isinstance(src, nn.BatchNorm2d) and src.num_batches_tracked is not None:
            state['num_batches_tracked'] = src.num_batches_tracked
    else:
        state = src.state_dict()
    target = dst.state_dict(keep_vars=True)
    if set(state) != set(target):
        raise RuntimeError(f'Cannot copy {type(src).__name__} into {type(dst).__name__}: '
                           f'tensors {sorted(state)} vs {sorted(target)}.')
    for name, tensor in state.items():
        if target[name].shape != tensor.shape:
            raise RuntimeError(f'Shape mismatch copying {name} of {type(src).__name__}: sliced {tuple(tensor.shape)}, '
                               f'static {tuple(target[name].shape)}. The space and ArchConfig disagree.')
        target[name].data.copy_(tensor)


class ElasticConvBNAct(nn.Module):
    def __init__(self, in_channels: Any, out_channels: Any, kernel_size: Any = 1, stride: int = 1, groups: Any = 1,
                 act: str = 'relu'):
        super().__init__()
        self.conv = elastic_conv2d(in_channels, out_channels, kernel_size, stride, groups)
        self.bn = elastic_batchnorm2d(out_channels)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def extract_into(self, static: ConvBNAct, sample: dict[str, Any]) -> None:
        copy_sliced(self.conv, static.conv, sample)
        copy_sliced(self.bn, static.bn, sample)


class ElasticSqueezeExcite(nn.Module):
    def __init__(self, channels: Any):
        super().__init__()
        squeeze = se_channels(channels)
        self.reduce = elastic_conv2d(channels, squeeze, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = elastic_conv2d(squeeze, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    forward = SqueezeExcite.forward

    def extract_into(self, static: SqueezeExcite, sample: dict[str, Any]) -> None:
        copy_sliced(self.reduce, static.reduce, sample)
        copy_sliced(self.expand, static.expand, sample)


class ElasticMBConv(nn.Module):
    """MBConv with elastic kernel (``kernel``) and expansion (``expand``), labelled in the current scope."""

    def __init__(self, in_channels: Any, out_channels: Any, stride: int, act: str, se: bool, residual: bool,
                 kernel_choices: Sequence[int], expand_choices: Sequence[int]):
        super().__init__()
        self.kernel = Categorical(list(kernel_choices), label='kernel')
        self.expand_ratio = Categorical(list(expand_choices), label='expand')
        hidden = block_hidden_channels(in_channels, self.expand_ratio)
        self.residual = residual
        self.expand = ElasticConvBNAct(in_channels, hidden, 1, act=act)
        self.depthwise = ElasticConvBNAct(hidden, hidden, self.kernel, stride, groups=hidden, act=act)
        self.se = ElasticSqueezeExcite(hidden) if se else nn.Identity()
        self.project = ElasticConvBNAct(hidden, out_channels, 1, act='identity')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out

    def extract_into(self, static: MBConv, sample: dict[str, Any]) -> None:
        self.expand.extract_into(static.expand, sample)
        self.depthwise.extract_into(static.depthwise, sample)
        if isinstance(self.se, ElasticSqueezeExcite):
            self.se.extract_into(static.se, sample)
        self.project.extract_into(static.project, sample)


class ElasticStage(BaseSuperNetModule):
    """A stage of elastic MBConv blocks with ``width`` and ``depth`` choices (labels in the current scope).

    Depth may include 0 (little stages): the stage is then skipped and passes its input through,
    so ``out_channels`` is an expression that falls back to ``in_channels``.
    """

    def __init__(self, in_channels: Any, base_channels: int, stride: int, act: str, se: bool,
                 width_choices: Sequence[float], depth_choices: Sequence[int], kernel_choices: Sequence[int],
                 expand_choices: Sequence[int]):
        super().__init__()
        self.width = Categorical(list(width_choices), label='width')
        self.depth = self.add_mutable(Categorical(list(depth_choices), label='depth'))
        width_channels = stage_channels(base_channels, self.width)
        blocks = []
        for j in range(max(depth_choices)):
            with label_scope(f'b{j}'):
                blocks.append(ElasticMBConv(in_channels if j == 0 else width_channels, width_channels,
                                            stride if j == 0 else 1, act, se, residual=j > 0,
                                            kernel_choices=kernel_choices, expand_choices=expand_choices))
        self.blocks = nn.ModuleList(blocks)
        self.in_channels = in_channels
        self.out_channels = (MutableExpression.condition(self.depth == 0, in_channels, width_channels)
                             if 0 in depth_choices else width_channels)
        self._active_depth: int | None = None

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        depth = memo[self.depth.label] if self.depth.label in memo else self.depth.random()
        self._active_depth = int(depth)
        return {self.depth.label: depth}

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {} if self.depth.label in memo else {self.depth.label: self.depth.random()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._active_depth is None:
            raise RuntimeError('Activate a sample (space.activate(sample)) before running the supernet.')
        for block in self.blocks[:self._active_depth]:
            x = block(x)
        return x

    def extract_into(self, static: Stage, sample: dict[str, Any]) -> None:
        if len(static) != int(sample[self.depth.label]):
            raise RuntimeError(f'Stage {self.depth.label} has depth {sample[self.depth.label]} in the sample '
                               f'but the static stage has {len(static)} blocks.')
        for elastic_block, static_block in zip(self.blocks, static):
            elastic_block.extract_into(static_block, sample)

    def extract(self, cfg: StageConfig, sample: dict[str, Any]) -> Stage:
        stage = Stage(cfg)
        self.extract_into(stage, sample)
        return stage


class ElasticHead(nn.Module):
    """Classifier head whose input channels are elastic. Returns ``(logits, pooled_features)``."""

    def __init__(self, in_channels: Any, head_channels: int, num_classes: int, act: str, dropout: float):
        super().__init__()
        self.conv = ElasticConvBNAct(in_channels, head_channels, 1, act=act)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, num_classes)

    forward = ClassifierHead.forward

    def extract_into(self, static: ClassifierHead, sample: dict[str, Any]) -> None:
        self.conv.extract_into(static.conv, sample)
        copy_sliced(self.classifier, static.classifier, sample)

    def extract(self, cfg: HeadConfig, sample: dict[str, Any]) -> ClassifierHead:
        head = ClassifierHead(cfg)
        self.extract_into(head, sample)
        return head


class ElasticRouter(BaseSuperNetModule):
    """The router mutable of the supernet: ``router/policy`` and ``router/threshold``.

    The learned MLP is always allocated; it is copied into the frozen router only when the
    sampled policy is ``learned``. The threshold is not relaxed by differentiable strategies:
    it is calibrated after the search (see :func:`calibrate_threshold`).
    """

    def __init__(self, in_features: int, hidden: int, policies: Sequence[str], thresholds: Sequence[float],
                 repair: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        super().__init__()
        self.repair = repair  # sample -> valid sample, applied by export()
        with label_scope('router'):
            self.policy_choice = self.add_mutable(Categorical(list(policies), label='policy'))
            self.threshold_choice = self.add_mutable(Categorical(list(thresholds), label='threshold'))
        self.in_features, self.hidden = in_features, hidden
        self.mlp = build_router_mlp(in_features, hidden)
        self._policy: str | None = None
        self._threshold: float | None = None

    def _choose(self, memo: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for choice in (self.policy_choice, self.threshold_choice):
            out[choice.label] = memo[choice.label] if choice.label in memo else choice.random()
        return out

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        chosen = self._choose(memo)
        self._policy = chosen[self.policy_choice.label]
        self._threshold = float(chosen[self.threshold_choice.label])
        return chosen

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """The router's labels; and, when ``memo`` holds every other label (NNI exports the modules in
        order and the router comes last) and ``repair`` was given, the changes that make the pair valid
        (an independently drawn little network may come out costlier than the big one)."""
        chosen = {label: value for label, value in self._choose(memo).items() if label not in memo}
        if self.repair is not None:
            sample = {**memo, **chosen}
            repaired = self.repair(sample)
            chosen.update({label: value for label, value in repaired.items() if sample.get(label) != value})
        return chosen

    @property
    def active_policy(self) -> str:
        if self._policy is None:
            raise RuntimeError('Activate a sample (space.activate(sample)) before running the supernet.')
        return self._policy

    @property
    def active_threshold(self) -> float:
        if self._threshold is None:
            raise RuntimeError('Activate a sample (space.activate(sample)) before running the supernet.')
        return self._threshold

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return router_confidence(self.active_policy, logits, features, self.mlp)

    def active_config(self, sample: dict[str, Any]) -> RouterConfig:
        return RouterConfig(sample[self.policy_choice.label], float(sample[self.threshold_choice.label]),
                            self.in_features, self.hidden)

    @torch.no_grad()
    def extract(self, sample: dict[str, Any]) -> Router:
        router = Router(self.active_config(sample))
        if router.mlp is not None:
            router.mlp.load_state_dict(self.mlp.state_dict())
        return router

    def freeze(self, sample: dict[str, Any]) -> Router:
        return self.extract(sample)
