"""Build a latency predictor for *this* machine (ONNX Runtime, CPU) with nn-Meter's method.

``nni-biglittle predictor build-local`` runs :func:`build_local_predictor`:

1. **Prior.** Kernel configurations that actually occur in our spaces: the kernels (and the parts of
   the MBConv blocks) of random samples of the ``cifar`` preset (little paths and big networks),
   optionally of the ``imagenet`` preset and of timm MobileNetV3 / EfficientNet at 224x224, plus
   random perturbations of them within the observed ranges (channels, resolution, kernel 3/5/7,
   expansion, stride, SE on/off, ReLU/h-swish). Every kernel type of our networks is covered:
   ``mbconv`` (a whole block), ``conv-bn-act``, ``dwconv-bn-act``, ``se``, ``global-pool``, ``fc``,
   ``add``, ``eltwise`` (the router's softmax).
2. **Profiling.** Each configuration becomes a tiny standalone module built from the package's own
   blocks (:class:`~nni_bigLittle.nn.ops.MBConv`, :class:`~nni_bigLittle.nn.ops.ConvBNAct`, ...), is
   exported to ONNX (batch norm folded) and timed with :class:`~.profilers.OnnxRuntimeProfiler`.
   The detected kernels of the module must be exactly the one kernel meant, so the features seen at
   fitting time are those prediction sees.
3. **Calibration.** An isolated kernel pays what it does not pay inside a network: one
   ``session.run`` (about 6 µs here) and, on x86, the NCHWc reorders of its input and output
   (ONNX Runtime's NCHWc transformer keeps tensors blocked between convolutions inside a network).
   A network, in turn, pays something its kernels do not pay in isolation: once its weights no
   longer fit in the per-core L2 cache, they stream from L3 on every inference. Separate
   *calibration networks* (never the validation networks) are measured end to end *and* kernel by
   kernel. Stage A fits ::

       T_net = o + Σ_k [T_iso(k) - a - b · boundary_elements(k)] + c · W · σ((W - μ) / w)

   (``W`` the network's weight megabytes); the kernel models are fitted on the in-network costs
   ``T_iso - a - b · boundary``. Stage B fits ``T_net = o' + s · Σ_k model(k) + c' · W · σ(...)`` with
   the fitted models on the same networks (what the models smooth away): ``s`` is folded into
   the models, ``o'`` is the predictor's per-inference ``overhead``, and the network-level cache term
   is stored in ``metadata['network_term']`` and applied by ``KernelLatencyPredictor.predict`` /
   ``predict_kernels`` once per network (see :func:`network_term_ms`).
4. **Fit** a :class:`~.predictor.ForestModel` per kernel type (random forest by default; extra-trees,
   gradient boosting or any storable scikit-learn tree ensemble plug in).
5. **Adaptive refinement** (nn-Meter): the configurations with the largest error on a held-out
   *refinement* set get new configurations sampled around them, which are profiled and added;
   repeated for a few rounds within the time budget. A separate *test* set reports kernel accuracy.
6. **Validation** on random frozen networks never used for fitting or calibration, measured end to
   end: share within ±10 %, MAPE, Spearman, against a FLOPs-only linear baseline.

The machine may be shared and drift: networks are measured in passes spread over the whole build
(calibration and validation networks interleaved, the median counts), the calibration networks'
kernels at the start and at the end, and a measurement whose median sits far above its 10th
percentile (another process took the core) is repeated.

Measurements are appended to ``measurements.jsonl`` in the work folder as they are made, so a
killed build resumes without profiling anything twice.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from nni_bigLittle.nn.arch import BlockConfig, make_divisible, se_channels
from nni_bigLittle.hw_predictors.kernels import BYTES_PER_ELEMENT, Kernel, detect_kernels, torch_to_onnx
from nni_bigLittle.hw_predictors.predictor import ForestModel, KernelLatencyPredictor, network_term_value, \
    regression_metrics
from nni_bigLittle.errors import BigLittleError

__all__ = [
    'PREDICTOR_NAME', 'PROFILED_TYPES', 'REGRESSORS', 'BuildConfig', 'BuildError', 'BuildResult', 'KernelConfig',
    'NetworkSpec', 'MeasurementCache', 'Calibration', 'NetworkCalibration', 'network_specs', 'build_local_predictor',
    'predict_latency_ms', 'network_term_ms',
    'default_predictor_dir', 'default_work_dir', 'prior_configs', 'perturb', 'boundary_elements', 'weight_mb',
    'format_validation_table', 'write_report',
]

PREDICTOR_NAME = 'local_cpu_ort'
PROFILED_TYPES = ('mbconv', 'conv-bn-act', 'dwconv-bn-act', 'se', 'global-pool', 'fc', 'add', 'eltwise')
CONV_LIKE = ('mbconv', 'conv-bn-act', 'dwconv-bn-act')
DATA_SOURCE = 'profiled on this machine by nni-biglittle predictor build-local'
_FORMAT = 'nni_bigLittle.build_local/1'
_EXPANSIONS = (1, 2, 3, 4, 6)


class BuildError(BigLittleError, ValueError):
    """The build cannot go on (the message says why and what to do)."""


def default_predictor_dir() -> Path:
    """Where user predictors live: ``$NNI_BIGLITTLE_PREDICTORS`` or ``~/.cache/nni_bigLittle/predictors``."""
    env = os.environ.get('NNI_BIGLITTLE_PREDICTORS')
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'nni_bigLittle' / 'predictors'


def default_work_dir() -> Path:
    """The measurement cache of ``build-local`` (beside the predictors)."""
    return default_predictor_dir() / f'{PREDICTOR_NAME}.work'


# ============================================================================================ kernel configs


_OUR_ACTS = {'none': 'none', 'identity': 'none', 'relu': 'relu', 'relu6': 'relu', 'leaky_relu': 'relu',
             'hswish': 'hswish', 'silu': 'hswish', 'gelu': 'hswish', 'sigmoid': 'hswish', 'hsigmoid': 'hswish',
             'tanh': 'hswish'}


@dataclass(frozen=True)
class KernelConfig:
    """A profilable kernel: type and shape, enough to build its standalone module (batch 1).

    ``hidden`` is the expanded width of an ``mbconv`` block, ``squeeze`` the squeeze width of its (or a
    standalone ``se``'s) squeeze-excite (0: none). ``act`` is ``none``, ``relu`` or ``hswish``.
    """

    type: str
    hw: int
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    hidden: int = 0
    squeeze: int = 0
    act: str = 'none'
    residual: bool = False

    def __post_init__(self):
        if self.type not in PROFILED_TYPES:
            raise ValueError(f'Cannot profile kernel type {self.type!r}; profiled types: {PROFILED_TYPES}.')
        if self.act not in ('none', 'relu', 'hswish'):
            raise ValueError(f'act must be none, relu or hswish, not {self.act!r}.')
        if min(self.hw, self.cin, self.cout, self.kernel, self.stride) < 1:
            raise ValueError(f'Invalid kernel configuration {self}: sizes must be positive.')
        if self.type == 'mbconv':
            if self.hidden < 1:
                raise ValueError(f'An mbconv configuration needs hidden >= 1: {self}.')
            if self.residual and (self.cin != self.cout or self.stride != 1):
                raise ValueError(f'A residual mbconv needs cin == cout and stride 1: {self}.')
        if self.type in ('se', 'global-pool', 'add', 'eltwise', 'dwconv-bn-act') and self.cin != self.cout:
            raise ValueError(f'A {self.type} kernel keeps its channels (cin == cout): {self}.')
        if self.type == 'se' and self.squeeze < 1:
            raise ValueError(f'An se configuration needs squeeze >= 1: {self}.')

    # ---------------------------------------------------------------- identity
    def key(self) -> str:
        parts = [self.type, f'hw{self.hw}', f'c{self.cin}', f'o{self.cout}']
        if self.type in CONV_LIKE:
            parts += [f'k{self.kernel}', f's{self.stride}', self.act]
        if self.type == 'mbconv':
            parts += [f'h{self.hidden}', f'q{self.squeeze}', 'res' if self.residual else 'nores']
        if self.type == 'se':
            parts.append(f'q{self.squeeze}')
        return ':'.join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.cin, self.hw, self.hw)

    @property
    def out_hw(self) -> int:
        if self.type in CONV_LIKE:
            return (self.hw + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
        return 1 if self.type in ('global-pool', 'fc') else self.hw

    def block_config(self) -> BlockConfig:
        act = 'identity' if self.act == 'none' else self.act
        return BlockConfig(in_channels=self.cin, out_channels=self.cout, hidden_channels=self.hidden,
                           kernel_size=self.kernel, expand_ratio=max(1, round(self.hidden / self.cin)),
                           stride=self.stride, act=act, se_channels=self.squeeze, residual=self.residual)

    # ---------------------------------------------------------------- module
    def module(self):
        """The standalone PyTorch module of this kernel (eval mode)."""
        from nni_bigLittle.nn.ops import ConvBNAct, MBConv, SqueezeExcite
        act = 'identity' if self.act == 'none' else self.act
        if self.type == 'mbconv':
            mod = MBConv(self.block_config())
        elif self.type == 'conv-bn-act':
            mod = ConvBNAct(self.cin, self.cout, self.kernel, self.stride, act=act)
        elif self.type == 'dwconv-bn-act':
            mod = ConvBNAct(self.cin, self.cout, self.kernel, self.stride, groups=self.cin, act=act)
        elif self.type == 'se':
            mod = SqueezeExcite(self.cin, self.squeeze)
        elif self.type == 'global-pool':
            mod = _GlobalPool()
        elif self.type == 'fc':
            mod = _Classifier(self.cin, self.cout)
        elif self.type == 'add':
            mod = _AddSelf()
        else:  # eltwise: the router's softmax over the logits
            mod = _Softmax()
        return mod.eval()

    # ---------------------------------------------------------------- from a detected kernel
    @classmethod
    def from_kernel(cls, k: Kernel) -> 'KernelConfig | None':
        """The configuration that reproduces kernel ``k`` (None for kernels we do not profile, e.g. grouped
        convolutions or pooling); activations outside ReLU / h-swish map to the closer of the two."""
        act = _OUR_ACTS.get(k.act, 'hswish')
        if k.batch != 1:
            return None
        if k.type == 'mbconv':
            expand = k.parts[0]
            if expand.type != 'conv-bn-act' or expand.groups != 1:
                return None
            squeeze = 0
            for p in k.parts:
                if p.type == 'se':
                    squeeze = int(round(p.expansion * p.cin))
            return cls('mbconv', k.hw, k.cin, k.cout, k.kernel, k.stride, hidden=expand.cout, squeeze=squeeze,
                       act=act, residual=bool(k.residual))
        if k.type == 'conv-bn-act':
            return cls('conv-bn-act', k.hw, k.cin, k.cout, k.kernel, k.stride, act=act) if k.groups == 1 else None
        if k.type == 'dwconv-bn-act':
            return cls('dwconv-bn-act', k.hw, k.cin, k.cin, k.kernel, k.stride, act=act) if k.cout == k.cin else None
        if k.type == 'se':
            return cls('se', k.hw, k.cin, k.cin, squeeze=max(1, int(round(k.expansion * k.cin))), act='relu')
        if k.type == 'global-pool' and k.hw > 1:
            return cls('global-pool', k.hw, k.cin, k.cin)
        if k.type == 'fc' and k.act == 'none':
            return cls('fc', 1, k.cin, k.cout)
        if k.type == 'add':
            return cls('add', k.hw, k.cin, k.cin)
        if k.type == 'eltwise' and k.hw == 1:
            return cls('eltwise', 1, k.cin, k.cin)
        return None


def _torch_modules():
    import torch
    from torch import nn

    class GlobalPool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    class Classifier(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.linear = nn.Linear(cin, cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1))

    class AddSelf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x

    class Softmax(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x, dim=1)

    class Probe(nn.Module):
        """The smallest graph with this input: one element out (what a session.run costs by itself)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1, :1, :1] * 2.0

    return GlobalPool, Classifier, AddSelf, Softmax, Probe


