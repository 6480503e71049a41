"""MACs and parameter counts of a frozen big/little pair, computed from its :class:`ArchConfig`.

Torch-free. Counted: multiply-accumulates of every convolution and linear layer (the usual
"FLOPs" of MobileNet papers, which are MACs); parameters of every conv / BN / linear layer.
Elementwise work (activations, SE scaling, residual adds, pooling, softmax) is not counted.
A test checks both figures against forward hooks on the real frozen model.
"""
from __future__ import annotations

from dataclasses import dataclass

from nni_bigLittle.nn.arch import ArchConfig, BlockConfig, ConvConfig, HeadConfig, RouterConfig, StageConfig

__all__ = ['Cost', 'ArchCosts', 'arch_costs', 'conv_output_size', 'conv_macs', 'conv_params', 'linear_macs',
           'linear_params']


@dataclass(frozen=True)
class Cost:
    macs: int = 0
    params: int = 0

    def __add__(self, other: 'Cost') -> 'Cost':
        return Cost(self.macs + other.macs, self.params + other.params)


@dataclass(frozen=True)
class ArchCosts:
    """Costs of the parts of a big/little pair.

    ``little`` is the whole little path (stem + shared trunk + little branch + head),
    ``big_tail`` what an escalated input adds (trunk after the fork + big head),
    ``big`` the whole big network (stem + trunk + big head), ``router`` the learned router's MLP
    (zero for the heuristic policies).
    """
    shared: Cost
    little: Cost
    big_tail: Cost
    big: Cost
    router: Cost

    @property
    def little_macs(self) -> int:
        return self.little.macs

    @property
    def big_macs(self) -> int:
        return self.big.macs

    def expected_macs(self, escalation_rate: float) -> float:
        """``E[MACs] = little + router + p_escalate * big_tail`` (the big tail reuses the fork features)."""
        if not 0.0 <= escalation_rate <= 1.0:
            raise ValueError(f'escalation_rate must be in [0, 1], got {escalation_rate}.')
        return self.little.macs + self.router.macs + escalation_rate * self.big_tail.macs

    @property
    def dynamic_params(self) -> int:
        """Parameters the deployed dynamic model stores (little + big tail + router, shared once)."""
        return self.little.params + self.big_tail.params + self.router.params


def conv_output_size(size: int, kernel_size: int, stride: int) -> int:
    padding = kernel_size // 2
    return (size + 2 * padding - kernel_size) // stride + 1


# THE MAC and parameter formulas of a conv and a linear layer; the predictors' kernel features use them too.
def conv_macs(out_h: int, out_w: int, cin: int, cout: int, kernel: int, groups: int = 1, batch: int = 1) -> int:
    """Multiply-accumulates of a (grouped) ``kernel x kernel`` convolution producing ``out_h x out_w`` maps."""
    return batch * out_h * out_w * cout * (cin // groups) * kernel * kernel


def conv_params(cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = False, bn: bool = False) -> int:
    """Weights, plus a bias and a batch norm's scale and shift when asked (a BN folded for deployment is a bias)."""
    return cout * (cin // groups) * kernel * kernel + (cout if bias else 0) + (2 * cout if bn else 0)


def linear_macs(cin: int, cout: int, batch: int = 1) -> int:
    return batch * cin * cout


def linear_params(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


def _conv(size: int, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False,
          bn: bool = True) -> tuple[Cost, int]:
    out = conv_output_size(size, k, stride)
    return Cost(conv_macs(out, out, cin, cout, k, groups), conv_params(cin, cout, k, groups, bias, bn)), out


def stem_cost(stem: ConvConfig, size: int) -> tuple[Cost, int]:
    return _conv(size, stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride)


def block_cost(block: BlockConfig, size: int) -> tuple[Cost, int]:
    total, _ = _conv(size, block.in_channels, block.hidden_channels, 1)
    dw, size = _conv(size, block.hidden_channels, block.hidden_channels, block.kernel_size, block.stride,
                     groups=block.hidden_channels)
    total += dw
    if block.se_channels:
        hidden, se = block.hidden_channels, block.se_channels
        total += Cost(linear_macs(hidden, se) + linear_macs(se, hidden), linear_params(hidden, se) + linear_params(se, hidden))
    project, _ = _conv(size, block.hidden_channels, block.out_channels, 1)
    return total + project, size


def stage_cost(stage: StageConfig, size: int) -> tuple[Cost, int]:
    total = Cost()
    for block in stage.blocks:
        cost, size = block_cost(block, size)
        total += cost
    return total, size


def head_cost(head: HeadConfig, size: int) -> Cost:
    conv, _ = _conv(size, head.in_channels, head.head_channels, 1)
    fc = Cost(linear_macs(head.head_channels, head.num_classes), linear_params(head.head_channels, head.num_classes))
    return conv + fc


def router_cost(router: RouterConfig) -> Cost:
    if router.policy != 'learned':
        return Cost()
    macs = linear_macs(router.in_features, router.hidden) + linear_macs(router.hidden, 1)
    params = linear_params(router.in_features, router.hidden) + linear_params(router.hidden, 1)
    return Cost(macs, params)


def arch_costs(arch: ArchConfig) -> ArchCosts:
    shared, size = stem_cost(arch.stem, arch.resolution)
    trunk_costs = []
    for stage in arch.trunk:
        cost, size_out = stage_cost(stage, size)
        trunk_costs.append((cost, size))
        size = size_out
    final_size = size

    fork_size = trunk_costs[arch.fork][1]
    for cost, _ in trunk_costs[:arch.fork]:
        shared += cost

    little = shared
    size = fork_size
    for stage in arch.little:
        cost, size = stage_cost(stage, size)
        little += cost
    little += head_cost(arch.little_head, size)

    big_tail = Cost()
    for cost, _ in trunk_costs[arch.fork:]:
        big_tail += cost
    big_tail += head_cost(arch.big_head, final_size)
    return ArchCosts(shared=shared, little=little, big_tail=big_tail, big=shared + big_tail,
                     router=router_cost(arch.router))
