"""Choosing the kernel configurations to profile: the prior (configurations observed in random samples of our
spaces and timm models, plus perturbations within their ranges), the held-out split and nn-Meter's adaptive
refinement around the configurations with the largest error."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from nni_bigLittle.nn.arch import make_divisible, se_channels
from nni_bigLittle.hw_predictors.kernels import Kernel, detect_kernels
from nni_bigLittle.hw_predictors.builder.config import BuildError
from nni_bigLittle.hw_predictors.builder.kernel_configs import KernelConfig

_EXPANSIONS = (1, 2, 3, 4, 6)


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


def _refinement_configs(errors: Sequence[tuple[float, KernelConfig]], ranges: dict[str, dict[str, list]],
                        rng: random.Random, seen: set[str], top: int, neighbors: int) -> list[KernelConfig]:
    """nn-Meter's adaptive refinement: up to ``neighbors`` new configurations near each of the ``top``
    configurations with the largest relative error (above 3 %), nudged with :func:`perturb` (``small=True``);
    configurations already in ``seen`` are skipped, new ones added to it."""
    worst = [c for e, c in sorted(errors, key=lambda x: -x[0])[:top] if e > 0.03]
    new: list[KernelConfig] = []
    for c in worst:
        made = 0
        for _ in range(neighbors * 4):
            if made >= neighbors:
                break
            cand = perturb(c, rng, ranges.get(c.type, {}), small=True)
            if cand is not None and cand.key() not in seen:
                seen.add(cand.key())
                new.append(cand)
                made += 1
    return new