def _GlobalPool():
    return _torch_modules()[0]()


def _Classifier(cin: int, cout: int):
    return _torch_modules()[1](cin, cout)


def _AddSelf():
    return _torch_modules()[2]()


def _Softmax():
    return _torch_modules()[3]()


def _Probe():
    return _torch_modules()[4]()


def nchwc_block_size() -> int:
    """Channel block of ONNX Runtime's NCHWc layout on this CPU (MLAS): 16 with AVX-512, 8 with AVX2,
    0 where the NCHWc transformer does not run (other CPUs)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as fh:
            flags = next((line.split(':', 1)[1].split() for line in fh if line.startswith('flags')), [])
    except OSError:
        return 0
    if platform.machine() not in ('x86_64', 'AMD64', 'i686', 'x86'):
        return 0
    return 16 if 'avx512f' in flags else 8 if 'avx2' in flags else 0


def boundary_elements(kernel: Kernel, block: int = 16) -> float:
    """Elements (millions) an isolated kernel reorders at its boundary that a network keeps blocked.

    ONNX Runtime's NCHWc transformer keeps activations in a channel-blocked layout from one
    convolution to the next; an isolated kernel reorders its input in and its output out, a network
    only where an op without a blocked version needs plain NCHW (the head's global pooling, a
    squeeze-excite's ReduceMean: inside the kernels, paid either way). A convolution with fewer input
    channels than the ``block`` reads plain NCHW (the image, 8-channel little stages), so a tensor
    narrower than the block is reordered in the network too. MBConv and depthwise kernels sit between
    convolutions; a standalone ``conv-bn-act`` of our networks is the stem (image in, blocked out) or
    the head convolution (blocked in, reordered out for the pooling). ``block=0``: no NCHWc, nothing saved.
    """
    if kernel.type not in CONV_LIKE or block <= 0:
        return 0.0
    elems_in = kernel.bytes_in / BYTES_PER_ELEMENT / 1e6 if kernel.cin >= block else 0.0
    elems_out = kernel.bytes_out / BYTES_PER_ELEMENT / 1e6 if kernel.cout >= block else 0.0
    if kernel.type == 'conv-bn-act':
        return elems_out if kernel.cin < 8 else elems_in
    return elems_in + elems_out


def weight_mb(kernels: Iterable[Kernel]) -> float:
    """Weight megabytes of a network (fp32 parameters of its kernels, batch norm folded)."""
    return float(sum(k.params for k in kernels) * BYTES_PER_ELEMENT / 1e6)


def _kernel_from_dict(d: dict[str, Any]) -> Kernel:
    parts = tuple(_kernel_from_dict(p) for p in d.get('parts', ()))
    fields = {k: v for k, v in d.items() if k != 'parts'}
    return Kernel(**fields, parts=parts)


def _same_features(a: Kernel, b: Kernel) -> bool:
    return a.type == b.type and np.allclose(a.features(), b.features(), rtol=1e-9, atol=1e-9)


# ============================================================================================ prior sampling


@dataclass
class _Pool:
    """Observed configurations of one source (cifar, imagenet, timm) and their ranges per type.

    ``observed`` holds every configuration; ``top`` those that are kernels of the networks themselves
    (the rest are parts of MBConv blocks, whose number the prior caps)."""
    name: str
    observed: dict[str, list[KernelConfig]] = field(default_factory=dict)
    top: set[str] = field(default_factory=set)

    def add(self, cfg: KernelConfig | None, top: bool = False) -> None:
        if cfg is not None:
            lst = self.observed.setdefault(cfg.type, [])
            if cfg not in lst:
                lst.append(cfg)
            if top:
                self.top.add(cfg.key())

    def ranges(self, kernel_type: str) -> dict[str, list]:
        cfgs = self.observed.get(kernel_type, [])
        if not cfgs:
            return {}
        chans = sorted({c.cin for c in cfgs} | {c.cout for c in cfgs})
        return {
            'hw': sorted({c.hw for c in cfgs}),
            'cin': [min(c.cin for c in cfgs), max(c.cin for c in cfgs)],
            'cout': [min(c.cout for c in cfgs), max(c.cout for c in cfgs)],
            'channels': [chans[0], chans[-1]],
            'kernel': sorted({c.kernel for c in cfgs}),
            'stride': sorted({c.stride for c in cfgs}),
            'act': sorted({c.act for c in cfgs}),
        }


def _add_kernel_and_parts(pool: _Pool, kernel: Kernel, top: bool = True) -> None:
    pool.add(KernelConfig.from_kernel(kernel), top)
    for part in kernel.parts:
        _add_kernel_and_parts(pool, part, top=False)


def _preset_pool(preset: str, n_archs: int, rng: random.Random, exclude_seeds: set[int] = frozenset()) -> _Pool:
    from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
    from nni_bigLittle.search_spaces.presets import get_preset
    spec = get_preset(preset)
    pool = _Pool(preset)
    drawn = 0
    while drawn < n_archs:
        seed = rng.randrange(10 ** 9)
        if seed in exclude_seeds:
            continue
        arch = spec.decode(spec.random_sample(random.Random(seed)))
        ak = arch_kernels(arch)
        for k in list(ak.little_path) + list(ak.big) + list(ak.router):
            _add_kernel_and_parts(pool, k)
        drawn += 1
    return pool


def _timm_pool(models: Sequence[str], resolution: int = 224) -> _Pool:
    import timm
    pool = _Pool('timm')
    for name in models:
        model = timm.create_model(name, pretrained=False).eval()
        for k in detect_kernels(model, 'torch', (1, 3, resolution, resolution)):
            _add_kernel_and_parts(pool, k)
    return pool


def _channels(rng: random.Random, lo: int, hi: int) -> int:
    lo, hi = max(8, int(lo)), max(8, int(hi))
    return make_divisible(rng.uniform(lo, hi)) if hi > lo else make_divisible(lo)


def _neighbor_channels(rng: random.Random, c: int, lo: int, hi: int) -> int:
    step = rng.choice((-16, -8, 8, 16))
    return int(min(max(c + step, max(8, lo)), max(8, hi)))


def perturb(cfg: KernelConfig, rng: random.Random, ranges: dict[str, list], small: bool = False) -> KernelConfig | None:
    """A random configuration near ``cfg`` within ``ranges`` (see :meth:`_Pool.ranges`): one to three
    attributes redrawn (``small=False``) or nudged to a neighbouring value (``small=True``, refinement).
    Returns None when the result would be invalid."""
    if not ranges:
        return None
    t = cfg.type
    hw, cin, cout, k, s, act = cfg.hw, cfg.cin, cfg.cout, cfg.kernel, cfg.stride, cfg.act
    expansion = cfg.hidden / cfg.cin if cfg.hidden else 1.0
    se, residual = cfg.squeeze > 0, cfg.residual
    squeeze_ratio = cfg.squeeze / cfg.cin if t == 'se' else 0.25
    lo_c, hi_c = ranges['channels']
    hws = ranges['hw']
    names = {'mbconv': ['hw', 'cin', 'cout', 'kernel', 'stride', 'expand', 'se', 'act', 'residual'],
             'conv-bn-act': ['hw', 'cin', 'cout', 'kernel', 'stride', 'act'],
             'dwconv-bn-act': ['hw', 'cin', 'kernel', 'stride', 'act'],
             'se': ['hw', 'cin', 'squeeze'],
             'global-pool': ['hw', 'cin'], 'add': ['hw', 'cin'], 'eltwise': ['hw', 'cin'],
             'fc': ['cin', 'cout']}[t]
    for attr in rng.sample(names, k=min(len(names), rng.choice((1, 1, 2, 3)) if not small else rng.choice((1, 2)))):
        if attr == 'hw':
            if small:
                i = hws.index(hw) if hw in hws else min(range(len(hws)), key=lambda j: abs(hws[j] - hw))
                hw = hws[min(max(i + rng.choice((-1, 1)), 0), len(hws) - 1)]
            else:
                hw = rng.choice(hws)
        elif attr == 'cin':
            cin = _neighbor_channels(rng, cin, lo_c, hi_c) if small else _channels(rng, lo_c, hi_c)
        elif attr == 'cout':
            cout = _neighbor_channels(rng, cout, lo_c, hi_c) if small else _channels(rng, lo_c, hi_c)
        elif attr == 'kernel':
            ks = sorted(set(ranges['kernel']) | ({3, 5, 7} if t != 'conv-bn-act' else set()))
            k = rng.choice([x for x in ks if abs(x - k) <= 2] if small else ks)
        elif attr == 'stride':
            s = rng.choice(ranges['stride'] or [1])
        elif attr == 'expand':
            if small:
                i = min(range(len(_EXPANSIONS)), key=lambda j: abs(_EXPANSIONS[j] - expansion))
                expansion = _EXPANSIONS[min(max(i + rng.choice((-1, 1)), 0), len(_EXPANSIONS) - 1)]
            else:
                expansion = rng.choice(_EXPANSIONS)
        elif attr == 'se':
            se = not se
        elif attr == 'act':
            act = rng.choice([a for a in ('relu', 'hswish') if a != act] or ['relu'])
        elif attr == 'residual':
            residual = not residual
        elif attr == 'squeeze':
            squeeze_ratio = rng.choice((0.0625, 0.125, 0.25, 0.5))
    try:
        if t == 'mbconv':
            if residual:
                cout, s = cin, 1
            hidden = make_divisible(cin * expansion)
            out_hw = (hw + 2 * (k // 2) - k) // s + 1
            if se and out_hw < 2:
                return None  # the squeeze-excite would pool a 1x1 map (no pooling kernel): not a block of ours
            return KernelConfig('mbconv', hw, cin, cout, k, s, hidden=hidden,
                                squeeze=se_channels(hidden) if se else 0, act=act, residual=residual)
        if t == 'conv-bn-act':
            return KernelConfig(t, hw, 3 if cfg.cin == 3 and rng.random() < 0.7 else cin, cout, k, s, act=act)
        if t == 'dwconv-bn-act':
            return KernelConfig(t, hw, cin, cin, k, s, act=act)
        if t == 'se':
            return KernelConfig(t, hw, cin, cin, squeeze=max(8, make_divisible(cin * squeeze_ratio)), act='relu')
        if t in ('global-pool', 'add'):
            return KernelConfig(t, max(hw, 2) if t == 'global-pool' else hw, cin, cin)
        if t == 'eltwise':
            return KernelConfig(t, 1, cin, cin)
        if t == 'fc':
            return KernelConfig(t, 1, cin, max(1, cout if not small else cout))
    except ValueError:
        return None
    return None


def _extra_uniform(kernel_type: str, rng: random.Random) -> KernelConfig:
    """Configurations of the small kernel types drawn over wide ranges (they are cheap to profile)."""
    if kernel_type == 'eltwise':
        c = int(round(math.exp(rng.uniform(math.log(2), math.log(1280)))))
        return KernelConfig('eltwise', 1, c, c)
    if kernel_type == 'fc':
        cin = int(round(math.exp(rng.uniform(math.log(8), math.log(1280)))))
        cout = int(round(math.exp(rng.uniform(math.log(1), math.log(1000)))))
        return KernelConfig('fc', 1, cin, cout)
    hw = rng.choice((2, 4, 7, 8, 14, 16))
    c = make_divisible(math.exp(rng.uniform(math.log(8), math.log(960))))
    return KernelConfig(kernel_type, hw, c, c)


def prior_configs(rng: random.Random, cifar_archs: int = 40, imagenet_archs: int = 4,
                  timm_models: Sequence[str] = (), n_perturbed: dict[str, int] | None = None,
                  part_caps: dict[str, int] | None = None, exclude_seeds: set[int] = frozenset()
                  ) -> tuple[list[KernelConfig], dict[str, _Pool]]:
    """The prior: observed configurations of random samples of our spaces (and optionally timm models),
    plus ``n_perturbed[type]`` random perturbations of them within the observed ranges. Deterministic
    given ``rng``'s state."""
    n_perturbed = dict(DEFAULT_PERTURBED if n_perturbed is None else n_perturbed)
    part_caps = dict(DEFAULT_PART_CAPS if part_caps is None else part_caps)
    pools: dict[str, _Pool] = {}
    if cifar_archs:
        pools['cifar'] = _preset_pool('cifar', cifar_archs, rng, exclude_seeds)
    if imagenet_archs:
        pools['imagenet'] = _preset_pool('imagenet', imagenet_archs, rng, exclude_seeds)
    if timm_models:
        pools['timm'] = _timm_pool(timm_models)
    if not pools:
        raise BuildError('The prior needs at least one source: cifar_archs, imagenet_archs or timm_models.')
    chosen: list[KernelConfig] = []
    seen: set[str] = set()

    def take(cfg: KernelConfig | None) -> bool:
        if cfg is None or cfg.key() in seen:
            return False
        seen.add(cfg.key())
        chosen.append(cfg)
        return True

    # observed configurations: every kernel of the sampled networks, MBConv parts up to a cap per type and pool
    for pool in pools.values():
        for kernel_type, cfgs in pool.observed.items():
            for cfg in cfgs:
                if cfg.key() in pool.top:
                    take(cfg)
            parts = [c for c in cfgs if c.key() not in pool.top]
            cap = part_caps.get(kernel_type)
            if cap is not None and len(parts) > cap:
                parts = rng.sample(parts, cap)
            for cfg in parts:
                take(cfg)
    # perturbations: 75 % around the cifar pool (our main space) when it exists, the rest around the others
    weights = {name: (3.0 if name == 'cifar' else 1.0) for name in pools}
    for kernel_type, n in n_perturbed.items():
        with_type = [p for p in pools.values() if p.observed.get(kernel_type)]
        for pool in with_type:
            quota = int(round(n * weights[pool.name] / sum(weights[p.name] for p in with_type)))
            ranges = pool.ranges(kernel_type)
            # perturb mostly around the networks' own kernels (stem and head convolutions, blocks), less around parts
            top = [c for c in pool.observed[kernel_type] if c.key() in pool.top]
            made, tries = 0, 0
            while made < quota and tries < 20 * quota + 20:
                tries += 1
                base = rng.choice(top if top and rng.random() < 0.7 else pool.observed[kernel_type])
                made += take(perturb(base, rng, ranges))
        if not with_type or kernel_type in ('eltwise', 'fc', 'add', 'global-pool'):
            extra = n if not with_type else n // 3
            made, tries = 0, 0
            while made < extra and tries < 20 * extra + 20:
                tries += 1
                made += take(_extra_uniform(kernel_type, rng))
    return chosen, pools


DEFAULT_PERTURBED = {'mbconv': 500, 'conv-bn-act': 160, 'dwconv-bn-act': 100, 'se': 90, 'global-pool': 50,
                     'fc': 50, 'add': 40, 'eltwise': 40}
DEFAULT_PART_CAPS = {'conv-bn-act': 200, 'dwconv-bn-act': 120, 'se': 100, 'add': 60, 'eltwise': 20,
                     'global-pool': 60}


# ============================================================================================ networks


@dataclass
class NetworkSpec:
    """A frozen network of a preset (the little path or the big network of one random sample)."""
    preset: str
    seed: int
    part: str  # 'little' or 'big'
    arch: Any
    kernels: list[Kernel]

    @property
    def name(self) -> str:
        return f'{self.preset}/seed{self.seed}/{self.part}'

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.arch.resolution, self.arch.resolution)

    @property
    def macs(self) -> float:
        return float(sum(k.flops for k in self.kernels))

    @property
    def weight_mb(self) -> float:
        return weight_mb(self.kernels)

    def module(self):
        from nni_bigLittle.nn.model import BigLittleModel
        model = BigLittleModel(self.arch).eval()
        return model.little_path() if self.part == 'little' else model.big_path()


