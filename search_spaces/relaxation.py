"""NNI's differentiable one-shot strategies (``DARTS``, ``GumbelDARTS``, ``Proxyless``) on ``BigLittleSpace``.

``BigLittleSpace.extra_oneshot_hooks`` hands these strategies :func:`differentiable_hooks`, which turn
the path-sampling supernet into a relaxed one *in place*: every module keeps its parameters, buffers
and state-dict keys (so ``space.freeze(sample)`` still works and a supernet trained by
``RandomOneShot`` can be loaded), and gains the architecture parameters ``_arch_alpha`` that NNI's
strategy created for each label (``DARTS.mutate_model`` makes one ``nn.Parameter`` per label of
``space.simplify()``; every module that uses a label shares that one parameter).

How each label is relaxed (``w`` = the label's path weights, see :class:`ArchitectureWeights`):

=================================  ==============================================================
label                              relaxation
=================================  ==============================================================
``.../b{j}/kernel``                NNI's mixed-op relaxation of the depthwise conv: one conv whose
                                   kernel is ``sum_k w_k * centre_k(W)`` (equal to the weighted sum
                                   of the outputs of every kernel size, since a conv is linear in
                                   its weight)
``.../b{j}/expand``, ``.../width``  channel masks (FBNetV2): ops run at their largest width and each
                                   activation whose channel count ``C`` is a choice is multiplied
                                   once by ``m_c = sum_C w(C) [c < C]`` (the weighted sum of its
                                   channel-masked outputs; see :class:`DifferentiableStage`)
``trunk/s{i}/depth``               weighted sum of the stage outputs after each candidate depth
                                   (like NNI's ``DifferentiableMixedRepeat``)
``little/s{i}/depth``              depth 0 skips the stage, which changes resolution and channels,
                                   so the relaxed fork runs two paths per such stage (skipped,
                                   weight ``w_0``; run, weight ``1 - w_0`` with the depth mixture of
                                   the depths >= 1 inside) and mixes its logits over the paths
``little/fork``                    weighted sum of the (logits, features) of one little branch per
                                   fork point (NNI's ``DifferentiableMixedLayer``)
``router/policy``                  the router's confidence is the weighted sum of the policies'
``router/threshold``               not used in the forward pass at all
=================================  ==============================================================

The weights per strategy: ``DARTS`` ``w = softmax(alpha)``; ``GumbelDARTS``
``w = softmax((alpha + g) / tau)`` with Gumbel noise ``g`` drawn once per ``resample()`` (so every
module sharing a label sees the same sample in a step) and ``tau`` from NNI's temperature schedule;
``Proxyless`` a binary gate: ``resample()`` draws one value per label from ``softmax(alpha)`` and
``w = onehot + p - p.detach()`` with ``p = softmax(alpha)``. The forward values are then exactly
the sampled single path, and the gradient reaching ``alpha`` is ProxylessNAS's estimate
``dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i)``. Unlike NNI's ``ProxylessMixedLayer``, the
zero-gated paths are still evaluated in the forward pass (their outputs are what ``dL/dg_j`` needs;
NNI recomputes them in backward instead), so memory is that of DARTS.

**The router does not influence the classification loss**: the little and big logits do not
depend on the router, so ``router/policy`` and ``router/threshold`` get gradients only from
penalties on :meth:`export_probs` (e.g. an expected-latency penalty, in which the escalation rate
depends on the threshold) or from a routing loss on the confidence the model returns. Their
parameters exist so that such penalties can move them; otherwise their export is the argmax of
near-uniform logits, and the threshold should be calibrated after the search
(:func:`nni_bigLittle.nn.router.calibrate_threshold`).

``export_probs(memo)`` of every relaxed module returns ``{label: {value: probability}}`` with
``probability`` a 0-d tensor of ``softmax(alpha)`` that keeps its graph to ``alpha`` (NNI's own
modules return floats, which a differentiable latency penalty could not use). Over all supernet
modules the labels are exactly those of ``space.spec.choices()``.

``export(memo)`` is the argmax of ``alpha`` per label. The router is the last supernet module of
the space, so when NNI's ``export()`` reaches it every other label is chosen; if the argmax pair
has a little network not cheaper than its big network, it is repaired there with
:func:`make_valid` (the little network is shrunk deterministically), so the exported sample always
passes ``space.spec.validate``.

With one-hot weights (Proxyless gates after ``space.activate(sample)``) the relaxed supernet
computes exactly the subnet ``space.freeze(sample)``. Under soft weights its batch norms see
mixtures, so their running statistics fit no single subnet: re-calibrate the frozen model's
(:func:`nni_bigLittle.nn.model.recalibrate_batchnorm`) before evaluating it.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# first: our elastic ops import NNI quietly (nni_bigLittle._nni_compat)
from nni_bigLittle.nn.elastic import ElasticRouter, ElasticSqueezeExcite, ElasticStage, _max_option
from nni.mutable import MutableExpression
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import GumbelSoftmax, MixedOpDifferentiablePolicy
from nni.nas.oneshot.pytorch.supermodule.operation import MixedBatchNorm2d, MixedConv2d, MixedOperation
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingLayer

from nni_bigLittle.nn.router import router_confidence
from nni_bigLittle.search_spaces.space import LittleBranch
from nni_bigLittle.search_spaces.spec import SpaceSpec, _same as _same_value, make_valid  # noqa: F401 (re-export)

__all__ = [
    'MODES', 'ArchitectureWeights', 'DifferentiableOpPolicy', 'DifferentiableStage', 'DifferentiableFork',
    'DifferentiableRouter', 'differentiable_hooks', 'make_valid', 'export_sample', 'export_probs', 'strategy_mode',
]

MODES = ('softmax', 'gumbel', 'proxyless')


def strategy_mode(strategy: Any, softmax: nn.Module | None = None) -> str:
    """``'proxyless'`` for NNI's ``Proxyless``, ``'gumbel'`` when the strategy's softmax is NNI's
    ``GumbelSoftmax`` (``GumbelDARTS``), else ``'softmax'`` (``DARTS``)."""
    from nni.nas.oneshot.pytorch.strategy import Proxyless
    if isinstance(strategy, Proxyless):
        return 'proxyless'
    if softmax is None and hasattr(strategy, 'configure_softmax'):
        softmax = strategy.configure_softmax()
    return 'gumbel' if isinstance(softmax, GumbelSoftmax) else 'softmax'


class ArchitectureWeights:
    """The architecture parameters of one relaxed supernet, shared by all its relaxed modules.

    ``alphas`` maps every label to NNI's ``nn.Parameter`` (one logit per value); ``values`` to the
    label's allowed values in the same order. ``softmax`` is the module NNI's strategy configured
    (``nn.Softmax`` or ``GumbelSoftmax``, whose ``tau`` the GumbelDARTS module anneals); the
    relaxed modules register it so that NNI finds it.
    """

    def __init__(self, alphas: Mapping[str, nn.Parameter], values: Mapping[str, Sequence[Any]], mode: str,
                 softmax: nn.Module, spec: SpaceSpec):
        if mode not in MODES:
            raise ValueError(f'Unknown relaxation mode {mode!r}; choose one of {MODES}.')
        for label, alpha in alphas.items():
            if alpha.numel() != len(values[label]):
                raise ValueError(f'Architecture parameter of {label!r} has {alpha.numel()} entries but the label has '
                                 f'{len(values[label])} values {list(values[label])}.')
        self.alphas = dict(alphas)
        self.values = {label: tuple(v) for label, v in values.items()}
        self.mode = mode
        self.softmax = softmax
        self.spec = spec
        self._noise: dict[str, torch.Tensor] = {}   # gumbel: the noise of the current step
        self._sampled: dict[str, int] = {}          # proxyless: the index of the sampled value

    # ----- weights ------------------------------------------------------------------------------------------
    def probs(self, label: str) -> torch.Tensor:
        """The categorical distribution ``softmax(alpha)`` of ``label`` (differentiable)."""
        return torch.softmax(self.alphas[label], dim=-1)

    def weights(self, label: str) -> torch.Tensor:
        """Path weights of ``label`` in the forward pass (see the module docstring)."""
        alpha = self.alphas[label]
        if self.mode == 'softmax':
            return self.softmax(alpha)
        if self.mode == 'gumbel':
            if label not in self._noise or self._noise[label].device != alpha.device:
                self._draw_noise(label)  # first use, or the supernet moved to another device
            tau = float(getattr(self.softmax, 'tau', 1.0))
            soft = torch.softmax((alpha + self._noise[label].to(alpha.dtype)) / tau, dim=-1)
            if getattr(self.softmax, 'hard', False):
                hard = F.one_hot(soft.argmax(), soft.numel()).to(soft)
                return hard - soft.detach() + soft  # straight-through
            return soft
        # proxyless: a binary gate on the sampled value, with the softmax's gradient
        if label not in self._sampled:
            self._sample(label)
        p = torch.softmax(alpha, dim=-1)
        gate = F.one_hot(torch.tensor(self._sampled[label], device=alpha.device), p.numel()).to(p)
        return gate + p - p.detach()

    def _draw_noise(self, label: str) -> int:
        alpha = self.alphas[label]
        uniform = torch.rand_like(alpha).clamp_(1e-10, 1.0 - 1e-7)
        self._noise[label] = -torch.log(-torch.log(uniform))
        return int((alpha.detach() + self._noise[label]).argmax())  # the Gumbel-max sample

    def _sample(self, label: str) -> int:
        with torch.no_grad():
            self._sampled[label] = int(torch.multinomial(self.probs(label), 1))
        return self._sampled[label]

    # ----- NNI's BaseSuperNetModule protocol, for a module's labels -------------------------------------------
    def resample(self, labels: Sequence[str], memo: dict[str, Any]) -> dict[str, Any]:
        """DARTS samples nothing (``{}``); GumbelDARTS draws new noise and returns its Gumbel-max sample;
        Proxyless draws the gated value. A label already in ``memo`` is taken from there (proxyless)
        or left as the module that put it there drew it (gumbel)."""
        if self.mode == 'softmax':
            return {}
        out = {}
        for label in labels:
            if label in memo:
                if self.mode == 'proxyless':
                    self._sampled[label] = self._index(label, memo[label])
                continue
            index = self._draw_noise(label) if self.mode == 'gumbel' else self._sample(label)
            out[label] = self.values[label][index]
        return out

    def export(self, labels: Sequence[str], memo: Mapping[str, Any]) -> dict[str, Any]:
        """The most likely value (argmax of ``alpha``) of each label not in ``memo``."""
        return {label: self.values[label][int(self.alphas[label].detach().argmax())]
                for label in labels if label not in memo}

    def export_probs(self, labels: Sequence[str], memo: Mapping[str, Any]) -> dict[str, dict[Any, torch.Tensor]]:
        """``{label: {value: probability}}``; probabilities are 0-d tensors with their graph to ``alpha``."""
        out = {}
        for label in labels:
            if label in memo:
                continue
            probs = self.probs(label)
            out[label] = {value: probs[i] for i, value in enumerate(self.values[label])}
        return out

    def _index(self, label: str, value: Any) -> int:
        for i, allowed in enumerate(self.values[label]):
            if _same_value(value, allowed):
                return i
        raise ValueError(f'{label!r} = {value!r} is not one of {list(self.values[label])}.')


def _attach(module: nn.Module, arch: ArchitectureWeights, labels: Sequence[str]) -> None:
    """Register ``labels``' architecture parameters and the strategy's softmax on ``module`` (NNI's
    attribute names: ``_arch_alpha``, ``_softmax``), so that ``.to(device)``, ``state_dict`` and
    NNI's temperature schedule see them."""
    module._arch = arch
    module._arch_labels = tuple(labels)
    module._arch_alpha = nn.ParameterDict({label: arch.alphas[label] for label in labels})
    module._softmax = arch.softmax


