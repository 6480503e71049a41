"""NNI's path-sampling one-shot strategies accept the space (differentiable ones: test_nni_differentiable.py)."""
import copy

import pytest
import torch

from nni.nas.oneshot.pytorch.strategy import ENAS, OneShotStrategy, RandomOneShot
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule


@pytest.mark.parametrize('strategy_cls', [RandomOneShot, ENAS])
def test_path_sampling_strategies_mutate_the_space(tiny_space, strategy_cls):
    space = copy.deepcopy(tiny_space)
    before = {name: type(m) for name, m in space.named_modules()}
    supernet = strategy_cls().mutate_model(space)
    assert supernet is space
    assert {name: type(m) for name, m in supernet.named_modules()} == before  # our supernet modules are kept

    # NNI's resample loop (BaseOneShotLightningModule.resample) draws every label, and the supernet runs it
    result = {}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            result.update(module.resample(memo=result))
    assert set(result) == set(tiny_space.spec.choices())
    with torch.no_grad():
        little, big = supernet(torch.randn(2, 3, 32, 32))
    assert little.shape == big.shape == (2, 10)
    if tiny_space.spec.check(result) is None:  # the little network may come out costlier; then it is not frozen
        frozen = supernet.freeze(result).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(frozen(x)[1], supernet(x)[1], atol=1e-5)


def test_unsupported_oneshot_strategies_are_refused_clearly(tiny_space):
    class HomeMadeOneShot(OneShotStrategy):
        pass

    with pytest.raises(TypeError, match='RandomOneShot .SPOS., ENAS, DARTS, GumbelDARTS and Proxyless'):
        HomeMadeOneShot().mutate_model(copy.deepcopy(tiny_space))


def test_a_relaxed_space_refuses_a_second_strategy(tiny_space):
    from nni.nas.oneshot.pytorch.strategy import DARTS
    space = DARTS().mutate_model(copy.deepcopy(tiny_space))
    with pytest.raises(TypeError, match='already relaxed for DARTS'):
        RandomOneShot().mutate_model(space)
    fresh = copy.deepcopy(tiny_space)
    fresh.load_state_dict(space.state_dict(), strict=False)  # the weights carry over to a fresh space
    RandomOneShot().mutate_model(fresh)