def network_specs(preset: str, seeds: Iterable[int]) -> list[NetworkSpec]:
    from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
    from nni_bigLittle.search_spaces.presets import get_preset
    spec = get_preset(preset)
    out = []
    for seed in seeds:
        arch = spec.decode(spec.random_sample(random.Random(seed)))
        ak = arch_kernels(arch)
        out.append(NetworkSpec(preset, seed, 'little', arch, list(ak.little_path)))
        out.append(NetworkSpec(preset, seed, 'big', arch, list(ak.big)))
    return out


# ============================================================================================ measurement cache


class MeasurementCache:
    """Append-only JSON-lines store of measurements, keyed by a string; survives a killed build.

    The first line records the environment; a cache made on another CPU, ONNX Runtime version or
    thread count is refused (measurements would not be comparable).
    """

    def __init__(self, path: str | Path, environment: dict[str, Any]):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.new = 0
        self.environment = environment
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        else:
            with open(self.path, 'w', encoding='utf-8') as fh:
                fh.write(json.dumps({'kind': 'header', 'format': _FORMAT, 'environment': environment}) + '\n')

    def _load(self) -> None:
        with open(self.path, encoding='utf-8') as fh:
            lines = fh.read().splitlines()
        if not lines:
            raise BuildError(f'{self.path} is empty; delete it or use another --work-dir.')
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = {}
        if header.get('kind') != 'header' or header.get('format') != _FORMAT:
            raise BuildError(f'{self.path} is not a build-local measurement cache; use another --work-dir.')
        env = header.get('environment', {})
        for key in ('cpu_model', 'onnxruntime', 'threads', 'machine'):
            if env.get(key) != self.environment.get(key):
                raise BuildError(f'The measurements in {self.path} were made with {key}={env.get(key)!r}, this '
                                 f'build has {self.environment.get(key)!r}; use another --work-dir (or delete it).')
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if 'key' in rec:
                self.records[rec['key']] = rec

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        record = {'key': key, **record}
        self.records[key] = record
        with open(self.path, 'a', encoding='utf-8') as fh:
            fh.write(json.dumps(record) + '\n')
            fh.flush()
        self.new += 1
        return record

    def __len__(self) -> int:
        return len(self.records)


# ============================================================================================ configuration


def _gradient_boosting():
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(n_estimators=400, max_depth=5, learning_rate=0.05, subsample=0.8, random_state=0)


def _extra_trees():
    from sklearn.ensemble import ExtraTreesRegressor
    return ExtraTreesRegressor(n_estimators=100, min_samples_leaf=1, random_state=0, n_jobs=1)


def _random_forest():
    from nni_bigLittle.hw_predictors.predictor import random_forest
    return random_forest()


#: Kernel regressors by name (all storable in the predictor file format).
REGRESSORS: dict[str, Callable[[], Any]] = {'random-forest': _random_forest, 'extra-trees': _extra_trees,
                                            'gradient-boosting': _gradient_boosting}


@dataclass
class BuildConfig:
    """Settings of :func:`build_local_predictor` (defaults: the documented build on a 2-core machine)."""

    threads: int = 1
    seed: int = 0
    budget_minutes: float = 20.0
    out: str | Path | None = None              # predictor file (default: user dir / local_cpu_ort.npz)
    work_dir: str | Path | None = None          # measurement cache (default: default_work_dir())
    report_dir: str | Path | None = None        # validation report (Markdown + CSV); None: none
    validate: int = 20                           # validation seeds (each gives a little path and a big network)
    calibrate: int = 30                          # calibration seeds (likewise), disjoint from validation
    cifar_archs: int = 300                       # random cifar samples the prior is drawn from
    imagenet_archs: int = 3                      # random imagenet samples (224x224) for the prior
    timm_models: tuple[str, ...] = ()            # e.g. ('mobilenetv3_large_100', 'efficientnet_b0')
    n_perturbed: dict[str, int] | None = None    # perturbed configurations per type (DEFAULT_PERTURBED)
    part_caps: dict[str, int] | None = None      # observed MBConv parts kept per type (DEFAULT_PART_CAPS)
    holdout: float = 0.12                        # share of the prior kept for refinement and for test (each)
    rounds: int = 5                              # adaptive refinement rounds
    refine_top: int = 40                         # worst configurations per round
    refine_neighbors: int = 4                    # new configurations sampled around each
    kernel_warmup: int = 10
    kernel_repeats: int = 30
    kernel_min_time_s: float = 0.04
    network_warmup: int = 20
    network_repeats: int = 200
    network_min_time_s: float = 0.12
    network_passes: int = 5                      # passes over the networks spread over the build; their median
    regressor: str = 'random-forest'             # or 'extra-trees', 'gradient-boosting' (see REGRESSORS)
    regressor_factory: Callable[[], Any] | None = None  # an unfitted scikit-learn tree ensemble; overrides regressor
    progress: bool = True

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError(f'threads must be >= 1, got {self.threads}.')
        if self.budget_minutes <= 0:
            raise ValueError(f'budget_minutes must be > 0, got {self.budget_minutes}.')
        if self.validate < 0 or self.calibrate < 0:
            raise ValueError('validate and calibrate must be >= 0.')
        if not 0 < self.holdout < 0.4:
            raise ValueError(f'holdout must be in (0, 0.4), got {self.holdout}.')
        if self.regressor not in REGRESSORS:
            raise ValueError(f'Unknown regressor {self.regressor!r}; choose one of {sorted(REGRESSORS)} or pass '
                             'regressor_factory.')

    def make_regressor(self):
        return self.regressor_factory() if self.regressor_factory is not None else REGRESSORS[self.regressor]()

    # disjoint seed ranges: prior archs are drawn from a seeded generator and never equal these
    def calibration_seeds(self) -> list[int]:
        """Half random, half spread evenly over the big network's weight size (the network-level cache
        term needs calibration networks on both sides of the L2 limit, random ones leave gaps)."""
        from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
        from nni_bigLittle.search_spaces.presets import get_preset
        base = 1_000_000 + 1000 * self.seed
        n_random = (self.calibrate + 1) // 2
        chosen = list(range(base, base + n_random))
        n_spread = self.calibrate - n_random
        if n_spread <= 0:
            return chosen
        spec = get_preset('cifar')
        candidates = range(base + n_random, base + n_random + max(60, 10 * n_spread))
        sizes = {seed: weight_mb(arch_kernels(spec.decode(spec.random_sample(random.Random(seed)))).big)
                 for seed in candidates}
        lo, hi = np.percentile(list(sizes.values()), [1, 99])
        for target in np.linspace(lo, hi, n_spread):
            seed = min((s for s in sizes if s not in chosen), key=lambda s: abs(sizes[s] - target))
            chosen.append(seed)
        return chosen

    def validation_seeds(self) -> list[int]:
        return [2_000_000 + 1000 * self.seed + i for i in range(self.validate)]


