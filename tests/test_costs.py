"""Analytical MACs / params equal what forward hooks count on the real frozen model."""
import pytest
import torch
from torch import nn

from nni_bigLittle.nn.costs import arch_costs


def _count(module_calls):
    macs = 0
    for m, inp, out in module_calls:
        if isinstance(m, nn.Conv2d):
            macs += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs += out.numel() // out.shape[0] * m.in_features
    return macs


def _hooked_macs(model, fn):
    calls = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return _count(calls)


@pytest.mark.parametrize('seed', range(6))
def test_macs_and_params_match_the_model(cifar_space, seed):
    policy = 'learned' if seed % 2 else 'entropy'
    sample = cifar_space.random(random_state=seed, memo={'router/policy': policy})
    model = cifar_space.freeze(sample).eval()
    costs = arch_costs(model.arch)
    x = torch.randn(1, 3, 32, 32)
    shared = model.fork_features(x)
    little_out = model.little(shared)
    assert _hooked_macs(model, lambda: model.little(model.fork_features(x))) == costs.little.macs
    assert _hooked_macs(model, lambda: model.big_tail(shared)) == costs.big_tail.macs
    assert _hooked_macs(model, lambda: model.router(*little_out)) == costs.router.macs
    assert _hooked_macs(model, lambda: model.big_tail(model.fork_features(x))) == costs.big.macs

    def params(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())
    shared_modules = [model.stem, *model.trunk[:model.fork]]
    assert params(*shared_modules, model.little) == costs.little.params
    assert params(*model.trunk[model.fork:], model.big_head) == costs.big_tail.params
    assert params(model.router) == costs.router.params
    assert (costs.router.macs > 0) == (policy == 'learned')


def test_expected_macs(cifar_space):
    costs = arch_costs(cifar_space.spec.decode(cifar_space.random(random_state=1)))
    assert costs.expected_macs(0.0) == costs.little.macs + costs.router.macs
    assert costs.expected_macs(1.0) == costs.little.macs + costs.router.macs + costs.big_tail.macs
    assert costs.expected_macs(0.25) == pytest.approx(costs.expected_macs(0.0) + 0.25 * costs.big_tail.macs)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        costs.expected_macs(1.2)
