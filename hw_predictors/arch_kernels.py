"""Kernels of a big/little pair computed from its :class:`~nni_bigLittle.nn.arch.ArchConfig` (torch-free).

The same kernel records :func:`~.kernels.detect_kernels` finds by tracing the frozen model (a test
checks they are equal), but in microseconds instead of a trace, which is what a search that
prices thousands of samples needs.
"""
from __future__ import annotations

from dataclasses import dataclass

from nni_bigLittle.nn.arch import ArchConfig, BlockConfig, ConvConfig, HeadConfig, RouterConfig, StageConfig
from nni_bigLittle.nn.costs import conv_macs, conv_output_size, conv_params, linear_macs, linear_params
from nni_bigLittle.hw_predictors.kernels import BYTES_PER_ELEMENT as _B, Kernel

__all__ = ['ArchKernels', 'arch_kernels', 'block_kernel', 'stage_kernels', 'head_kernels', 'router_kernels',
           'stem_kernel']


def _conv(name: str, hw: int, cin: int, cout: int, k: int, stride: int, act: str, groups: int = 1,
          bias: bool = True, batch: int = 1) -> Kernel:
    # every conv here has a bias or a batch norm, which folds into a bias at deployment
    out = conv_output_size(hw, k, stride)
    depthwise = groups > 1 and groups == cin and cout % cin == 0
    return Kernel('dwconv-bn-act' if depthwise else 'conv-bn-act', name, hw=hw, cin=cin, cout=cout, kernel=k,
                  stride=stride, groups=groups, act=act, out_hw=out,
                  flops=float(conv_macs(out, out, cin, cout, k, groups, batch)),
                  params=float(conv_params(cin, cout, k, groups, bias=bias)),
                  bytes_in=float(batch * cin * hw * hw * _B), bytes_out=float(batch * cout * out * out * _B),
                  batch=batch)


def _act_name(act: str) -> str:
    return 'none' if act == 'identity' else act


def stem_kernel(stem: ConvConfig, resolution: int, batch: int = 1) -> Kernel:
    return _conv('stem', resolution, stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride,
                 _act_name(stem.act), batch=batch)


def _se(name: str, hw: int, channels: int, squeeze: int, batch: int) -> Kernel:
    elems = batch * channels * hw * hw
    pool = Kernel('global-pool', f'{name}.pool', hw=hw, cin=channels, cout=channels, out_hw=1, flops=float(elems),
                  bytes_in=float(elems * _B), bytes_out=float(batch * channels * _B), batch=batch)
    reduce = _conv(f'{name}.reduce', 1, channels, squeeze, 1, 1, 'relu', bias=True, batch=batch)
    expand = _conv(f'{name}.expand', 1, squeeze, channels, 1, 1, 'hsigmoid', bias=True, batch=batch)
    scale = Kernel('eltwise', f'{name}.scale', hw=hw, cin=channels, cout=channels, out_hw=hw, flops=float(elems),
                   bytes_in=float(2 * elems * _B), bytes_out=float(elems * _B), batch=batch)
    parts = (pool, reduce, expand, scale)
    return Kernel('se', name, hw=hw, cin=channels, cout=channels, expansion=squeeze / channels, act='relu',
                  out_hw=hw, flops=sum(p.flops for p in parts), params=sum(p.params for p in parts),
                  bytes_in=pool.bytes_in, bytes_out=scale.bytes_out, batch=batch, parts=parts)


def block_kernel(block: BlockConfig, hw: int, name: str = 'block', batch: int = 1) -> tuple[Kernel, int]:
    """The ``mbconv`` kernel of one inverted-residual block (with its parts) and the output size."""
    act = _act_name(block.act)
    expand = _conv(f'{name}.expand', hw, block.in_channels, block.hidden_channels, 1, 1, act, batch=batch)
    dw = _conv(f'{name}.depthwise', hw, block.hidden_channels, block.hidden_channels, block.kernel_size,
               block.stride, act, groups=block.hidden_channels, batch=batch)
    out = dw.out_hw
    parts = [expand, dw]
    if block.se_channels:
        parts.append(_se(f'{name}.se', out, block.hidden_channels, block.se_channels, batch))
    project = _conv(f'{name}.project', out, block.hidden_channels, block.out_channels, 1, 1, 'none', batch=batch)
    parts.append(project)
    if block.residual:
        elems = batch * block.out_channels * out * out
        parts.append(Kernel('add', f'{name}.add', hw=out, cin=block.out_channels, cout=block.out_channels, out_hw=out,
                            flops=float(elems), bytes_in=float(2 * elems * _B), bytes_out=float(elems * _B),
                            batch=batch))
    kernel = Kernel('mbconv', name, hw=hw, cin=block.in_channels, cout=block.out_channels, kernel=block.kernel_size,
                    stride=block.stride, groups=1, expansion=block.hidden_channels / block.in_channels, act=act,
                    se=bool(block.se_channels), residual=block.residual, out_hw=out,
                    flops=sum(p.flops for p in parts), params=sum(p.params for p in parts),
                    bytes_in=expand.bytes_in, bytes_out=parts[-1].bytes_out, batch=batch, parts=tuple(parts))
    return kernel, out