# ============================================================================================ calibration


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


_MU_GRID = tuple(round(float(m), 2) for m in np.arange(0.4, 3.01, 0.1))
_WIDTH_GRID = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)


def _fit_with_cache_term(t: np.ndarray, offset: np.ndarray, base: np.ndarray, w: np.ndarray
                         ) -> tuple[np.ndarray, float | None, float | None, float, float]:
    """``t ≈ offset + base · coef [+ c · w · σ((w - μ)/width)]`` by least squares on relative errors.

    (μ, width) come from a grid and the cache term may be left out; the candidate with the lowest
    leave-one-out mean relative error wins. Returns (coef, μ or None, width or None, its LOO error,
    the LOO error without the cache term)."""
    n = len(t)
    y = t - offset

    def solve(x, idx):
        coef, *_ = np.linalg.lstsq(x[idx] / t[idx, None], y[idx] / t[idx], rcond=None)
        return coef

    def loo(x):
        pred = np.empty(n)
        for i in range(n):
            pred[i] = offset[i] + x[i] @ solve(x, np.arange(n) != i)
        return float(np.mean(np.abs(pred - t) / t))

    plain = loo(base)
    best = (plain, None, None, base)
    for mu in _MU_GRID:
        for width in _WIDTH_GRID:
            x = np.c_[base, w * _sigmoid((w - mu) / width)]
            if solve(x, np.arange(n))[-1] <= 0:
                continue  # weights streaming from L3 cannot make a network faster
            err = loo(x)
            if err < best[0]:
                best = (err, mu, width, x)
    err, mu, width, x = best
    coef = solve(x, np.arange(n))
    if mu is None:
        coef = np.append(coef, 0.0)
    return coef, mu, width, err, plain


def _cache_term(c: float, mu: float, width: float) -> dict[str, Any]:
    return {'kind': 'weight_streaming', 'ms_per_mb': c, 'center_mb': mu, 'width_mb': width,
            'formula': 'ms_per_mb * W * sigmoid((W - center_mb) / width_mb), W = weight MB (fp32 params)',
            'why': 'weights that no longer fit in the per-core L2 cache stream from L3 on every inference'}


@dataclass
class Calibration:
    """Stage A, from measured kernels:
    ``T_net = overhead + Σ_k [T_iso(k) - a - b·boundary(k)] + c·W·σ((W - μ)/w)``
    (ms, MB, million elements). ``a`` and ``b`` turn isolated measurements into in-network kernel costs."""
    overhead: float = 0.0
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0
    mu: float = 1.5
    width: float = 0.2
    run_overhead_ms: float = 0.0   # measured session.run cost of a one-element graph (for reference)
    block: int = 16                # NCHWc channel block of this CPU (boundary_elements)
    n_networks: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def in_network(self, kernel: Kernel, isolated_ms: float, floor: float = 0.05) -> float:
        """A kernel's in-network cost from its isolated measurement (never below ``floor`` of it)."""
        return max(isolated_ms - self.a - self.b * boundary_elements(kernel, self.block), floor * isolated_ms)

    def network_term(self) -> dict[str, Any]:
        return _cache_term(self.c, self.mu, self.width)


@dataclass
class NetworkCalibration:
    """Stage B, from the fitted kernel models: ``T_net = overhead + scale · Σ_k model(k) + c·W·σ((W - μ)/w)``,
    fitted on the calibration networks with the models' predictions (it absorbs what the models smooth away)."""
    overhead: float = 0.0
    scale: float = 1.0
    c: float = 0.0
    mu: float = 1.5
    width: float = 0.2
    n_networks: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def network_term(self) -> dict[str, Any]:
        return _cache_term(self.c, self.mu, self.width)


def network_term_ms(term: dict[str, Any] | None, kernels: Sequence[Kernel]) -> float:
    """The network-level latency term stored in a built predictor's ``metadata['network_term']``.

    A sum of per-kernel costs cannot express it: whether a kernel's weights are still cached depends on
    everything else the network touched since the kernel last ran, i.e. on the whole network.
    """
    return network_term_value(term, kernels)  # the one evaluation the predictor also uses


def predict_latency_ms(predictor: KernelLatencyPredictor, kernels: Sequence[Kernel]) -> float:
    """A built predictor's latency of a whole network: kernels + overhead + the network term."""
    return predictor.predict_kernels(kernels).total  # includes metadata['network_term'] (predictor.network_term)


def _fit_calibration(rows: list[dict[str, float]], run_overhead_ms: float, block: int = 16) -> Calibration:
    """Stage A on rows with ``measured``, ``iso_sum``, ``n_kernels``, ``boundary``, ``weight_mb``."""
    n = len(rows)
    if n < 6:
        return Calibration(overhead=run_overhead_ms, a=run_overhead_ms, run_overhead_ms=run_overhead_ms, block=block,
                           n_networks=n,
                           metrics={'note': f'only {n} calibration networks: a = o = measured run overhead, b = c = 0'})
    t = np.array([r['measured'] for r in rows])
    iso = np.array([r['iso_sum'] for r in rows])
    base = np.c_[np.ones(n), -np.array([r['n_kernels'] for r in rows], float), -np.array([r['boundary'] for r in rows])]
    w = np.array([r['weight_mb'] for r in rows])
    coef, mu, width, err, plain = _fit_with_cache_term(t, iso, base, w)
    if coef[2] < 0:  # reorders cannot make an isolated kernel faster: too few or too noisy networks
        coef, mu, width, err, plain = _fit_with_cache_term(t, iso, base[:, :2], w)
        coef = np.r_[coef[:2], 0.0, coef[2:]]
    cal = Calibration(overhead=float(coef[0]), a=float(coef[1]), b=float(coef[2]), c=float(coef[3]),
                      mu=mu if mu is not None else 1.5, width=width if width is not None else 0.2,
                      run_overhead_ms=run_overhead_ms, block=block, n_networks=n)
    fitted = iso + base @ coef[:3] + cal.c * w * _sigmoid((w - cal.mu) / cal.width)
    cal.metrics = {'loo_mape': 100 * err, 'no_cache_term_loo_mape': 100 * plain,
                   'fit': regression_metrics(t, fitted), 'isolated_sum': regression_metrics(t, iso)}
    return cal


def _fit_network_calibration(rows: list[dict[str, float]], stage_a: Calibration) -> NetworkCalibration:
    """Stage B on rows with ``measured``, ``model_sum``, ``weight_mb``; with fewer than 6 networks, or a
    fit that makes no physical sense, stage A's overhead and cache term are kept (scale 1)."""
    n = len(rows)
    fallback = NetworkCalibration(overhead=stage_a.overhead, c=stage_a.c, mu=stage_a.mu, width=stage_a.width,
                                  n_networks=n)
    if n < 6:
        fallback.metrics = {'note': f'only {n} calibration networks: stage A kept, scale 1'}
        return fallback
    t = np.array([r['measured'] for r in rows])
    base = np.c_[np.ones(n), [r['model_sum'] for r in rows]]
    w = np.array([r['weight_mb'] for r in rows])
    coef, mu, width, err, plain = _fit_with_cache_term(t, np.zeros(n), base, w)
    if not 0.5 < coef[1] < 2.0:
        fallback.metrics = {'note': f'stage B gave scale {coef[1]:.3g} (too noisy or too few kernels): stage A kept'}
        return fallback
    ncal = NetworkCalibration(overhead=float(coef[0]), scale=float(coef[1]), c=float(coef[2]),
                              mu=mu if mu is not None else 1.5, width=width if width is not None else 0.2,
                              n_networks=n)
    fitted = base @ coef[:2] + ncal.c * w * _sigmoid((w - ncal.mu) / ncal.width)
    ncal.metrics = {'loo_mape': 100 * err, 'no_cache_term_loo_mape': 100 * plain, 'fit': regression_metrics(t, fitted)}
    return ncal


# ============================================================================================ the build


@dataclass
class BuildResult:
    predictor: KernelLatencyPredictor
    path: Path | None
    calibration: Calibration
    rounds: list[dict[str, Any]]
    kernel_metrics: dict[str, Any]
    validation: list[dict[str, Any]]
    summary: dict[str, Any]
    environment: dict[str, Any]
    n_new_measurements: int
    n_cached_measurements: int
    elapsed_s: float
    network_calibration: NetworkCalibration | None = None
    report_files: list[Path] = field(default_factory=list)


def _environment(threads: int) -> dict[str, Any]:
    import onnxruntime
    import sklearn
    import torch

    from nni_bigLittle import __version__
    from nni_bigLittle.hw_predictors import bench_onnx
    return {'cpu_model': bench_onnx._cpu_model(), 'cpu_count': os.cpu_count(), 'machine': platform.machine(),
            'threads': int(threads), 'onnxruntime': onnxruntime.__version__, 'torch': torch.__version__,
            'numpy': np.__version__, 'sklearn': sklearn.__version__, 'python': platform.python_version(),
            'system': f'{platform.system()} {platform.release()}', 'nni_bigLittle': __version__}


