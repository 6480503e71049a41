import os
import random
from pathlib import Path

import pytest
import torch

# NNI 3.0 import-order trap: importing nni.nas.oneshot.pytorch.strategy before nni.nas.strategy makes the
# latter export placeholder strategies (a circular import caught as ImportError). Import it first, once.
import nni_bigLittle._nni_compat  # noqa: F401,E402  (quiet NNI import)
import nni.nas.strategy  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[1]
# The shared data folder sits beside the repository (../shared/data); NNI_BIGLITTLE_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get('NNI_BIGLITTLE_SHARED_DATA', REPO.parent / 'shared' / 'data'))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def cifar_space():
    from nni_bigLittle.search_spaces import BigLittleSpace
    torch.manual_seed(0)  # session fixtures are built before the per-test seed: seed the weights here
    space = BigLittleSpace(preset='cifar', num_classes=10)
    _randomize_bn(space)
    return space.eval()


@pytest.fixture(scope='session')
def tiny_space():
    """A small space (2 widths, depths up to 2) for fast tests; same code path as the presets."""
    from nni_bigLittle.search_spaces import BigLittleSpace
    torch.manual_seed(0)
    space = BigLittleSpace(preset='cifar', num_classes=10, width_choices=(0.5, 1.0), depth_choices=(1, 2),
                           little_depth_choices=(0, 1, 2), kernel_choices=(3, 5), expand_choices=(2, 4))
    _randomize_bn(space)
    return space.eval()


def _randomize_bn(module: torch.nn.Module) -> None:
    """Give batch norms non-trivial statistics so that slicing mistakes in them show up in outputs."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
