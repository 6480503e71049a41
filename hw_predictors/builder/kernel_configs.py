"""What a build profiles: the kernel types, :class:`KernelConfig` (a kernel's type and shape) and its standalone
PyTorch module, and the per-kernel quantities the calibration uses (:func:`boundary_elements`, :func:`weight_mb`)."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from nni_bigLittle.nn.arch import BlockConfig
from nni_bigLittle.hw_predictors.kernels import BYTES_PER_ELEMENT, Kernel

PROFILED_TYPES = ('mbconv', 'conv-bn-act', 'dwconv-bn-act', 'se', 'global-pool', 'fc', 'add', 'eltwise')
CONV_LIKE = ('mbconv', 'conv-bn-act', 'dwconv-bn-act')


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
