"""Kernels built from layer shapes (conv, fc, add, global pool, MBConv block) with the features kernels.py
computes, for the networks described in the measurement tables."""
from __future__ import annotations

from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.nn.costs import conv_macs, conv_output_size, conv_params, linear_macs, linear_params

# ============================================================================================ kernels


def _conv(name: str, hw: int, cin: int, cout: int, k: int, *, out_hw: int | None = None, stride: int = 1,
          groups: int = 1, act: str = 'relu', bias: bool = False) -> Kernel:
    """A conv(+bn)(+act) kernel with the features kernels.py computes (MACs, params, bytes at fp32)."""
    if out_hw is None:
        out_hw = conv_output_size(hw, k, stride)
    flops = conv_macs(out_hw, out_hw, cin, cout, k, groups)
    params = conv_params(cin, cout, k, groups, bias=bias)
    depthwise = groups > 1 and groups == cin and cout % cin == 0
    return Kernel('dwconv-bn-act' if depthwise else 'conv-bn-act', name, hw=int(hw), cin=int(cin), cout=int(cout),
                  kernel=int(k), stride=int(stride), groups=int(groups), act=act, out_hw=int(out_hw),
                  flops=float(flops), params=float(params), bytes_in=float(hw * hw * cin * 4),
                  bytes_out=float(out_hw * out_hw * cout * 4))


def _fc(name: str, cin: int, cout: int, bias: bool = True) -> Kernel:
    return Kernel('fc', name, hw=1, cin=int(cin), cout=int(cout), out_hw=1, flops=float(linear_macs(cin, cout)),
                  params=float(linear_params(cin, cout, bias)), bytes_in=float(cin * 4), bytes_out=float(cout * 4))


def _add(name: str, hw: int, channels: int) -> Kernel:
    n = hw * hw * channels
    return Kernel('add', name, hw=hw, cin=channels, cout=channels, out_hw=hw, flops=float(n),
                  bytes_in=float(2 * n * 4), bytes_out=float(n * 4))


def _global_pool(name: str, hw: int, channels: int) -> Kernel:
    return Kernel('global-pool', name, hw=hw, cin=channels, cout=channels, out_hw=1, flops=float(hw * hw * channels),
                  bytes_in=float(hw * hw * channels * 4), bytes_out=float(channels * 4))


def _mbconv(name: str, hw: int, cin: int, cout: int, k: int, expansion: int, stride: int, groups: int = 1
            ) -> Kernel:
    """HW-NAS-Bench FBNet block: 1x1 (groups) + BN + ReLU [+ shuffle] -> dw kxk (stride) + BN + ReLU
    -> 1x1 (groups) + BN [+ residual add when Cin == Cout and stride 1]; convs without bias."""
    mid = cin * expansion
    expand = _conv(f'{name}.expand', hw, cin, mid, 1, groups=groups)
    dw = _conv(f'{name}.dw', hw, mid, mid, k, stride=stride, groups=mid)
    project = _conv(f'{name}.project', dw.out_hw, mid, cout, 1, groups=groups, act='none')
    parts = [expand, dw, project]
    residual = cin == cout and stride == 1
    if residual:
        parts.append(_add(f'{name}.add', dw.out_hw, cout))
    return Kernel('mbconv', name, hw=hw, cin=cin, cout=cout, kernel=k, stride=stride, groups=groups,
                  expansion=float(expansion), act='relu', residual=residual, out_hw=dw.out_hw,
                  flops=sum(p.flops for p in parts), params=sum(p.params for p in parts), bytes_in=expand.bytes_in,
                  bytes_out=parts[-1].bytes_out, parts=tuple(parts))
