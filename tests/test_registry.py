"""Registries: every name a user may pick is looked up in one, and a wrong name gets an error listing the right
ones; tests run over what is registered."""
import pytest
import torch

from nni_bigLittle.app.baselines import BASELINES, create_baseline
from nni_bigLittle.data import DATASETS, load_dataset
from nni_bigLittle.errors import BigLittleError, UnknownNameError
from nni_bigLittle.registry import Registry
from nni_bigLittle.strategies.cotraining import COTRAINING_STRATEGIES


def test_registry_lists_the_names_in_its_error_and_refuses_a_second_entry():
    registry = Registry('colour')
    registry.register('red', 1)

    @registry.register('blue')
    def blue():
        return 2

    assert registry.get('blue') is blue and registry['red'] == 1 and list(registry) == ['blue', 'red']
    with pytest.raises(UnknownNameError, match=r"Unknown colour 'green'; choose one of \['blue', 'red'\]"):
        registry.get('green')
    with pytest.raises(ValueError, match='registered already'):
        registry.register('red', 3)
    assert issubclass(UnknownNameError, BigLittleError) and issubclass(UnknownNameError, ValueError)


@pytest.mark.parametrize('registry, expected', [
    (DATASETS, {'digits', 'cifar10', 'cifar100', 'fashion_mnist', 'imagefolder'}),
    (BASELINES, {'mobilenetv3_small', 'mobilenetv3_large', 'efficientnet_b0', 'branchynet_mobilenetv3_large'}),
    (COTRAINING_STRATEGIES, {'sandwich', 'progressive'}),
])
def test_the_package_registers_what_it_documents(registry, expected):
    assert set(registry) == expected


def test_unknown_names_fail_with_the_choices():
    with pytest.raises(UnknownNameError, match="Unknown dataset 'mnist'; choose one of .*'digits'"):
        load_dataset('mnist')
    with pytest.raises(UnknownNameError, match="Unknown baseline 'resnet50'; choose one of .*'efficientnet_b0'"):
        create_baseline('resnet50', 10)


@pytest.mark.parametrize('name', BASELINES.names())
def test_every_registered_baseline_builds_for_32_pixel_inputs(name):
    torch.manual_seed(0)
    model = create_baseline(name, num_classes=10, resolution=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    outputs = out if isinstance(out, (list, tuple)) else [out]
    assert all(o.shape == (2, 10) for o in outputs)
