"""Named ``SpaceSpec`` presets. Channel counts are the full-width (multiplier 1.0) values.

- ``cifar``: 32x32 inputs, a stride-2 stem. Sized for CPU work: the largest big network (every
  choice at its maximum, 11.1 MMACs) trains a 45k-image CIFAR-10 epoch in about 2.2 minutes on
  2 cores in channels-last format (``benchmarks/train_step.py``).
- ``imagenet``: 224x224 inputs, a MobileNetV3-Large-like trunk (stage channels 24-40-80-112-160,
  SE and h-swish where MobileNetV3-Large has them; Howard et al., 2019, Table 1).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from nni_bigLittle.search_spaces.spec import SpaceSpec, StageSpec

__all__ = ['PRESETS', 'get_preset', 'RESOLUTIONS']

RESOLUTIONS = (32, 64, 128, 224)

PRESETS: dict[str, SpaceSpec] = {
    'cifar': SpaceSpec(
        name='cifar', resolution=32, num_classes=10,
        stem_channels=16, stem_stride=2,  # 16x16 after the stem keeps the largest big net near 11 MMACs
        trunk=(
            StageSpec(24, 2, 'relu', se=False),
            StageSpec(40, 2, 'hswish', se=True),
            StageSpec(80, 2, 'hswish', se=True),
            StageSpec(112, 1, 'hswish', se=True),
        ),
        little_stages=2, little_width_ratio=0.5,
        little_head_channels=128, big_head_channels=256, dropout=0.1,
    ),
    'imagenet': SpaceSpec(
        name='imagenet', resolution=224, num_classes=1000,
        stem_channels=16, stem_stride=2,
        trunk=(
            StageSpec(24, 2, 'relu', se=False),
            StageSpec(40, 2, 'relu', se=True),
            StageSpec(80, 2, 'hswish', se=False),
            StageSpec(112, 1, 'hswish', se=True),
            StageSpec(160, 2, 'hswish', se=True),
        ),
        little_stages=2, little_width_ratio=0.5,
        little_head_channels=576, big_head_channels=960, dropout=0.2,
    ),
}


def get_preset(preset: str | SpaceSpec, **overrides: Any) -> SpaceSpec:
    """A preset by name (or a given spec), with fields replaced by ``overrides`` (e.g. ``num_classes``)."""
    if isinstance(preset, SpaceSpec):
        spec = preset
    elif preset in PRESETS:
        spec = PRESETS[preset]
    else:
        raise ValueError(f'Unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a SpaceSpec.')
    overrides = {key: value for key, value in overrides.items() if value is not None}
    fields = {f.name for f in dataclasses.fields(SpaceSpec)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f'Unknown space option(s) {unknown}; valid options: {sorted(fields)}.')
    if 'resolution' in overrides and overrides['resolution'] not in RESOLUTIONS:
        raise ValueError(f'resolution must be one of {RESOLUTIONS}, got {overrides["resolution"]}.')
    if 'trunk' in overrides:
        overrides['trunk'] = tuple(s if isinstance(s, StageSpec) else StageSpec(**s) for s in overrides['trunk'])
    for key in ('width_choices', 'depth_choices', 'little_depth_choices', 'kernel_choices', 'expand_choices',
                'policy_choices', 'threshold_choices'):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return dataclasses.replace(spec, **overrides)