class _Session:
    """State of one build: profilers, cache, clock, log."""

    def __init__(self, config: BuildConfig, cache: MeasurementCache, log: Callable[[str], None]):
        from nni_bigLittle.hw_predictors.profilers import OnnxRuntimeProfiler
        self.config = config
        self.cache = cache
        self.log = log
        self.kernel_profiler = OnnxRuntimeProfiler(threads=config.threads, warmup=config.kernel_warmup,
                                                   repeats=config.kernel_repeats,
                                                   min_time_s=config.kernel_min_time_s)
        self.network_profiler = OnnxRuntimeProfiler(threads=config.threads, warmup=config.network_warmup,
                                                    repeats=config.network_repeats,
                                                    min_time_s=config.network_min_time_s)
        self.start = time.monotonic()
        self.deadline = self.start + 60.0 * config.budget_minutes
        self.kernels: dict[str, Kernel] = {}    # config key -> detected kernel
        self.iso: dict[str, float] = {}         # config key -> isolated median (ms)
        self.invalid: dict[str, str] = {}       # config key -> why it cannot be profiled standalone

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def tqdm(self, items, desc: str, total: int | None = None):
        if not self.config.progress:
            return items
        from tqdm.auto import tqdm
        return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)

    # ---------------------------------------------------------------- kernels
    def _kernel_key(self, cfg: KernelConfig) -> str:
        c = self.config
        return f'kernel|t{c.threads}|w{c.kernel_warmup}r{c.kernel_repeats}m{c.kernel_min_time_s:g}|{cfg.key()}'

    def cached_kernel(self, cfg: KernelConfig) -> bool:
        """True when ``cfg`` has a measurement or is known to be unprofilable (loaded from the cache)."""
        key = cfg.key()
        if key in self.iso or key in self.invalid:
            return True
        rec = self.cache.get(self._kernel_key(cfg))
        if rec is None:
            return False
        if rec.get('kind') == 'invalid':
            self.invalid[key] = rec.get('reason', '')
            return True
        self.kernels[key] = _kernel_from_dict(rec['kernel'])
        self.iso[key] = float(rec['median_ms'])
        return True

    def measure_kernel(self, cfg: KernelConfig, strict: bool = True) -> float | None:
        """Isolated median latency (ms) of ``cfg``, from the cache or profiled now.

        The standalone module must be detected as exactly one kernel of ``cfg.type`` (for an ``mbconv``:
        equal to :func:`~.arch_kernels.block_kernel`), else the features would not be what prediction
        sees: ``strict`` raises :class:`BuildError`, otherwise the configuration is recorded as invalid
        (e.g. a perturbed block whose squeeze-excite would pool a 1x1 map) and None returned.
        """
        if self.cached_kernel(cfg):
            if cfg.key() in self.invalid and strict:
                raise BuildError(f'{cfg.key()} cannot be profiled standalone: {self.invalid[cfg.key()]}')
            return self.iso.get(cfg.key())
        module = cfg.module()
        detected = detect_kernels(module, 'torch', cfg.input_shape)
        reason = None
        if len(detected) != 1 or detected[0].type != cfg.type:
            reason = f'detected as {[k.type for k in detected]}, not one {cfg.type!r} kernel'
        elif cfg.type == 'mbconv':
            from nni_bigLittle.hw_predictors.arch_kernels import block_kernel
            if not _same_features(detected[0], block_kernel(cfg.block_config(), cfg.hw)[0]):
                reason = 'detection disagrees with arch_kernels.block_kernel'
        if reason is not None:
            if strict:
                raise BuildError(f'The standalone module of {cfg.key()} is {reason}; its features would not match '
                                 'what prediction sees.')
            self.invalid[cfg.key()] = reason
            self.cache.put(self._kernel_key(cfg), {'kind': 'invalid', 'config': cfg.to_dict(), 'reason': reason})
            return None
        kernel = detected[0]
        onnx_bytes = torch_to_onnx(module, cfg.input_shape)
        result, attempts = _robust_profile(self.kernel_profiler, onnx_bytes)
        self.cache.put(self._kernel_key(cfg), {
            'kind': 'kernel', 'config': cfg.to_dict(), 'kernel': kernel.to_dict(), 'median_ms': result.median_ms,
            'p10_ms': result.p10_ms, 'p90_ms': result.p90_ms, 'mean_ms': result.mean_ms, 'repeats': result.repeats,
            'attempts': attempts, 'time': _now()})
        self.kernels[cfg.key()] = kernel
        self.iso[cfg.key()] = float(result.median_ms)
        return self.iso[cfg.key()]

    def measure_kernels(self, cfgs: Sequence[KernelConfig], desc: str, until: float | None = None,
                        strict: bool = False) -> list[KernelConfig]:
        """Measure ``cfgs`` (cached first, then the rest in a shuffled order) until the deadline ``until``
        (monotonic seconds); returns the configurations that have a measurement."""
        todo = [c for c in cfgs if not self.cached_kernel(c)]
        order = list(todo)
        random.Random(len(todo)).shuffle(order)
        for cfg in self.tqdm(order, desc=desc):
            if until is not None and time.monotonic() > until:
                left = sum(1 for c in todo if c.key() not in self.iso and c.key() not in self.invalid)
                self.log(f'    {desc}: time budget reached, {left} configurations left unprofiled')
                break
            self.measure_kernel(cfg, strict=strict)
        return [c for c in cfgs if c.key() in self.iso]

    # ---------------------------------------------------------------- networks and probes
    def measure_probe(self) -> float:
        c = self.config
        key = f'probe|t{c.threads}|w{c.network_warmup}r{c.network_repeats}m{c.network_min_time_s:g}'
        rec = self.cache.get(key)
        if rec is None:
            result = self.network_profiler.profile(torch_to_onnx(_Probe().eval(), (1, 3, 32, 32)))
            rec = self.cache.put(key, {'kind': 'probe', 'median_ms': result.median_ms, 'time': _now()})
        return float(rec['median_ms'])

    def _network_key(self, net: NetworkSpec, p: int) -> str:
        c = self.config
        return (f'network|t{c.threads}|w{c.network_warmup}r{c.network_repeats}m{c.network_min_time_s:g}|'
                f'{net.name}|pass{p}')

    def measure_networks(self, nets: Sequence[NetworkSpec], desc: str, passes: Sequence[int]) -> None:
        """One end-to-end measurement of every network per pass index in ``passes`` (cached by pass),
        in a shuffled order so that calibration and validation networks share the machine's state."""
        exports: dict[str, bytes] = {}
        jobs = [(p, n) for p in passes for n in nets if self.cache.get(self._network_key(n, p)) is None]
        random.Random(len(jobs)).shuffle(jobs)
        for p, net in self.tqdm(jobs, desc=desc):
            if net.name not in exports:
                exports[net.name] = torch_to_onnx(net.module(), net.input_shape)
            result, attempts = _robust_profile(self.network_profiler, exports[net.name])
            self.cache.put(self._network_key(net, p), {
                'kind': 'network', 'name': net.name, 'pass': p, 'median_ms': result.median_ms,
                'p10_ms': result.p10_ms, 'p90_ms': result.p90_ms, 'repeats': result.repeats, 'attempts': attempts,
                'load': os.getloadavg()[0], 'time': _now()})

    def network_medians(self, net: NetworkSpec, passes: Iterable[int] = range(64)) -> list[float]:
        out = []
        for p in passes:
            rec = self.cache.get(self._network_key(net, p))
            if rec is not None:
                out.append(float(rec['median_ms']))
        return out

    def remeasure_kernel(self, cfg: KernelConfig, rep: int) -> None:
        """A repeated isolated measurement (``rep`` >= 1) of an already measured kernel, later in the build."""
        key = f'{self._kernel_key(cfg)}|rep{rep}'
        if self.cache.get(key) is None:
            result, attempts = _robust_profile(self.kernel_profiler, torch_to_onnx(cfg.module(), cfg.input_shape))
            self.cache.put(key, {'kind': 'kernel-rep', 'median_ms': result.median_ms, 'p10_ms': result.p10_ms,
                                 'attempts': attempts, 'time': _now()})

    def kernel_reps(self, cfg: KernelConfig, reps: int) -> list[float]:
        values = [self.iso[cfg.key()]]
        for rep in range(1, reps):
            rec = self.cache.get(f'{self._kernel_key(cfg)}|rep{rep}')
            if rec is not None:
                values.append(float(rec['median_ms']))
        return values


def _robust_profile(profiler, onnx_bytes: bytes, tries: int = 3, tolerance: float = 1.15):
    """Profile; when the median sits more than ``tolerance`` above the 10th percentile (another process
    took the core during the timed loop: on an idle core the two are within a few per cent), profile
    again, up to ``tries`` times, and keep the attempt with the lowest median. Returns (result, medians)."""
    best, attempts = None, []
    for _ in range(tries):
        result = profiler.profile(onnx_bytes)
        attempts.append(round(result.median_ms, 6))
        if best is None or result.median_ms < best.median_ms:
            best = result
        if result.median_ms <= tolerance * result.p10_ms:
            break
    return best, attempts


def _spread(values: Sequence[float]) -> float:
    return float(max(values) / min(values) - 1.0) if values and min(values) > 0 else 0.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')


def _split(cfgs: list[KernelConfig], holdout: float, rng: random.Random
           ) -> tuple[list[KernelConfig], list[KernelConfig], list[KernelConfig]]:
    """Per type: (train, refine, test); refine and test get ``holdout`` of the configurations each."""
    train, refine, test = [], [], []
    by_type: dict[str, list[KernelConfig]] = {}
    for c in cfgs:
        by_type.setdefault(c.type, []).append(c)
    for kernel_type in sorted(by_type):
        group = list(by_type[kernel_type])
        rng.shuffle(group)
        n_hold = max(1, int(round(holdout * len(group)))) if len(group) >= 5 else 0
        test += group[:n_hold]
        refine += group[n_hold:2 * n_hold]
        train += group[2 * n_hold:]
    return train, refine, test


def _fit_models(session: _Session, cal: Calibration, cfgs: Sequence[KernelConfig],
                make_regressor: Callable[[], Any]) -> dict[str, ForestModel]:
    by_type: dict[str, tuple[list[Kernel], list[float]]] = {}
    for c in cfgs:
        k = session.kernels[c.key()]
        ks, ys = by_type.setdefault(c.type, ([], []))
        ks.append(k)
        ys.append(cal.in_network(k, session.iso[c.key()]))
    models = {}
    for kernel_type, (ks, ys) in by_type.items():
        if len(ks) >= 3:
            models[kernel_type] = ForestModel.fit(ks, ys, make_regressor())
    return models


def _evaluate(session: _Session, cal: Calibration, models: dict[str, ForestModel], cfgs: Sequence[KernelConfig]
              ) -> tuple[dict[str, Any], list[tuple[float, KernelConfig]]]:
    """Held-out metrics per type and overall, on in-network targets and on the isolated measurements;
    plus (relative error, configuration) pairs."""
    metrics: dict[str, Any] = {}
    errors: list[tuple[float, KernelConfig]] = []
    all_t, all_p, all_ti, all_pi = [], [], [], []
    by_type: dict[str, list[KernelConfig]] = {}
    for c in cfgs:
        by_type.setdefault(c.type, []).append(c)
    for kernel_type, group in sorted(by_type.items()):
        if kernel_type not in models:
            continue
        ks = [session.kernels[c.key()] for c in group]
        iso = np.array([session.iso[c.key()] for c in group])
        target = np.array([cal.in_network(k, t) for k, t in zip(ks, iso)])
        pred = models[kernel_type].predict(ks)
        pred_iso = pred + np.array([cal.a + cal.b * boundary_elements(k, cal.block) for k in ks])
        m = regression_metrics(target, pred)
        m['isolated'] = regression_metrics(iso, pred_iso)
        metrics[kernel_type] = m
        # nn-Meter picks refinement points by the error on the kernel measurements themselves
        errors += [(float(abs(p - t) / t), c) for p, t, c in zip(pred_iso, iso, group)]
        all_t += list(target)
        all_p += list(pred)
        all_ti += list(iso)
        all_pi += list(pred_iso)
    if all_t:
        metrics['all'] = regression_metrics(all_t, all_p)
        metrics['all']['isolated'] = regression_metrics(all_ti, all_pi)
    return metrics, errors


