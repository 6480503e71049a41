"""``BigLittleSpace``: the weight-shared big/little supernet as an NNI ``ModelSpace``.

::

    input - stem - trunk s0 - ... - s(f-1) -+- little s0 - little s1 - little head - router -> answer
                                            +- trunk sf - ... - s(S-1) - big head ----------> answer (escalated only)

The space is live: its elastic ops hold the largest weights and ``activate(sample)`` selects a
subnet (NNI's ``resample(memo)`` on every supernet module); ``forward`` then returns
``(little_logits, big_logits)`` of that subnet and ``freeze(sample)`` returns the standalone
``BigLittleModel`` with the same outputs.
"""
from __future__ import annotations

import functools
import random as _random
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

# first: the elastic ops import NNI quietly (nni_bigLittle._nni_compat)
from nni_bigLittle.nn.elastic import ElasticHead, ElasticRouter, ElasticStage
from nni.mutable import SampleValidationError, label_scope
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingLayer

from nni_bigLittle.nn.model import BigLittleForward, BigLittleModel
from nni_bigLittle.nn.ops import ConvBNAct
from nni_bigLittle.nn.arch import ConvConfig
from nni_bigLittle.search_spaces.presets import get_preset
from nni_bigLittle.search_spaces.spec import SpaceSpec, little_stage_specs, make_valid

__all__ = ['BigLittleSpace', 'LittleBranch', 'SUPERNET_FORMAT']

SUPERNET_FORMAT = 'nni_bigLittle.supernet/1'


def _stage(spec: SpaceSpec, in_channels: Any, stage, depth_choices) -> ElasticStage:
    return ElasticStage(in_channels, stage.base_channels, stage.stride, stage.act, stage.se, spec.width_choices,
                        depth_choices, spec.kernel_choices, spec.expand_choices)


class LittleBranch(nn.Module):
    """The little network's own stages and head for one fork point; it reads trunk features ``[fork]``."""

    def __init__(self, spec: SpaceSpec, fork: int, in_channels: Any):
        super().__init__()
        self.fork = fork
        stages = []
        for i, stage in enumerate(little_stage_specs(spec, fork)):
            with label_scope(f's{i}'):
                stages.append(_stage(spec, in_channels, stage, spec.little_depth_choices))
            in_channels = stages[-1].out_channels
        self.stages = nn.ModuleList(stages)
        self.head = ElasticHead(in_channels, spec.little_head_channels, spec.num_classes, spec.head_act, spec.dropout)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = features[self.fork]
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def extract_into(self, little, sample: dict[str, Any]) -> None:
        for elastic, static in zip(self.stages, little.stages):
            elastic.extract_into(static, sample)
        self.head.extract_into(little.head, sample)