def stage_kernels(stage: StageConfig, hw: int, name: str = 'stage', batch: int = 1) -> tuple[list[Kernel], int]:
    kernels = []
    for j, block in enumerate(stage.blocks):
        kernel, hw = block_kernel(block, hw, f'{name}.b{j}', batch)
        kernels.append(kernel)
    return kernels, hw


def head_kernels(head: HeadConfig, hw: int, name: str = 'head', batch: int = 1) -> list[Kernel]:
    conv = _conv(f'{name}.conv', hw, head.in_channels, head.head_channels, 1, 1, _act_name(head.act), batch=batch)
    elems = batch * head.head_channels * hw * hw
    pool = Kernel('global-pool', f'{name}.pool', hw=hw, cin=head.head_channels, cout=head.head_channels, out_hw=1,
                  flops=float(elems), bytes_in=float(elems * _B), bytes_out=float(batch * head.head_channels * _B),
                  batch=batch)
    fc = Kernel('fc', f'{name}.classifier', hw=1, cin=head.head_channels, cout=head.num_classes, out_hw=1,
                flops=float(linear_macs(head.head_channels, head.num_classes, batch)),
                params=float(linear_params(head.head_channels, head.num_classes)),
                bytes_in=float(batch * head.head_channels * _B), bytes_out=float(batch * head.num_classes * _B),
                batch=batch)
    return [conv, pool, fc]


def router_kernels(router: RouterConfig, num_classes: int, batch: int = 1) -> list[Kernel]:
    """Softmax-based confidence (an elementwise kernel over the logits), plus the MLP when learned."""
    softmax = Kernel('eltwise', 'router.softmax', hw=1, cin=num_classes, cout=num_classes, out_hw=1,
                     flops=float(batch * num_classes), bytes_in=float(batch * num_classes * _B),
                     bytes_out=float(batch * num_classes * _B), batch=batch)
    if router.policy != 'learned':
        return [softmax]
    hidden = Kernel('fc', 'router.fc1', hw=1, cin=router.in_features, cout=router.hidden, act='relu', out_hw=1,
                    flops=float(linear_macs(router.in_features, router.hidden, batch)),
                    params=float(linear_params(router.in_features, router.hidden)),
                    bytes_in=float(batch * router.in_features * _B), bytes_out=float(batch * router.hidden * _B),
                    batch=batch)
    out = Kernel('fc', 'router.fc2', hw=1, cin=router.hidden, cout=1, out_hw=1,
                 flops=float(linear_macs(router.hidden, 1, batch)), params=float(linear_params(router.hidden, 1)), bytes_in=float(batch * router.hidden * _B),
                 bytes_out=float(batch * _B), batch=batch)
    return [softmax, hidden, out]


@dataclass(frozen=True)
class ArchKernels:
    """Kernels of each part of a pair: what the little path, the big tail and the router run."""

    stem: Kernel
    trunk: tuple[tuple[Kernel, ...], ...]
    fork: int
    little_stages: tuple[Kernel, ...]
    little_head: tuple[Kernel, ...]
    big_head: tuple[Kernel, ...]
    router: tuple[Kernel, ...]

    @property
    def shared(self) -> list[Kernel]:
        return [self.stem] + [k for stage in self.trunk[:self.fork] for k in stage]

    @property
    def little_path(self) -> list[Kernel]:
        """Input -> little logits: stem, shared trunk, little branch, little head."""
        return self.shared + list(self.little_stages) + list(self.little_head)

    @property
    def big_tail(self) -> list[Kernel]:
        """Fork features -> big logits: the rest of the trunk and the big head."""
        return [k for stage in self.trunk[self.fork:] for k in stage] + list(self.big_head)

    @property
    def big(self) -> list[Kernel]:
        """The static big network: stem, whole trunk, big head."""
        return self.shared + self.big_tail


def arch_kernels(arch: ArchConfig, batch: int = 1) -> ArchKernels:
    hw = arch.resolution
    stem = stem_kernel(arch.stem, hw, batch)
    hw = stem.out_hw
    sizes = [hw]  # sizes[f] = spatial size at fork f
    trunk = []
    for i, stage in enumerate(arch.trunk):
        kernels, hw = stage_kernels(stage, hw, f'trunk.s{i}', batch)
        trunk.append(tuple(kernels))
        sizes.append(hw)
    big_head = head_kernels(arch.big_head, hw, 'big_head', batch)
    hw = sizes[arch.fork]
    little = []
    for i, stage in enumerate(arch.little):
        kernels, hw = stage_kernels(stage, hw, f'little.s{i}', batch)
        little.extend(kernels)
    little_head = head_kernels(arch.little_head, hw, 'little_head', batch)
    return ArchKernels(stem, tuple(trunk), arch.fork, tuple(little), tuple(little_head), tuple(big_head),
                       tuple(router_kernels(arch.router, arch.num_classes, batch)))