def _routes(models: dict[str, Any]) -> dict[str, str]:
    return {t: t for t in models}


def _pass_schedule(passes: int) -> tuple[list[int], list[int], list[int]]:
    """Network pass indices measured at the start, after the prior and at the end of the build: the
    passes are spread over the build so that slow drifts of a shared machine average out."""
    if passes <= 1:
        return [0], [], []
    if passes == 2:
        return [0], [], [1]
    return [0], list(range(1, passes - 1)), [passes - 1]


def _kernel_configs_of(nets: Sequence[NetworkSpec]) -> list[KernelConfig]:
    out: list[KernelConfig] = []
    seen: set[str] = set()
    for net in nets:
        for k in net.kernels:
            cfg = KernelConfig.from_kernel(k)
            if cfg is None:
                raise BuildError(f'{net.name}: kernel {k.describe()} cannot be profiled standalone.')
            if cfg.key() not in seen:
                seen.add(cfg.key())
                out.append(cfg)
    return out


def build_local_predictor(config: BuildConfig | None = None, log: Callable[[str], None] = print) -> BuildResult:
    """Profile this machine and build its kernel latency predictor (see the module docstring)."""
    config = config or BuildConfig()
    t_start = time.monotonic()
    env = _environment(config.threads)
    work = Path(config.work_dir).expanduser() if config.work_dir else default_work_dir()
    cache = MeasurementCache(work / 'measurements.jsonl', env)
    n_cached_start = len(cache)
    s = _Session(config, cache, log)
    rng = random.Random(config.seed)
    log(f'build-local: {env["cpu_model"]}, {config.threads} thread(s), onnxruntime {env["onnxruntime"]}; '
        f'budget {config.budget_minutes:g} min; work dir {work} ({n_cached_start} cached measurements)')
    load_start = os.getloadavg()
    first_passes, middle_passes, last_passes = _pass_schedule(config.network_passes)
    block = nchwc_block_size()

    # ---------------------------------------------------------------- 0. run overhead
    run_overhead = s.measure_probe()
    log(f'[0] session.run of a one-element graph: {1000 * run_overhead:.2f} us')

    # ---------------------------------------------------------------- 1. networks (first pass), calibration kernels
    cal_seeds, val_seeds = config.calibration_seeds(), config.validation_seeds()
    cal_nets = network_specs('cifar', cal_seeds)
    used = {json.dumps(n.arch.sample, sort_keys=True) for n in cal_nets}
    val_nets = [n for n in network_specs('cifar', val_seeds) if json.dumps(n.arch.sample, sort_keys=True) not in used]
    all_nets = cal_nets + val_nets
    cal_kernel_cfgs = _kernel_configs_of(cal_nets)
    t_phase = time.monotonic()
    log(f'[1] {len(cal_nets)} calibration networks (cifar seeds {min(cal_seeds) if cal_seeds else "-"}..'
        f'{max(cal_seeds) if cal_seeds else "-"}) and {len(val_nets)} validation networks (seeds '
        f'{val_seeds[0] if val_seeds else "-"}..{val_seeds[-1] if val_seeds else "-"}), measured end to end in '
        f'{config.network_passes} pass(es) spread over the build; the {len(cal_kernel_cfgs)} distinct kernels of the '
        'calibration networks in isolation')
    s.measure_networks(all_nets, 'networks, first pass', first_passes)
    t_net_pass = (time.monotonic() - t_phase)
    s.measure_kernels(cal_kernel_cfgs, 'calibration kernels', strict=True)
    for net in cal_nets:  # the standalone module's kernel must be the network's kernel
        for k in net.kernels:
            if not _same_features(s.kernels[KernelConfig.from_kernel(k).key()], k):
                raise BuildError(f'{net.name}: the standalone kernel of {k.describe()} has other features.')
    kernel_reps = 2 if config.network_passes >= 2 else 1

    def calibration_rows(passes: Iterable[int] = range(64), reps: int = kernel_reps) -> list[dict[str, float]]:
        rows = []
        for net in cal_nets:
            iso = [float(np.mean(s.kernel_reps(KernelConfig.from_kernel(k), reps))) for k in net.kernels]
            rows.append({'name': net.name, 'measured': float(np.median(s.network_medians(net, passes))),
                         'iso_sum': float(sum(iso)), 'n_kernels': len(net.kernels),
                         'boundary': sum(boundary_elements(k, block) for k in net.kernels), 'weight_mb': net.weight_mb,
                         'macs': net.macs})
        return rows

    # only what the first pass measured, so that a resumed build (whose cache holds later passes) refines the same
    cal = _fit_calibration(calibration_rows(first_passes, 1), run_overhead, block)
    _log_calibration(log, cal, 'preliminary')

    # time kept for the remaining network passes, the repeated calibration kernels and the fits
    t_kernels = (time.monotonic() - t_phase - t_net_pass) / max(1, len(cal_kernel_cfgs))
    reserve = 20.0 + 1.2 * (t_net_pass * (len(middle_passes) + len(last_passes) + 1)
                            + (t_kernels * len(cal_kernel_cfgs) if kernel_reps > 1 else 0.0))

    # ---------------------------------------------------------------- 2. prior
    prior, pools = prior_configs(rng, config.cifar_archs, config.imagenet_archs, config.timm_models,
                                 config.n_perturbed, config.part_caps, exclude_seeds=set(val_seeds) | set(cal_seeds))
    cal_keys = {c.key() for c in cal_kernel_cfgs}
    # the calibration networks' kernels are fitted too (they are the most frequent configurations of the
    # space); they stay out of the held-out refinement and test sets
    train, refine_set, test_set = _split([c for c in prior if c.key() not in cal_keys], config.holdout, rng)
    train = cal_kernel_cfgs + train
    counts = {t: sum(c.type == t for c in prior) for t in PROFILED_TYPES}
    log(f'[2] prior: {len(prior)} configurations from {", ".join(pools)} ({counts}); '
        f'{len(train)} train / {len(refine_set)} refine / {len(test_set)} test')
    refine_budget = 0.25 * max(0.0, s.left() - reserve)
    until = s.deadline - reserve - refine_budget
    # held-out sets first (they are small and every round needs them), then training configurations
    refine_set = s.measure_kernels(refine_set, 'refine set', until)
    test_set = s.measure_kernels(test_set, 'test set', until)
    chunks = [train[i::len(middle_passes) + 1] for i in range(len(middle_passes) + 1)]
    measured: set[str] = set()
    for i, chunk in enumerate(chunks):  # the middle network passes are spread over the prior's profiling
        measured |= {c.key() for c in s.measure_kernels(chunk, f'prior {i + 1}/{len(chunks)}', until)}
        if i < len(middle_passes):
            s.measure_networks(all_nets, f'networks, pass {middle_passes[i] + 1}', [middle_passes[i]])
    train = [c for c in train if c.key() in measured]

    # ---------------------------------------------------------------- 3. fit + adaptive refinement
    factory = config.make_regressor
    rounds: list[dict[str, Any]] = []
    seen = {c.key() for c in train} | {c.key() for c in refine_set} | {c.key() for c in test_set} | cal_keys
    ranges = _merged_ranges(pools)
    refine_rng = random.Random(config.seed + 1)
    log(f'[3] fit and adaptive refinement ({config.rounds} rounds, {config.refine_top} worst x '
        f'{config.refine_neighbors} neighbours; errors on the isolated kernel measurements)')
    for rnd in range(config.rounds + 1):
        models = _fit_models(s, cal, train, factory)
        ref_metrics, errors = _evaluate(s, cal, models, refine_set)
        test_metrics, _ = _evaluate(s, cal, models, test_set)
        row = {'round': rnd, 'n_train': len(train)}
        for name, m in (('refine', ref_metrics), ('test', test_metrics)):
            iso_m = m.get('all', {}).get('isolated', {})
            row[f'{name}_mape'] = iso_m.get('mape')
            row[f'{name}_within_10'] = iso_m.get('within_10')
        row['test_by_type'] = {t: {'mape': m['isolated']['mape'], 'within_10': m['isolated']['within_10']}
                               for t, m in test_metrics.items() if t != 'all'}
        rounds.append(row)
        log(f'    round {rnd}: {len(train)} train kernels; refine set MAPE {_fmt(row["refine_mape"])} % '
            f'(±10 %: {_pct(row["refine_within_10"])}); test set MAPE {_fmt(row["test_mape"])} % '
            f'(±10 %: {_pct(row["test_within_10"])})')
        if rnd == config.rounds or s.left() < reserve + 10:
            if rnd < config.rounds:
                log('    time budget reached: no more refinement rounds')
            break
        worst = [c for e, c in sorted(errors, key=lambda x: -x[0])[:config.refine_top] if e > 0.03]
        new: list[KernelConfig] = []
        for c in worst:
            made = 0
            for _ in range(config.refine_neighbors * 4):
                if made >= config.refine_neighbors:
                    break
                cand = perturb(c, refine_rng, ranges.get(c.type, {}), small=True)
                if cand is not None and cand.key() not in seen:
                    seen.add(cand.key())
                    new.append(cand)
                    made += 1
        if not new:
            log('    no configuration left to refine')
            break
        train = train + s.measure_kernels(new, f'refinement round {rnd + 1}', s.deadline - reserve)

    # ---------------------------------------------------------------- 4. last pass, final calibration and fit
    if last_passes:
        s.measure_networks(all_nets, 'networks, last pass', last_passes)
    if kernel_reps > 1:
        for cfg in s.tqdm(cal_kernel_cfgs, desc='calibration kernels, again'):
            s.remeasure_kernel(cfg, 1)
    # a network whose pass medians disagree by more than 8 % gets up to two more passes
    extra = max(first_passes + middle_passes + last_passes) + 1
    for attempt in range(2):
        noisy = [n for n in all_nets
                 if _spread(s.network_medians(n)) > 0.08 and len(s.network_medians(n)) < extra + 1 + attempt]
        if noisy:
            s.measure_networks(noisy, f'networks, extra pass {attempt + 1}', [extra + attempt])
    cal_rows = calibration_rows()
    cal = _fit_calibration(cal_rows, run_overhead, block)
    _log_calibration(log, cal, 'final')
    final_cfgs = train + refine_set
    models = _fit_models(s, cal, final_cfgs, factory)
    kernel_metrics, _ = _evaluate(s, cal, models, test_set)
    missing = [t for t in PROFILED_TYPES if t not in models]
    if missing:
        log(f'    note: no model for {missing} (too few measurements); they fall back to their parts or are uncovered')
    plain = KernelLatencyPredictor(models, _routes(models), {}, overhead=0.0)
    for r, net in zip(cal_rows, cal_nets):
        r['model_sum'] = float(plain.predict_kernels(net.kernels).total)
    ncal = _fit_network_calibration(cal_rows, cal)
    log(f'    stage B (kernel models on the calibration networks): overhead {1000 * ncal.overhead:.2f} us, '
        f'scale {ncal.scale:.4f}, cache term {ncal.c:.4f} ms/MB x sigmoid((W - {ncal.mu:.2f}) / {ncal.width:.2f}); '
        f'leave-one-out MAPE {_fmt(ncal.metrics.get("loo_mape"))} %')
    for m in models.values():
        m.bias += math.log(ncal.scale)
    predictor = KernelLatencyPredictor(models, _routes(models), {'network_term': ncal.network_term()},
                                       overhead=ncal.overhead)

    # ---------------------------------------------------------------- 5. validation
    validation: list[dict[str, Any]] = []
    baseline = _flops_baseline(cal_rows)
    for net in val_nets:
        measured = s.network_medians(net)
        full = predictor.predict_kernels(net.kernels).total  # kernels + overhead + network term
        term = network_term_ms(ncal.network_term(), net.kernels)
        validation.append({
            'network': net.name, 'part': net.part, 'seed': net.seed, 'n_kernels': len(net.kernels),
            'mmacs': net.macs / 1e6, 'weight_mb': net.weight_mb, 'measured_ms': float(np.median(measured)),
            'passes': len(measured), 'pass_spread': _spread(measured), 'predicted_ms': full,
            'kernel_sum_ms': full - term, 'network_term_ms': term,
            'flops_baseline_ms': baseline[0] + baseline[1] * net.macs / 1e6})
    for r in validation:
        for key, col in (('error_pct', 'predicted_ms'), ('kernel_sum_error_pct', 'kernel_sum_ms'),
                         ('flops_baseline_error_pct', 'flops_baseline_ms')):
            r[key] = 100 * (r[col] - r['measured_ms']) / r['measured_ms']
    if val_nets:  # the ONNX route (what NNI's NnMeterProfiler hands over) must see the same kernels
        first = val_nets[0]
        onnx_kernels = detect_kernels(torch_to_onnx(first.module(), first.input_shape), 'onnx')
        if abs(predict_latency_ms(predictor, onnx_kernels) - validation[0]['predicted_ms']) > 1e-9:
            log('    warning: kernels detected on the ONNX export predict differently from arch_kernels')
    summary = _summary(validation)
    if val_nets:
        fitted_keys = {c.key() for c in final_cfgs}
        val_kernels = [KernelConfig.from_kernel(k) for n in val_nets for k in n.kernels]
        summary['kernels_profiled_exactly'] = float(np.mean([c.key() in fitted_keys for c in val_kernels]))
    summary_cal = regression_metrics([r['measured'] for r in cal_rows],
                                     [predict_latency_ms(predictor, n.kernels) for n in cal_nets]) if cal_rows else {}

    # ---------------------------------------------------------------- 6. metadata, save, report
    elapsed = time.monotonic() - t_start
    load_end = os.getloadavg()
    metadata = {
        'name': PREDICTOR_NAME,
        'device': f'{env["cpu_model"]} ({env["cpu_count"]} logical CPUs), {config.threads} thread(s)',
        'cpu_model': env['cpu_model'], 'threads': config.threads,
        'runtime': f'onnxruntime {env["onnxruntime"]} (CPUExecutionProvider, all graph optimizations)',
        'precision': 'fp32', 'metric': 'latency', 'unit': 'ms', 'batch': 1,
        'data_source': DATA_SOURCE, 'n_measurements': len(final_cfgs),
        'fit_metrics': {
            'kernel_test': kernel_metrics,
            'heldout_within_10': kernel_metrics.get('all', {}).get('isolated', {}).get('within_10'),
            'refinement_rounds': [{k: v for k, v in r.items() if k != 'test_by_type'} for r in rounds],
            'calibration_networks': summary_cal,
            'validation_networks': summary,
        },
        'calibration': {'kernels': {k: v for k, v in asdict(cal).items()},
                        'networks': {k: v for k, v in asdict(ncal).items()}},
        'network_term': ncal.network_term(),
        'environment': env,
        'package_version': env['nni_bigLittle'],
        'created': _now(),
        'build': {'seed': config.seed, 'budget_minutes': config.budget_minutes, 'elapsed_s': round(elapsed, 1),
                  'calibration_seeds': sorted(cal_seeds),
                  'validation_seeds': [val_seeds[0], val_seeds[-1]] if val_seeds else [],
                  'network_passes': config.network_passes,
                  'regressor': config.regressor if config.regressor_factory is None else 'custom',
                  'load_average_start': load_start[0], 'load_average_end': load_end[0],
                  **_cache_stats(cache)},
        'notes': [
            'Kernel models predict in-network costs: isolated measurements minus the per-run overhead a and the '
            'NCHWc boundary reorders b (stage A, calibrated on separate networks with their measured kernels), '
            'then scaled and given a per-inference overhead fitted on the same networks with the models\' '
            'predictions (stage B).',
            'metadata["network_term"] is a network-level L2 weight-streaming term; KernelLatencyPredictor.predict '
            'adds it once per network (the NNI expression / expectation, being sums of kernels, leave it out).',
            f'Batch 1, {config.threads} ONNX Runtime thread(s); measured on a shared machine (load average '
            f'{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end).',
        ],
    }
    predictor.metadata.update(metadata)
    out = Path(config.out).expanduser() if config.out else default_predictor_dir() / f'{PREDICTOR_NAME}.npz'
    path = predictor.save(out)
    result = BuildResult(predictor, path, cal, rounds, kernel_metrics, validation, summary, env,
                         n_new_measurements=cache.new, n_cached_measurements=n_cached_start,
                         elapsed_s=time.monotonic() - t_start, network_calibration=ncal)
    log(f'[4] saved {path} ({len(final_cfgs)} kernel measurements in the fit, {cache.new} new measurements this '
        f'run, {result.elapsed_s / 60:.1f} min)')
    if validation:
        log(format_validation_table(validation))
        log(_summary_text(summary))
    if config.report_dir:
        result.report_files = write_report(result, config.report_dir, config)
        log(f'    report: {", ".join(str(p) for p in result.report_files)}')
    return result