class _RelaxedModule:
    """Mix-in: NNI's ``BaseSuperNetModule`` protocol through the shared :class:`ArchitectureWeights`."""

    _arch: ArchitectureWeights
    _arch_labels: tuple[str, ...]

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        return self._arch.resample(self._arch_labels, memo)

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return self._arch.export(self._arch_labels, memo)

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        return self._arch.export_probs(self._arch_labels, memo)

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        """The architecture parameters NNI's ``DartsLightningModule`` optimises (not recursive)."""
        return iter(self._arch_alpha.values())


def _adopt(cls: type, module: nn.Module) -> nn.Module:
    """``module`` re-classed as its subclass ``cls``, sharing every parameter, buffer and submodule.

    Keeps state-dict keys and the ``extract_into`` / ``freeze`` code of the original class.
    """
    if not isinstance(module, cls.relaxes):
        raise TypeError(f'{cls.__name__} relaxes {cls.relaxes.__name__}, got {type(module).__name__}.')
    relaxed = object.__new__(cls)  # not cls(...): the module exists already, only its behaviour changes
    relaxed.__dict__.update(module.__dict__)
    return relaxed


# ----- mixed operations (convs, batch norms) ---------------------------------------------------------------

class _OptionTable:
    """How the outcomes of an expression (e.g. a channel count) depend on its labels' choices.

    ``matrix[k, c] = 1`` when the ``c``-th joint choice of ``labels`` (row-major, in
    ``itertools.product`` order) makes the expression equal ``outcomes[k]``. Built once per
    expression: NNI's ``traverse_all_options`` re-enumerates every combination on every forward.
    """

    def __init__(self, expr: MutableExpression, values: Mapping[str, Sequence[Any]]):
        self.labels = list(expr.simplify())
        sizes = [len(values[label]) for label in self.labels]
        outcome_of = [expr.freeze({label: values[label][i] for label, i in zip(self.labels, combo)})
                      for combo in itertools.product(*(range(n) for n in sizes))]
        self.outcomes = sorted(set(outcome_of))
        self.matrix = torch.zeros(len(self.outcomes), len(outcome_of))
        for c, outcome in enumerate(outcome_of):
            self.matrix[self.outcomes.index(outcome), c] = 1.0

    def probs(self, arch: ArchitectureWeights) -> torch.Tensor:
        """Weight of each outcome: the joint path weights of the labels, summed per outcome."""
        joint = None
        for label in self.labels:
            w = arch.weights(label)
            joint = w if joint is None else (joint[:, None] * w[None, :]).reshape(-1)
        self.matrix = _on(self.matrix, joint)
        return self.matrix @ joint


