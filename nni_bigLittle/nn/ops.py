"""Static building blocks of a frozen big/little model (plain ``torch.nn``, no NNI).

Each block is built from its framework-free record in :mod:`nni_bigLittle.nn.arch`; the elastic
twins in :mod:`nni_bigLittle.nn.elastic` copy their sliced weights into these.
"""
from __future__ import annotations

import torch
from torch import nn

from nni_bigLittle.nn.arch import BlockConfig, ConvConfig, HeadConfig, StageConfig

__all__ = ['make_activation', 'ConvBNAct', 'SqueezeExcite', 'MBConv', 'Stage', 'ClassifierHead']


def make_activation(name: str) -> nn.Module:
    if name == 'relu':
        return nn.ReLU()
    if name == 'hswish':
        return nn.Hardswish()
    if name == 'identity':
        return nn.Identity()
    raise ValueError(f'Unknown activation {name!r}; choose relu, hswish or identity.')


class ConvBNAct(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: str = 'relu'):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(act)

    @classmethod
    def from_config(cls, cfg: ConvConfig) -> 'ConvBNAct':
        return cls(cfg.in_channels, cfg.out_channels, cfg.kernel_size, cfg.stride, act=cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: global pool, 1x1 reduce + ReLU, 1x1 expand + hard sigmoid, rescale."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(scale))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise, optional SE, 1x1 linear projection."""

    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.config = cfg
        self.expand = ConvBNAct(cfg.in_channels, cfg.hidden_channels, 1, act=cfg.act)
        self.depthwise = ConvBNAct(cfg.hidden_channels, cfg.hidden_channels, cfg.kernel_size, cfg.stride,
                                   groups=cfg.hidden_channels, act=cfg.act)
        self.se = SqueezeExcite(cfg.hidden_channels, cfg.se_channels) if cfg.se_channels else nn.Identity()
        self.project = ConvBNAct(cfg.hidden_channels, cfg.out_channels, 1, act='identity')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.config.residual else out


class Stage(nn.Sequential):
    """A stage of MBConv blocks (empty, i.e. identity, for a skipped depth-0 little stage)."""

    def __init__(self, cfg: StageConfig):
        super().__init__(*[MBConv(block) for block in cfg.blocks])
        self.config = cfg


class ClassifierHead(nn.Module):
    """1x1 conv + act, global average pool, dropout, linear. Returns ``(logits, pooled_features)``."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.config = cfg
        self.conv = ConvBNAct(cfg.in_channels, cfg.head_channels, 1, act=cfg.act)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.head_channels, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv(x).mean((2, 3))
        return self.classifier(self.dropout(features)), features