def _log_calibration(log, cal: Calibration, label: str) -> None:
    if cal.metrics.get('loo_mape') is None:
        log(f'    {label} calibration: {cal.metrics.get("note")}')
        return
    log(f'    {label} calibration (stage A, {cal.n_networks} networks, measured kernels): isolated kernels sum to '
        f'{cal.metrics["isolated_sum"]["mape"]:.0f} % off; overhead {1000 * cal.overhead:.2f} us, per kernel '
        f'a = {1000 * cal.a:.2f} us (one-element graph {1000 * cal.run_overhead_ms:.2f} us), boundary '
        f'b = {cal.b:.3f} ms per M elements, cache term {cal.c:.4f} ms/MB x sigmoid((W - {cal.mu:.2f}) / '
        f'{cal.width:.2f}); leave-one-out MAPE {cal.metrics["loo_mape"]:.2f} % '
        f'({cal.metrics["no_cache_term_loo_mape"]:.2f} % without the cache term)')


def _merged_ranges(pools: dict[str, _Pool]) -> dict[str, dict[str, list]]:
    ranges: dict[str, dict[str, list]] = {}
    for pool in pools.values():
        for kernel_type in pool.observed:
            r = pool.ranges(kernel_type)
            cur = ranges.get(kernel_type)
            if cur is None:
                ranges[kernel_type] = r
                continue
            cur['hw'] = sorted(set(cur['hw']) | set(r['hw']))
            cur['channels'] = [min(cur['channels'][0], r['channels'][0]), max(cur['channels'][1], r['channels'][1])]
            cur['kernel'] = sorted(set(cur['kernel']) | set(r['kernel']))
            cur['stride'] = sorted(set(cur['stride']) | set(r['stride']))
    return ranges


def _flops_baseline(rows: list[dict[str, float]]) -> tuple[float, float]:
    """``T = α + β · MMACs`` fitted on the calibration networks (relative error), the FLOPs-only baseline."""
    if len(rows) < 2:
        return 0.0, 0.0
    t = np.array([r['measured'] for r in rows])
    x = np.c_[np.ones(len(rows)), [r['macs'] / 1e6 for r in rows]]
    coef, *_ = np.linalg.lstsq(x / t[:, None], np.ones(len(rows)), rcond=None)
    return float(coef[0]), float(coef[1])


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    t = [r['measured_ms'] for r in rows]
    out = regression_metrics(t, [r['predicted_ms'] for r in rows])
    out['kernel_sum_only'] = regression_metrics(t, [r['kernel_sum_ms'] for r in rows])
    out['flops_baseline'] = regression_metrics(t, [r['flops_baseline_ms'] for r in rows])
    for part in ('little', 'big'):
        sub = [r for r in rows if r['part'] == part]
        if sub:
            out[part] = regression_metrics([r['measured_ms'] for r in sub], [r['predicted_ms'] for r in sub])
    out['max_pass_spread'] = float(max(r['pass_spread'] for r in rows))
    out['median_pass_spread'] = float(np.median([r['pass_spread'] for r in rows]))
    return out


def _fmt(x) -> str:
    return 'n/a' if x is None else f'{x:.2f}'


def _pct(x) -> str:
    return 'n/a' if x is None else f'{100 * x:.0f} %'


def _summary_text(summary: dict[str, Any]) -> str:
    if not summary:
        return 'no validation networks'
    fb, ks = summary['flops_baseline'], summary['kernel_sum_only']
    return (f'validation on {summary["n"]} networks: {100 * summary["within_10"]:.1f} % within ±10 % '
            f'({100 * summary["within_5"]:.1f} % within ±5 %), MAPE {summary["mape"]:.2f} %, '
            f'Spearman {summary.get("spearman", float("nan")):.3f}; without the network term '
            f'{100 * ks["within_10"]:.1f} % / MAPE {ks["mape"]:.2f} %; FLOPs-only baseline '
            f'{100 * fb["within_10"]:.1f} % / MAPE {fb["mape"]:.2f} % / '
            f'Spearman {fb.get("spearman", float("nan")):.3f}')


def format_validation_table(rows: list[dict[str, Any]]) -> str:
    head = (f'{"network":<28} {"MMACs":>6} {"W MB":>5} {"measured":>9} {"predicted":>9} {"error":>7} '
            f'{"kern.sum":>9} {"FLOPs-lin":>9} {"FL err":>7}  (ms)')
    lines = [head, '-' * len(head)]
    for r in rows:
        lines.append(f'{r["network"]:<28} {r["mmacs"]:>6.2f} {r["weight_mb"]:>5.2f} {r["measured_ms"]:>9.4f} '
                     f'{r["predicted_ms"]:>9.4f} {r["error_pct"]:>+6.1f}% {r["kernel_sum_ms"]:>9.4f} '
                     f'{r["flops_baseline_ms"]:>9.4f} {r["flops_baseline_error_pct"]:>+6.1f}%')
    return '\n'.join(lines)