def _on(constant: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``constant`` on the device and dtype of ``like`` (the caller keeps the moved copy)."""
    if constant.device != like.device or constant.dtype != like.dtype:
        return constant.to(like)
    return constant


class DifferentiableOpPolicy(MixedOpDifferentiablePolicy):
    """NNI's differentiable mixed-op policy on our elastic convs and batch norms, for the **kernel**:
    the depthwise kernel is ``sum_k w_k * centre_k(W)`` (NNI's weighted slicing).

    Channel counts are not relaxed here: the ops run at their allocated (largest) width and
    :class:`DifferentiableStage` masks each activation once. NNI's policy would mask the weights of
    every op instead (expand out, depthwise out, project in: the mask of a channel enters cubed),
    which gives a zero ProxylessNAS gradient to every unsampled larger width. Other changes from
    NNI's policy: the weights come from :class:`ArchitectureWeights` (shared per label, Gumbel
    noise per step, Proxyless gates), kernel distributions come from a table built once, and
    ``export_probs`` keeps tensors (NNI's returns floats).
    """

    def __init__(self, operation: MixedOperation, memo: dict[str, Any], mutate_kwargs: dict[str, Any],
                 arch: ArchitectureWeights):
        super().__init__(operation, memo, {**mutate_kwargs, 'softmax': arch.softmax})
        self.arch = arch
        self.labels = tuple(operation.simplify())
        self.kernel_table = None
        if isinstance(operation, MixedConv2d) and 'kernel_size' in operation.mutable_arguments:
            self.kernel_table = _OptionTable(operation.mutable_arguments['kernel_size'], arch.values)
        operation._arch = arch
        operation._arch_labels = self.labels

    def resample(self, operation: MixedOperation, memo: dict[str, Any]) -> dict[str, Any]:
        return self.arch.resample(self.labels, memo)

    def export(self, operation: MixedOperation, memo: dict[str, Any]) -> dict[str, Any]:
        return self.arch.export(self.labels, memo)

    def export_probs(self, operation: MixedOperation, memo: dict[str, Any]) -> dict[str, Any]:
        return self.arch.export_probs(self.labels, memo)

    def forward_argument(self, operation: MixedOperation, name: str) -> Any:
        if name not in operation.mutable_arguments:
            return operation.init_arguments[name]
        if name == 'kernel_size' and self.kernel_table is not None:
            probs = self.kernel_table.probs(self.arch)
            return {kernel: probs[k] for k, kernel in enumerate(self.kernel_table.outcomes)}
        if name == 'padding':
            return operation.padding  # the largest: MixedConv2d uses it for a weighted kernel anyway
        # channels (and depthwise groups = channels): the allocated, largest value
        return getattr(operation, name)


def _relax_operation(op: MixedOperation, arch: ArchitectureWeights, memo: dict[str, Any],
                     mutate_kwargs: dict[str, Any]) -> None:
    if isinstance(op, MixedConv2d):
        unsupported = set(op.mutable_arguments) - {'in_channels', 'out_channels', 'groups', 'kernel_size', 'padding'}
    elif isinstance(op, MixedBatchNorm2d):
        unsupported = set(op.mutable_arguments) - {'num_features'}
    else:
        unsupported = {type(op).__name__}
    if unsupported:
        raise TypeError(f'Cannot relax mutable {sorted(unsupported)} of {type(op).__name__} for differentiable search.')
    op.sampling_policy = DifferentiableOpPolicy(op, memo, mutate_kwargs, arch)


# ----- stages, little branches, fork, router --------------------------------------------------------------------

def _pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad the channels of ``x`` to ``channels``: in the relaxed supernet a tensor with fewer
    channels stands for the channel prefix of the largest one."""
    missing = channels - x.shape[1]
    if missing < 0:
        raise RuntimeError(f'Tensor has {x.shape[1]} channels, more than the {channels} expected.')
    return F.pad(x, (0, 0, 0, 0, 0, missing)) if missing else x


def _max_channels(channels: Any) -> int:
    return int(_max_option(channels)) if isinstance(channels, MutableExpression) else int(channels)


class DifferentiableStage(_RelaxedModule, ElasticStage):
    """An elastic stage with relaxed ``depth`` and relaxed channel counts.

    Depth: the weighted sum of the stage outputs after each candidate depth >= 1. Depth 0 (little
    stages) is a different path, handled by :class:`DifferentiableFork` through
    :meth:`relaxed_paths`.

    Channels (``width``, ``expand``, and the SE squeeze that follows them): every op runs at its
    largest width and three activations of each block are multiplied by the channel mask
    ``m_c = sum_C w(C) * [c < C] = P(channels > c)`` of their channel count ``C``: the depthwise
    output (hidden channels), the SE squeeze and the projection output (the stage width). That is
    the weighted sum of the channel-masked outputs (FBNetV2); each channel is masked exactly once,
    so with one-hot weights the block equals the sampled subnet and the ProxylessNAS gradient of
    a gate ``dL/dg_C = <dL/dy, y[:C]>`` is that of the narrower op.
    """

    relaxes = ElasticStage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if 0 in self.depth.values:
            raise RuntimeError(f'Stage {self.depth.label} may be skipped (depth 0); the relaxed fork runs it '
                               'through relaxed_paths().')
        return self._active_mixture(x, self._arch.weights(self.depth.label))

    # ----- channel masks ------------------------------------------------------------------------------------------
    def _mask(self, y: torch.Tensor, key: tuple[int, str], channels: Any) -> torch.Tensor:
        """``y`` times the channel mask of the count ``channels`` (an expression; ints need no mask)."""
        if not isinstance(channels, MutableExpression):
            return y
        tables = self.__dict__.setdefault('_mask_tables', {})  # (block, role) -> [option table, step matrix]
        if key not in tables:
            table = _OptionTable(channels, self._arch.values)
            steps = torch.zeros(len(table.outcomes), y.shape[1])
            for k, count in enumerate(table.outcomes):
                steps[k, :int(count)] = 1.0  # outcome k keeps channels [0, count)
            tables[key] = [table, steps]
        table, steps = tables[key]
        tables[key][1] = steps = _on(steps, y)
        mask = table.probs(self._arch) @ steps
        return y * mask.view(1, -1, *([1] * (y.dim() - 2)))

    def _block(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``j`` at full width with its channel masks (the relaxed ``ElasticMBConv.forward``)."""
        block = self.blocks[j]
        h = block.depthwise(block.expand(x))
        h = self._mask(h, (j, 'hidden'), _out_channels(block.depthwise.conv))
        if isinstance(block.se, ElasticSqueezeExcite):
            se = block.se
            squeeze = self._mask(se.act(se.reduce(h.mean((2, 3), keepdim=True))), (j, 'squeeze'),
                                 _out_channels(se.reduce))
            h = h * se.gate(se.expand(squeeze))
        out = self._mask(block.project(h), (j, 'out'), _out_channels(block.project.conv))
        return x + out if block.residual else out

    # ----- depth --------------------------------------------------------------------------------------------------
    def _active_mixture(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_d weights[d] * (x after d blocks)`` over the depths >= 1 (``weights`` per depth value)."""
        wanted = {d: i for i, d in enumerate(self.depth.values) if d > 0}
        out = None
        for depth in range(1, max(wanted) + 1):
            x = self._block(depth - 1, x)
            if depth in wanted:
                term = weights[wanted[depth]] * x
                out = term if out is None else out + term
        return out

    def relaxed_paths(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``[(output, path weight)]``: one path (weight ``None`` = 1) when the stage cannot be
        skipped, else ``[(x, w_0), (depth mixture, 1 - w_0)]``, both padded to the channel count
        the next op expects."""
        weights = self._arch.weights(self.depth.label)
        if 0 not in self.depth.values:
            return [(self._active_mixture(x, weights), None)]
        skip = list(self.depth.values).index(0)
        active = torch.ones_like(weights, dtype=torch.bool)
        active[skip] = False
        mass = weights[active].sum()
        if float(mass.detach()) > 1e-6:
            inner = weights / mass
        else:  # a proxyless gate on depth 0: run the expected active path so that its gates still get a gradient
            probs = self._arch.probs(self.depth.label).detach()
            inner = probs / probs[active].sum()
        channels = _max_channels(self.out_channels)
        return [(_pad_channels(x, channels), weights[skip]),
                (_pad_channels(self._active_mixture(x, inner), channels), mass)]


def _out_channels(op: nn.Module) -> Any:
    """The output channel count of an elastic conv: an expression, or an int when it is fixed."""
    if isinstance(op, MixedOperation):
        return op.mutable_arguments.get('out_channels', op.out_channels)
    return op.out_channels


def _times(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a * b


class DifferentiableFork(_RelaxedModule, PathSamplingLayer):
    """``little/fork`` relaxed: the weighted sum of every little branch's ``(logits, features)``.

    Inside a branch, a stage that may be skipped (depth 0) forks the computation into weighted
    paths (see :meth:`DifferentiableStage.relaxed_paths`), and the branch's logits and features
    are mixed over its paths.
    """

    relaxes = PathSamplingLayer

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self._arch.weights(self.label)
        return _mix([(self._branch(self[name], features), weights[i]) for i, name in enumerate(self.names)])

    @staticmethod
    def _branch(branch: LittleBranch, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        paths: list[tuple[torch.Tensor, torch.Tensor | None]] = [(features[branch.fork], None)]
        for stage in branch.stages:
            if not isinstance(stage, DifferentiableStage):
                raise RuntimeError('The little stages were not relaxed; mutate the space with the strategy first.')
            paths = [(y, _times(weight, step)) for x, weight in paths for y, step in stage.relaxed_paths(x)]
        return _mix([(branch.head(x), weight) for x, weight in paths])


def _mix(outputs: list[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]) -> tuple[torch.Tensor, ...]:
    """Element-wise weighted sum of tuples of tensors (weight ``None`` = 1)."""
    total = None
    for tensors, weight in outputs:
        if weight is not None:
            tensors = tuple(weight * t for t in tensors)
        total = tensors if total is None else tuple(a + b for a, b in zip(total, tensors))
    return total


class DifferentiableRouter(_RelaxedModule, ElasticRouter):
    """The router with ``router/policy`` relaxed (weighted sum of the policies' confidences) and
    ``router/threshold`` unused in the forward pass. Its ``export`` repairs an invalid sample."""

    relaxes = ElasticRouter

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        weights = self._arch.weights(self.policy_choice.label)
        confidence = None
        for i, policy in enumerate(self.policy_choice.values):
            term = weights[i] * router_confidence(policy, logits, features, self.mlp)
            confidence = term if confidence is None else confidence + term
        return confidence

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """Argmax of the router's labels; and, when ``memo`` holds every other label (NNI exports
        the modules in order and the router comes last), the repairs :func:`make_valid` makes."""
        chosen = self._arch.export(self._arch_labels, memo)
        spec = self._arch.spec
        sample = {**memo, **chosen}
        if set(spec.choices()) <= set(sample) and spec.check(sample) is not None:
            repaired = make_valid(spec, sample)
            chosen.update({label: value for label, value in repaired.items() if sample[label] != value})
        return chosen


def export_sample(supernet: nn.Module) -> dict[str, Any]:
    """The exported architecture of a relaxed ``BigLittleSpace`` without NNI's Lightning module:
    NNI's export loop over the supernet modules (argmax per label), then :func:`make_valid`."""
    sample: dict[str, Any] = {}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            sample.update(module.export(memo=sample))
    return make_valid(supernet.spec, sample)


def export_probs(supernet: nn.Module) -> dict[str, dict[Any, torch.Tensor]]:
    """NNI's ``export_probs`` loop over the supernet modules: ``{label: {value: probability tensor}}``."""
    probs: dict[str, Any] = {}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            probs.update(module.export_probs(memo=probs))
    return probs


# ----- the mutation hook -------------------------------------------------------------------------------------------

def differentiable_hooks(space, strategy) -> list[Callable]:
    """Mutation hooks that relax ``space`` for NNI's ``DARTS``, ``GumbelDARTS`` or ``Proxyless``.

    They read the architecture parameters NNI's strategy put in the hook memo (one per label) and
    keep every module in place (see :func:`_adopt`), so NNI's own default hooks never replace them.
    """
    values = space.spec.choices()
    state: dict[str, ArchitectureWeights] = {}
    # the relaxed modules answer to this strategy's parameters only; BigLittleSpace refuses a second strategy
    space._relaxed_for = type(strategy).__name__

    def arch_of(memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> ArchitectureWeights:
        if 'arch' not in state:
            missing = [label for label in values if not isinstance(memo.get(label), torch.Tensor)]
            if missing:
                raise KeyError(f'{type(strategy).__name__} did not create architecture parameters for {missing[:3]} '
                               '...; differentiable hooks need a DARTS-style strategy (DARTS, GumbelDARTS, Proxyless).')
            softmax = mutate_kwargs.get('softmax') or nn.Softmax(-1)
            state['arch'] = ArchitectureWeights({label: memo[label] for label in values}, values,
                                                strategy_mode(strategy, softmax), softmax, space.spec)
        return state['arch']

    def relax(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]):
        if isinstance(module, (ElasticStage, PathSamplingLayer, ElasticRouter, MixedOperation)):
            arch = arch_of(memo, mutate_kwargs)
        else:
            return isinstance(module, BaseSuperNetModule)  # any other supernet module: keep as is
        if isinstance(module, MixedOperation):
            _relax_operation(module, arch, memo, mutate_kwargs)
            return True
        if isinstance(module, ElasticStage):
            relaxed = _adopt(DifferentiableStage, module)
            _attach(relaxed, arch, [module.depth.label])
            return relaxed, True
        if isinstance(module, PathSamplingLayer):
            if module.label != 'little/fork':
                raise TypeError(f'Unexpected layer choice {module.label!r} in BigLittleSpace.')
            relaxed = _adopt(DifferentiableFork, module)
            _attach(relaxed, arch, [module.label])
            return relaxed, True
        relaxed = _adopt(DifferentiableRouter, module)
        _attach(relaxed, arch, [module.policy_choice.label, module.threshold_choice.label])
        return relaxed, True

    return [relax]
