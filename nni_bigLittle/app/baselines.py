"""The baselines the research question is asked against, trained like our models.

- **Static** timm networks: MobileNetV3-Small, MobileNetV3-Large and EfficientNet-B0 (``pretrained=False``),
  their stem adapted to 32x32 input: stride 1 instead of 2, as CIFAR ResNets do, so that a 32x32 image is
  not down to 1x1 before the last stage.
- **Cascade** MobileNetV3-Small -> MobileNetV3-Large: the two static networks above, trained independently;
  an input goes to the large one when the small one's max-softmax is below a threshold (swept at
  report time).
- **BranchyNet** (Teerapittayanon et al., ICPR 2016) on MobileNetV3-Large: exit heads after chosen stages,
  trained jointly (a weighted sum of every exit's cross-entropy, the BranchyNet loss); an input leaves at
  the first exit whose softmax entropy is below the threshold (swept at report time).
- **Static subnets of our supernet** (Once-for-All style) come from the co-training run itself.

A baseline config names the co-training config whose data, split, augmentation, epochs, batch size and
optimizer the baselines reuse (``recipe:``), so the comparison is at the same budget by construction::

    recipe: cifar10_sandwich.yaml      # relative to this file
    models: [mobilenetv3_small, mobilenetv3_large, efficientnet_b0, branchynet_mobilenetv3_large]
    exit_stages: [2, 4]                # BranchyNet exits after these stages of MobileNetV3-Large's blocks
    exit_weights: [1.0, 1.0, 1.0]      # loss weight per exit, the final classifier last

``nni-biglittle baselines train CONFIG --run-dir DIR [--model NAME]`` trains (and resumes) each model in
``DIR/baselines/<name>/`` and stores its validation and test logits, per exit, in ``outputs.npz``.
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from nni_bigLittle.app.config import ConfigError, TrainConfig, load_config, resolve_train_config
from nni_bigLittle.app.stages.inputs import load_training_data
from nni_bigLittle.app.runs import RunFolder, environment
from nni_bigLittle.errors import UnknownNameError
from nni_bigLittle.registry import Registry

__all__ = ['BASELINES', 'create_baseline', 'EarlyExitNetwork', 'resolve_baseline_config', 'train_baselines']

TIMM_NAMES = {'mobilenetv3_small': 'mobilenetv3_small_100', 'mobilenetv3_large': 'mobilenetv3_large_100',
              'efficientnet_b0': 'efficientnet_b0'}
# name -> builder(num_classes, resolution, exit_stages) of a baseline network trained from scratch
BASELINES: Registry[Callable[..., nn.Module]] = Registry('baseline')
BASELINE_KEYS = ('recipe', 'models', 'exit_stages', 'exit_weights')
# what the baselines take from the co-training recipe (the rest, e.g. the space and the strategy, is ours only)
RECIPE_KEYS = ('dataset', 'data_root', 'val_size', 'train_subset', 'augment', 'epochs', 'batch_size', 'optimizer',
               'seed', 'threads')


def create_static(name: str, num_classes: int, resolution: int = 32) -> nn.Module:
    """A timm network from scratch; for inputs of 64 pixels or less its stem keeps the resolution (stride 1)."""
    import timm
    if name not in TIMM_NAMES:
        raise UnknownNameError(f'Unknown static baseline {name!r}; choose one of {sorted(TIMM_NAMES)}.')
    model = timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=num_classes)
    if resolution <= 64:
        model.conv_stem.stride = (1, 1)
    return model


class EarlyExitNetwork(nn.Module):
    """BranchyNet exits on a timm MobileNetV3 / EfficientNet: ``forward`` returns the logits of every exit,
    the backbone's own classifier last. Each exit head is a 1x1 conv to 128 channels, batch norm,
    hard-swish, global pooling and a linear classifier (small next to the stage it follows)."""

    def __init__(self, backbone: nn.Module, exit_stages: Sequence[int], num_classes: int, resolution: int = 32):
        super().__init__()
        stages = len(backbone.blocks)
        if not exit_stages or sorted(set(exit_stages)) != list(exit_stages) or exit_stages[0] < 0 \
                or exit_stages[-1] >= stages - 1:
            raise ValueError(f'exit_stages must be increasing stage indices below the last stage ({stages - 1}); '
                             f'got {list(exit_stages)}.')
        self.backbone = backbone
        self.exit_stages = tuple(int(s) for s in exit_stages)
        with torch.no_grad():
            channels = [f.shape[1] for f in self._stage_features(torch.zeros(1, 3, resolution, resolution))]
        self.exits = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[s], 128, 1, bias=False), nn.BatchNorm2d(128), nn.Hardswish(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))
            for s in self.exit_stages)

    def _stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = self.backbone
        x = b.bn1(b.conv_stem(x))
        out = []
        for stage in b.blocks:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = self.backbone
        x = b.bn1(b.conv_stem(x))
        logits = []
        for index, stage in enumerate(b.blocks):
            x = stage(x)
            if index in self.exit_stages:
                logits.append(self.exits[self.exit_stages.index(index)](x))
        logits.append(b.forward_head(x))
        return logits

    def segments(self) -> list[nn.Module]:
        """The parts an input pays for in turn: up to exit 1 (with its head), from there to exit 2, ..., to the
        final classifier; for costing the expected latency at given exit rates."""
        b = self.backbone
        parts, start = [], 0
        for k, stage in enumerate(self.exit_stages):
            body = nn.Sequential(*([b.conv_stem, b.bn1] if start == 0 else []), *b.blocks[start:stage + 1])
            parts.append(_Segment(body, self.exits[k]))
            start = stage + 1
        parts.append(_Segment(nn.Sequential(*b.blocks[start:]), _Head(b)))
        return parts


class _Segment(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor):
        x = self.body(x)
        return self.head(x), x


class _Head(nn.Module):
    """The backbone's own head (``forward_head``), holding only the head's modules, so that costing this part
    counts the head's parameters and not the whole backbone's."""
    NAMES = ('global_pool', 'conv_head', 'norm_head', 'bn2', 'act2', 'flatten', 'classifier')

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.head = nn.ModuleDict({n: getattr(backbone, n) for n in self.NAMES
                                   if isinstance(getattr(backbone, n, None), nn.Module)})
        self._forward_head = backbone.forward_head  # a bound method: the backbone itself is not registered

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_head(x)


for _name in TIMM_NAMES:
    BASELINES.register(_name, lambda num_classes, resolution, exit_stages, _name=_name:
                       create_static(_name, num_classes, resolution))


@BASELINES.register('branchynet_mobilenetv3_large')
def _branchynet_mobilenetv3_large(num_classes: int, resolution: int, exit_stages: Sequence[int]) -> nn.Module:
    return EarlyExitNetwork(create_static('mobilenetv3_large', num_classes, resolution), exit_stages, num_classes,
                            resolution)


def create_baseline(name: str, num_classes: int, resolution: int = 32,
                    exit_stages: Sequence[int] = (2, 4)) -> nn.Module:
    """The baseline network ``name`` (one of :data:`BASELINES`), freshly initialised."""
    return BASELINES.get(name)(num_classes, resolution, exit_stages)


# ---------------------------------------------------------------------------------------------------------
# config and training
# ---------------------------------------------------------------------------------------------------------
def resolve_baseline_config(config: Mapping[str, Any], base: str | os.PathLike = '.') -> dict[str, Any]:
    """Check a baseline config and resolve its recipe (a co-training config file, relative to ``base``)."""
    unknown = sorted(set(config) - set(BASELINE_KEYS))
    if unknown:
        raise ConfigError(f'Unknown baseline config key(s) {unknown}; valid keys: {list(BASELINE_KEYS)}.')
    if not config.get('recipe'):
        raise ConfigError('A baseline config needs recipe: the co-training config whose data and budget it reuses, '
                          'e.g. recipe: cifar10_sandwich.yaml.')
    recipe_path = Path(base) / config['recipe']
    train = resolve_train_config(load_config(recipe_path))
    recipe = {k: copy.deepcopy(train[k]) for k in RECIPE_KEYS}  # data_root stays relative to the working folder
    models = list(config.get('models') or BASELINES.names())
    bad = [m for m in models if m not in BASELINES]
    if bad:
        raise ConfigError(f'Unknown baseline model(s) {bad}; choose from {BASELINES.names()}.')
    exit_stages = list(config.get('exit_stages') or [2, 4])
    if any(not isinstance(s, int) for s in exit_stages) or sorted(set(exit_stages)) != exit_stages:
        raise ConfigError(f'exit_stages must be increasing ints, got {exit_stages!r}.')
    weights = list(config.get('exit_weights') or [1.0] * (len(exit_stages) + 1))
    if len(weights) != len(exit_stages) + 1 or any(not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise ConfigError(f'exit_weights needs {len(exit_stages) + 1} non-negative numbers (one per exit, the final '
                          f'classifier last), got {weights!r}.')
    return {'recipe': recipe, 'recipe_file': Path(config['recipe']).name, 'models': models,
            'exit_stages': exit_stages, 'exit_weights': [float(w) for w in weights]}


def _branchynet_loss(weights: Sequence[float]):
    """BranchyNet's joint loss: the weighted sum of every exit's cross-entropy."""
    def loss(module, x, y):
        return sum(w * nn.functional.cross_entropy(logits, y) for w, logits in zip(weights, module(x)))
    return loss


def _collect_logits(model: nn.Module, loader) -> tuple[list[torch.Tensor], torch.Tensor]:
    model.eval()
    heads, labels = None, []
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            out = out if isinstance(out, list) else [out]
            heads = [[] for _ in out] if heads is None else heads
            for store, logits in zip(heads, out):
                store.append(logits)
            labels.append(y)
    return [torch.cat(h) for h in heads], torch.cat(labels)


def train_baselines(config: Mapping[str, Any], run_dir: str | os.PathLike, models: Sequence[str] | None = None,
                    progress: bool = True, base: str | os.PathLike = '.') -> dict[str, Any]:
    """Train (or resume) the baselines of ``config`` in ``run_dir``; ``models`` limits this invocation to some
    of them (e.g. one per process, one process per core). Per model: ``baselines/<name>/train/``
    (``last.ckpt`` per epoch, ``metrics.csv`` of per-epoch training loss and validation accuracy), ``outputs.npz`` (validation and test logits of every exit and the labels) and
    ``status.json`` (epochs, wall time, parameters, environment)."""
    import numpy as np
    from torch.utils.data import DataLoader
    from nni_bigLittle.strategies.cotraining import ResumableLoader
    from nni_bigLittle.training import fit
    cfg = resolve_baseline_config(config, base)
    chosen = list(models or cfg['models'])
    bad = [m for m in chosen if m not in cfg['models']]
    if bad:
        raise ConfigError(f'--model {bad} is not in this config\'s models {cfg["models"]}.')
    run = RunFolder(run_dir)
    run.open(cfg, ignore=('threads',))
    train = TrainConfig.from_mapping(cfg['recipe'])  # the co-training config's recipe keys, the rest default
    if train.threads:
        torch.set_num_threads(train.threads)
    splits = load_training_data(train)
    plain = load_training_data(train, augment='none')
    val_loader, test_loader = DataLoader(plain.val, batch_size=500), DataLoader(plain.test, batch_size=500)
    done = {}
    for name in chosen:
        folder = run.path / 'baselines' / name
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / 'outputs.npz').is_file():
            done[name] = json.loads((folder / 'status.json').read_text())
            continue
        torch.manual_seed(train.seed)
        model = create_baseline(name, splits.num_classes, splits.resolution, cfg['exit_stages'])
        loss_fn = _branchynet_loss(cfg['exit_weights']) if isinstance(model, EarlyExitNetwork) else None
        loader = ResumableLoader(splits.train, train.batch_size, seed=train.seed)
        began = time.time()
        print(f'[baselines] training {name}', flush=True)
        wall = fit(model, loader, epochs=train.epochs, recipe=train.recipe,
                   folder=folder / 'train', val_loader=val_loader, loss_fn=loss_fn, progress=progress).wall_s
        arrays = {}
        for split, loader_ in (('val', val_loader), ('test', test_loader)):
            heads, labels = _collect_logits(model, loader_)
            arrays.update({f'{split}_logits_{k}': h.numpy() for k, h in enumerate(heads)})
            arrays[f'{split}_labels'] = labels.numpy()
        np.savez_compressed(folder / 'outputs.npz', **arrays)
        status = {'model': name, 'epochs': train.epochs, 'train_wall_s': round(wall, 1),
                  'params': int(sum(p.numel() for p in model.parameters())),
                  'heads': len([k for k in arrays if k.startswith('test_logits_')]),
                  'test_top1_final': float((arrays[f'test_logits_{len(heads) - 1}'].argmax(1)
                                            == arrays['test_labels']).mean()),
                  'this_invocation_s': round(time.time() - began, 1), 'environment': environment()}
        (folder / 'status.json').write_text(json.dumps(status, indent=1) + '\n')
        torch.save(model.state_dict(), folder / 'model.pt')
        done[name] = status
        print(f'[baselines] {name}: test top-1 {status["test_top1_final"]:.4f} after {train.epochs} epochs '
              f'({status["train_wall_s"]:.0f} s of training)', flush=True)
    return done
