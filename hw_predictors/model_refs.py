"""Resolve the model references the ``predictor`` commands accept into PyTorch modules or ONNX files.

- ``timm:<name>`` (e.g. ``timm:mobilenetv3_small_100``) and ``torchvision:<name>`` — untrained
  architectures (latency depends on shapes, not weights);
- ``biglittle:<preset>[:seed=<n>]`` — a random valid sample of the space, frozen;
- a ``.json`` file with a sample (``{"sample": {...}}`` as ``nni-biglittle space sample`` prints, or the
  bare label dict), with ``--preset`` deciding the space;
- a ``.onnx`` file.

A big/little reference resolves to its parts: the little path (input -> little logits), the big
tail (fork features -> big logits) and the static big network.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nni_bigLittle.hw_predictors.kernels import KernelDetectionError, parse_input_shape

__all__ = ['ModelRef', 'resolve_model']


@dataclass
class ModelRef:
    """A resolved reference: ``parts`` maps a part name to ``(torch module or None, onnx or None, input shape)``."""

    name: str
    parts: dict[str, tuple[Any, Any, tuple[int, ...]]]
    arch: Any = None  # ArchConfig for big/little models


def resolve_model(text: str, input_shape: str | None = None, preset: str = 'cifar',
                  num_classes: int | None = None) -> ModelRef:
    if text.startswith('timm:'):
        import timm
        name = text[5:]
        try:
            model = timm.create_model(name, pretrained=False)
        except Exception as exc:  # noqa: BLE001 - timm raises RuntimeError/KeyError for unknown names
            raise KernelDetectionError(f'timm has no model {name!r} ({exc}); list them with timm.list_models().') \
                from exc
        shape = parse_input_shape(input_shape or '1x3x224x224')
        return ModelRef(text, {'model': (model.eval(), None, shape)})
    if text.startswith('torchvision:'):
        import torchvision
        name = text[len('torchvision:'):]
        try:
            model = torchvision.models.get_model(name, weights=None)
        except Exception as exc:  # noqa: BLE001
            raise KernelDetectionError(f'torchvision has no model {name!r} ({exc}).') from exc
        shape = parse_input_shape(input_shape or '1x3x224x224')
        return ModelRef(text, {'model': (model.eval(), None, shape)})
    if text.startswith('biglittle:'):
        fields = text.split(':')[1:]
        preset_name = fields[0] if fields and fields[0] else preset
        seed = 0
        for field in fields[1:]:
            key, _, value = field.partition('=')
            if key != 'seed' or not value.isdigit():
                raise KernelDetectionError(f'Cannot read {field!r} in {text!r}; use biglittle:<preset>:seed=<n>.')
            seed = int(value)
        from nni_bigLittle.search_spaces.presets import get_preset
        spec = get_preset(preset_name, num_classes=num_classes)
        return _biglittle(text, spec, spec.random_sample(random.Random(seed)), input_shape)
    path = Path(text)
    if path.suffix == '.onnx':
        if not path.exists():
            raise KernelDetectionError(f'No ONNX file at {path}.')
        shape = parse_input_shape(input_shape) if input_shape else None
        return ModelRef(path.name, {'model': (None, str(path), shape)})
    if path.suffix == '.json':
        if not path.exists():
            raise KernelDetectionError(f'No sample file at {path}.')
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise KernelDetectionError(f'{path} is not valid JSON: {exc}') from exc
        sample = record.get('sample', record) if isinstance(record, dict) else None
        if not isinstance(sample, dict):
            raise KernelDetectionError(f'{path} must hold a sample dict (or {{"sample": {{...}}}}).')
        from nni_bigLittle.search_spaces.presets import get_preset
        spec = get_preset(preset, num_classes=num_classes)
        return _biglittle(path.name, spec, sample, input_shape)
    raise KernelDetectionError(f'Unknown model reference {text!r}: use timm:<name>, torchvision:<name>, '
                               'biglittle:<preset>[:seed=<n>], a sample .json or an .onnx file.')


def _biglittle(name: str, spec, sample: dict, input_shape: str | None) -> ModelRef:
    import torch

    from nni_bigLittle.nn.model import BigLittleModel
    arch = spec.decode(sample)
    shape = parse_input_shape(input_shape or f'1x3x{spec.resolution}x{spec.resolution}')
    if shape[1:] != (3, spec.resolution, spec.resolution):
        raise KernelDetectionError(f'The {spec.name} space takes 3x{spec.resolution}x{spec.resolution} inputs, '
                                   f'not {"x".join(map(str, shape[1:]))}.')
    model = BigLittleModel(arch).eval()
    with torch.no_grad():
        fork = tuple(model.fork_features(torch.zeros(*shape)).shape)
    return ModelRef(name, {'little': (model.little_path(), None, shape),
                           'big_tail': (model.big_tail_module(), None, fork),
                           'big': (model.big_path(), None, shape)}, arch)