_CSV_FIELDS = ('network', 'part', 'seed', 'n_kernels', 'mmacs', 'weight_mb', 'measured_ms', 'passes', 'pass_spread',
               'predicted_ms', 'error_pct', 'kernel_sum_ms', 'network_term_ms', 'kernel_sum_error_pct',
               'flops_baseline_ms', 'flops_baseline_error_pct')


def write_report(result: BuildResult, report_dir: str | Path, config: BuildConfig | None = None) -> list[Path]:
    """``validation.csv`` (one row per network, environment columns) and ``README.md`` in ``report_dir``."""
    import csv
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    env = result.environment
    meta = result.predictor.metadata
    created = meta.get('created', _now())
    csv_path = folder / 'validation.csv'
    env_cols = {'cpu_model': env['cpu_model'], 'threads': env['threads'], 'onnxruntime': env['onnxruntime'],
                'torch': env['torch'], 'python': env['python'], 'date': created}
    with open(csv_path, 'w', newline='', encoding='utf-8') as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_CSV_FIELDS) + list(env_cols))
        writer.writeheader()
        for r in result.validation:
            writer.writerow({**{k: (round(r[k], 6) if isinstance(r[k], float) else r[k]) for k in _CSV_FIELDS},
                             **env_cols})
    cal = result.calibration
    s = result.summary
    km = result.kernel_metrics
    lines = [
        '# Local CPU latency predictor (`local_cpu_ort`): validation',
        '',
        f'Built by `nni-biglittle predictor build-local` on {created[:10]}: nn-Meter\'s method (kernel prior from our '
        'spaces + perturbations, random forest per kernel type, adaptive refinement) with a calibration of what an '
        'isolated kernel measurement misses, validated end to end on random frozen networks never used in fitting.',
        '',
        '## Environment',
        '',
        f'- CPU: {env["cpu_model"]} ({env["cpu_count"]} logical CPUs, {env["machine"]}), {env["system"]}',
        f'- ONNX Runtime {env["onnxruntime"]}, CPUExecutionProvider, {env["threads"]} intra-op thread(s), '
        'sequential execution, all graph optimizations; batch 1, fp32',
        f'- torch {env["torch"]}, numpy {env["numpy"]}, scikit-learn {env["sklearn"]}, Python {env["python"]}, '
        f'nni_bigLittle {env["nni_bigLittle"]}',
        f'- measurements: {meta["build"].get("kernel_measurements", 0)} isolated kernel and '
        f'{meta["build"].get("network_measurements", 0)} end-to-end network measurements made over '
        f'{meta["build"].get("measurement_span_min", float("nan")):.1f} min (wall clock, from the measurement '
        f'cache); load average during the network passes {_load_text(meta["build"].get("load_during_networks"))} '
        '(a shared 2-core machine: other jobs ran meanwhile)',
        f'- this run: {result.elapsed_s / 60:.1f} min, {result.n_new_measurements} new measurements '
        f'(the rest from the cache); seed {meta["build"]["seed"]}, {meta["n_measurements"]} kernel '
        'configurations in the final fit',
        f'- command: `{_command_line(config)}`' if config is not None else '',
        '',
        '## Summary',
        '',
    ]
    if s:
        lines += [
            '| predictor | networks | within ±10 % | within ±5 % | MAPE | Spearman |',
            '|---|---:|---:|---:|---:|---:|',
            _md_row('kernels + overhead + network term (`KernelLatencyPredictor.predict`)', s),
            _md_row('kernels + overhead only (without the network term)', s['kernel_sum_only']),
            _md_row('FLOPs-only linear baseline (fitted on the calibration networks)', s['flops_baseline']),
        ]
        for part in ('little', 'big'):
            if part in s:
                lines.append(_md_row(f'  {part} networks only (full predictor)', s[part]))
        lines += ['', f'Spread between the pass medians of a network (max / min - 1): median '
                  f'{100 * s.get("median_pass_spread", float("nan")):.1f} %, largest {100 * s["max_pass_spread"]:.1f} %. '
                  f'{100 * s.get("kernels_profiled_exactly", float("nan")):.0f} % of the validation networks\' kernels '
                  'have a configuration that was profiled (the prior samples the space the networks come from); '
                  'the networks themselves were never measured for fitting.', '']
    ncal = result.network_calibration
    lines += [
        '## Method',
        '',
        f'- Prior: kernel configurations of random `cifar` samples (little paths and big networks, with the parts of '
        f'their MBConv blocks) and of `imagenet` samples, plus random perturbations within the observed ranges; '
        f'each profiled as a standalone module (exported to ONNX, batch norm folded) whose detected kernel must '
        f'be exactly the one meant. {meta["n_measurements"]} configurations in the final fit.',
        f'- Stage A, {cal.n_networks} calibration networks (cifar seeds {min(meta["build"]["calibration_seeds"])}..'
        f'{max(meta["build"]["calibration_seeds"])}, half of them chosen to spread the big networks\' weight sizes) '
        f'measured end to end and kernel by kernel: overhead {1000 * cal.overhead:.2f} µs per inference, '
        f'a = {1000 * cal.a:.2f} µs per isolated kernel (a one-element graph costs '
        f'{1000 * cal.run_overhead_ms:.2f} µs '
        f'per `session.run`), b = {cal.b:.3f} ms per million boundary elements (the NCHWc reorders an isolated '
        f'convolution pays and a network does not), cache term {cal.c:.4f} ms/MB · W · σ((W − {cal.mu:.2f} MB)/'
        f'{cal.width:.2f} MB) for weights beyond the L2 cache. Kernel models are fitted on '
        f'`T_iso − a − b · boundary` (in-network costs).',
    ]
    if cal.metrics.get('loo_mape') is not None:
        lines.append(f'  With their measured kernels, the plain sum of isolated kernels is off by '
                     f'{cal.metrics["isolated_sum"]["mape"]:.1f} % (MAPE); stage A leave-one-out '
                     f'{cal.metrics["loo_mape"]:.2f} % ({cal.metrics["no_cache_term_loo_mape"]:.2f} % without the '
                     'cache term).')
    if ncal is not None and ncal.metrics.get('loo_mape') is not None:
        lines.append(f'- Stage B, the same networks predicted by the fitted kernel models: '
                     f'latency = {1000 * ncal.overhead:.2f} µs + {ncal.scale:.4f} · Σ kernels + {ncal.c:.4f} ms/MB '
                     f'· W · σ((W − {ncal.mu:.2f})/{ncal.width:.2f}); leave-one-out MAPE '
                     f'{ncal.metrics["loo_mape"]:.2f} %. '
                     'The scale is folded into the kernel models, the constant is the predictor\'s `overhead`, the '
                     'cache term is `metadata["network_term"]`.')
    lines.append('- Networks are measured in passes spread over the build (start, middle, end; more when the passes '
                 'disagree by more than 8 %), calibration and validation networks interleaved; the median of the '
                 'pass medians counts. Isolated measurements whose median is more than 15 % above their 10th '
                 'percentile (another process took the core) are repeated.')
    if km.get('all'):
        iso = km['all']['isolated']
        lines.append(f'- Kernel test set ({km["all"]["n"]} configurations never fitted): MAPE {iso["mape"]:.2f} %, '
                     f'{100 * iso["within_10"]:.1f} % within ±10 % on the isolated measurements (nn-Meter\'s kernel '
                     f'metric); on the in-network targets MAPE {km["all"]["mape"]:.2f} %.')
    lines += ['', '### Adaptive refinement (errors on the isolated kernel measurements)', '',
              '| round | train kernels | refine MAPE | refine ±10 % | test MAPE | test ±10 % |',
              '|---:|---:|---:|---:|---:|---:|']
    for r in result.rounds:
        lines.append(f'| {r["round"]} | {r["n_train"]} | {_fmt(r["refine_mape"])} % | {_pct(r["refine_within_10"])} | '
                     f'{_fmt(r["test_mape"])} % | {_pct(r["test_within_10"])} |')
    lines += ['', '### Kernel test set per type', '',
              '| type | n | isolated MAPE | isolated within ±10 % | in-network MAPE |', '|---|---:|---:|---:|---:|']
    for t, m in km.items():
        if t != 'all':
            lines.append(f'| {t} | {m["n"]} | {m["isolated"]["mape"]:.2f} % | '
                         f'{100 * m["isolated"]["within_10"]:.1f} % | '
                         f'{m["mape"]:.2f} % |')
    if result.validation:
        lines += ['', '## Per network', '', '```', format_validation_table(result.validation), '```', '',
                  'Rows with environment columns: `validation.csv`.']
    md_path = folder / 'README.md'
    md_path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return [md_path, csv_path]


def _cache_stats(cache: MeasurementCache) -> dict[str, Any]:
    """How many measurements the cache holds, over which wall-clock span, under which load."""
    times = [_dt.datetime.fromisoformat(r['time']) for r in cache.records.values() if 'time' in r]
    loads = [float(r['load']) for r in cache.records.values() if 'load' in r]
    return {
        'kernel_measurements': sum(1 for r in cache.records.values() if r.get('kind') in ('kernel', 'kernel-rep')),
        'network_measurements': sum(1 for r in cache.records.values() if r.get('kind') == 'network'),
        'measurement_span_min': round((max(times) - min(times)).total_seconds() / 60, 2) if times else 0.0,
        'load_during_networks': [round(min(loads), 2), round(float(np.median(loads)), 2), round(max(loads), 2)]
        if loads else None,
    }


def _load_text(loads) -> str:
    return 'n/a' if not loads else f'{loads[0]:.1f} / {loads[1]:.1f} / {loads[2]:.1f} (min / median / max)'


def _command_line(config: BuildConfig) -> str:
    """The CLI call that repeats this build (paths left out: they are the defaults or machine-specific)."""
    parts = ['nni-biglittle predictor build-local', f'--threads {config.threads}',
             f'--budget-minutes {config.budget_minutes:g}', f'--validate {config.validate}',
             f'--calibrate {config.calibrate}', f'--rounds {config.rounds}', f'--passes {config.network_passes}',
             f'--seed {config.seed}']
    if config.regressor != 'random-forest':
        parts.append(f'--regressor {config.regressor}')
    if not config.imagenet_archs:
        parts.append('--no-imagenet')
    parts += [f'--timm {m}' for m in config.timm_models]
    if config.report_dir:
        parts.append('--report-dir benchmarks/results/local_cpu_ort')
    return ' '.join(parts)


def _md_row(name: str, m: dict[str, Any]) -> str:
    return (f'| {name} | {m["n"]} | {100 * m["within_10"]:.1f} % | {100 * m["within_5"]:.1f} % | {m["mape"]:.2f} % | '
            f'{m.get("spearman", float("nan")):.3f} |')