class BigLittleSpace(BigLittleForward, ModelSpace):
    """The big/little search space and its weight-shared supernet.

    Parameters
    ----------
    preset
        ``'cifar'`` (32x32) or ``'imagenet'`` (224x224), or a ``SpaceSpec``.
    num_classes, resolution
        Override the preset's.
    repair_invalid
        ``False`` (default): a sample whose little network is not cheaper than its big one is
        rejected (``check_contains`` returns the error, ``freeze`` raises it). ``True``: such a sample
        counts as contained and ``freeze`` builds its deterministic repair (:func:`make_valid`: the
        little network shrunk). NNI's HPO-tuner strategies (``TPE``, ``Anneal``, ...) draw every label
        independently and stop at the first sample the space rejects (about 16 % of independent draws
        on the cifar preset are invalid), so use ``repair_invalid=True`` with them.
    **options
        Any other ``SpaceSpec`` field, e.g. ``depth_choices=(1, 2)`` for a small test space.
    """

    def __init__(self, preset: str | SpaceSpec = 'cifar', num_classes: int | None = None,
                 resolution: int | None = None, repair_invalid: bool = False, **options: Any):
        super().__init__()
        spec = get_preset(preset, num_classes=num_classes, resolution=resolution, **options)
        self.spec = spec
        self.repair_invalid = bool(repair_invalid)
        self.stem = ConvBNAct.from_config(ConvConfig(3, spec.stem_channels, 3, spec.stem_stride, spec.stem_act))
        feature_channels: list[Any] = [spec.stem_channels]
        trunk = []
        with label_scope('trunk'):
            for i, stage in enumerate(spec.trunk):
                with label_scope(f's{i}'):
                    trunk.append(_stage(spec, feature_channels[-1], stage, spec.depth_choices))
                feature_channels.append(trunk[-1].out_channels)
        self.trunk = nn.ModuleList(trunk)
        with label_scope('little'):
            branches = [LittleBranch(spec, fork, feature_channels[fork]) for fork in spec.forks]
            # NNI's LayerChoice (path-sampling form): the value of ``little/fork`` indexes the branch
            self.little = PathSamplingLayer(branches, label='fork')
        self.big_head = ElasticHead(feature_channels[-1], spec.big_head_channels, spec.num_classes, spec.head_act,
                                    spec.dropout)
        self.router = ElasticRouter(spec.little_head_channels + spec.num_classes, spec.router_hidden,
                                    spec.policy_choices, spec.threshold_choices,
                                    repair=functools.partial(_repair_complete_sample, spec))
        self._active: dict[str, Any] | None = None

    # ----- samples ------------------------------------------------------------------------------------------
    def check_contains(self, sample: Mapping[str, Any]) -> SampleValidationError | None:
        """NNI's validation hook: ``None`` when ``sample`` is a valid big/little pair (or, with
        ``repair_invalid``, one :func:`make_valid` can repair), else the error."""
        error = self.spec.check(sample)
        if error is not None and self.repair_invalid:
            try:
                make_valid(self.spec, sample)
            except SampleValidationError as err:
                return err
            return None
        return error

    def random(self, memo: dict[str, Any] | None = None, random_state: Any = None) -> dict[str, Any]:
        """A random valid sample as a flat ``{label: value}`` dict (labels in ``memo`` are kept).

        ``random_state`` may be a ``random.Random``, a ``numpy.random.RandomState`` or an int seed.
        """
        rng = _as_rng(random_state)
        sample = self.spec.random_sample(rng, fixed=memo)
        if memo is not None:
            memo.update(sample)
        return sample

    def largest(self) -> dict[str, Any]:
        return self.spec.largest()

    def smallest(self) -> dict[str, Any]:
        return self.spec.smallest()

    def activate(self, sample: Mapping[str, Any], validate: bool = True) -> None:
        """Make ``sample`` the active subnet of the supernet."""
        if validate:
            self.spec.validate(sample)
        memo = dict(sample)
        for module in self.modules():
            if isinstance(module, BaseSuperNetModule):
                module.resample(memo)
        self._active = memo

    @property
    def active_sample(self) -> dict[str, Any] | None:
        """The sample last given to :meth:`activate` (NNI strategies resample the modules directly)."""
        return None if self._active is None else dict(self._active)

    # ----- supernet forward -----------------------------------------------------------------------------------
    def _little(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.little(features)  # the fork's LayerChoice picks the branch (an unsampled one raises)

    # ----- NNI one-shot strategies -------------------------------------------------------------------------------
    def extra_oneshot_hooks(self, strategy) -> list:
        """Mutation hooks NNI's one-shot strategies call before their own (``OneShotStrategy.mutate_model``).

        - ``RandomOneShot`` (SPOS) and ``ENAS`` train the space as it is, a path-sampling supernet (NNI
          ``MixedConv2d`` / ``MixedBatchNorm2d``, a ``PathSamplingLayer`` for the fork, our
          ``ElasticStage`` / ``ElasticRouter``): the hook keeps those modules.
        - ``DARTS``, ``GumbelDARTS`` and ``Proxyless`` get the relaxation of
          :mod:`nni_bigLittle.search_spaces.relaxation`: every label becomes a softmax / Gumbel-softmax
          mixture or a ProxylessNAS binary gate over NNI's architecture parameters, in place (state-dict
          keys and :meth:`freeze` unchanged). ``router/policy`` and ``router/threshold`` do not affect the
          classification loss; only penalties (e.g. on expected latency) move them. The export is the
          argmax per label, with the little network shrunk when that pair would be invalid.
        """
        from nni.nas.oneshot.pytorch.strategy import DARTS, ENAS, RandomOneShot  # ENAS is a RandomOneShot;
        # GumbelDARTS and Proxyless are DARTS
        relaxed_for = getattr(self, '_relaxed_for', None)
        if relaxed_for is not None:
            raise TypeError(
                f'This BigLittleSpace was already relaxed for {relaxed_for}; {type(strategy).__name__} needs a fresh '
                'space. Mutate a copy (copy.deepcopy(space)) for each strategy, or load this supernet\'s state_dict '
                'into a new BigLittleSpace (strict=False skips the architecture parameters).')
        if isinstance(strategy, DARTS):
            from nni_bigLittle.search_spaces.relaxation import differentiable_hooks
            return differentiable_hooks(self, strategy)
        if isinstance(strategy, ENAS):
            from nni_bigLittle._nni_compat import prepare_enas
            prepare_enas(strategy)
        if not isinstance(strategy, RandomOneShot):
            raise TypeError(
                f'{type(strategy).__name__} cannot run on BigLittleSpace: supported one-shot strategies are NNI\'s '
                'RandomOneShot (SPOS), ENAS, DARTS, GumbelDARTS and Proxyless (or subclasses of them).')

        def keep_supernet_modules(module, name, memo, mutate_kwargs):
            return isinstance(module, BaseSuperNetModule)  # True = keep it, skip NNI's default hooks

        return [keep_supernet_modules]

    # ----- saving ------------------------------------------------------------------------------------------------
    def save(self, path, **extra: Any) -> None:
        """Write the spec and the supernet weights to ``path`` (``torch.save``; ``extra`` is stored alongside)."""
        import dataclasses
        state = {key: value for key, value in self.state_dict().items() if '_arch_alpha' not in key}
        torch.save({'format': SUPERNET_FORMAT, 'spec': dataclasses.asdict(self.spec), 'state_dict': state,
                    **extra}, path)

    @classmethod
    def load(cls, path) -> 'BigLittleSpace':
        """A fresh (path-sampling) space with the weights saved by :meth:`save`, in eval mode.

        A co-training checkpoint (Lightning ``.ckpt`` of :mod:`nni_bigLittle.strategies.cotraining`) is
        accepted too.
        """
        try:
            payload = torch.load(path, map_location='cpu', weights_only=False)
        except FileNotFoundError:
            raise FileNotFoundError(f'No supernet file at {path}.') from None
        except Exception as err:
            raise ValueError(f'{path} is not a readable supernet file ({type(err).__name__}: {err}).') from err
        if isinstance(payload, dict) and 'biglittle_spec' in payload:  # a co-training checkpoint (Lightning)
            prefix = 'training_module._model.'  # NNI's evaluator module keeps the space as _model
            payload = {'format': SUPERNET_FORMAT, 'spec': payload['biglittle_spec'],
                       'state_dict': {key[len(prefix):]: value for key, value in payload['state_dict'].items()
                                      if key.startswith(prefix) and '_arch_alpha' not in key}}
        if not isinstance(payload, dict) or payload.get('format') != SUPERNET_FORMAT:
            raise ValueError(f'{path} is not a supernet saved by BigLittleSpace.save (expected format '
                             f'{SUPERNET_FORMAT!r}).')
        space = cls(SpaceSpec.from_dict(payload['spec']))
        space.load_state_dict(payload['state_dict'])
        return space.eval()

    # ----- freezing ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def freeze(self, sample: Mapping[str, Any]) -> BigLittleModel:
        """The standalone ``BigLittleModel`` of ``sample``, with the supernet's weights (sliced)."""
        sample = make_valid(self.spec, sample) if self.repair_invalid else dict(sample)
        arch = self.spec.decode(sample)
        model = BigLittleModel(arch)
        model.stem.load_state_dict(self.stem.state_dict())
        for elastic, static in zip(self.trunk, model.trunk):
            elastic.extract_into(static, sample)
        self.little[arch.fork].extract_into(model.little, sample)
        self.big_head.extract_into(model.big_head, sample)
        model.router = self.router.extract(sample)
        return model.train(self.training)


def _repair_complete_sample(spec: SpaceSpec, sample: dict[str, Any]) -> dict[str, Any]:
    """A sample holding every label made valid (:func:`make_valid`); a partial one unchanged."""
    return make_valid(spec, sample) if set(spec.choices()) <= set(sample) else sample


def _as_rng(random_state: Any):
    if random_state is None:
        return _random.Random()
    if isinstance(random_state, (int, np.integer)):
        return _random.Random(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return _random.Random(int(random_state.randint(0, 2**31 - 1)))
    if isinstance(random_state, _random.Random):
        return random_state
    raise TypeError(f'random_state must be an int, random.Random or numpy RandomState, got {type(random_state)}.')
