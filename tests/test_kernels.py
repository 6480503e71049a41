"""Kernel detection: PyTorch (torch.fx) and ONNX front ends, one fusion pass, and the torch-free arch kernels."""
import io
import random

import pytest
import torch
from torch import nn

import nni_bigLittle._nni_compat  # noqa: F401
from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
from nni_bigLittle.hw_predictors.kernels import KernelDetectionError, detect_kernels, parse_input_shape, summarize, \
    torch_to_onnx
from nni_bigLittle.nn.model import BigLittleModel
from nni_bigLittle.search_spaces.presets import get_preset


def _plain(kernel):
    """A kernel as a dict without names (front ends name nodes differently)."""
    d = kernel.to_dict() if hasattr(kernel, 'to_dict') else dict(kernel)
    d.pop('name')
    if 'parts' in d:
        d['parts'] = [_plain(p) for p in d['parts']]
    return d


def _conv_linear_macs(model, shape):
    """Independent MAC count with forward hooks on every Conv2d / Linear."""
    total = []

    def conv_hook(m, inp, out):
        total.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    def linear_hook(m, inp, out):
        total.append(out.numel() * m.in_features)
    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(torch.randn(*shape))
    for h in handles:
        h.remove()
    return sum(total)


def _leaf_macs(kernels):
    out = 0.0
    for k in kernels:
        if k.parts:
            out += _leaf_macs(k.parts)
        elif k.type in ('conv-bn-act', 'dwconv-bn-act', 'fc'):
            out += k.flops
    return out


@pytest.mark.parametrize('preset,seed', [('cifar', 0), ('cifar', 1), ('cifar', 2), ('imagenet', 0)])
def test_arch_kernels_equal_detected_kernels_of_the_frozen_model(preset, seed):
    spec = get_preset(preset, num_classes=10)
    arch = spec.decode(spec.random_sample(random.Random(seed)))
    model = BigLittleModel(arch).eval()
    expected = arch_kernels(arch)
    res = spec.resolution
    with torch.no_grad():
        fork_shape = tuple(model.fork_features(torch.zeros(1, 3, res, res)).shape)
    for part, module, shape in (('little_path', model.little_path(), (1, 3, res, res)),
                                ('big', model.big_path(), (1, 3, res, res)),
                                ('big_tail', model.big_tail_module(), fork_shape)):
        want = [_plain(k) for k in getattr(expected, part)]
        assert [_plain(k) for k in detect_kernels(module, 'torch', shape)] == want, part
        assert [_plain(k) for k in detect_kernels(torch_to_onnx(module, shape), 'onnx')] == want, part
    # every block is found as one inverted-residual kernel with its parts
    assert sum(1 for k in expected.big if k.type == 'mbconv') == sum(s.depth for s in arch.trunk)


@pytest.mark.parametrize('name', ['mobilenetv3_small_100', 'mobilenetv3_large_100', 'efficientnet_b0'])
def test_timm_models_torch_and_onnx_agree(name):
    import timm
    model = timm.create_model(name).eval()
    shape = (1, 3, 224, 224)
    from_torch = detect_kernels(model, 'torch', shape)
    from_onnx = detect_kernels(torch_to_onnx(model, shape), 'onnx')
    assert [_plain(k) for k in from_torch] == [_plain(k) for k in from_onnx]
    # every conv / linear MAC is in some kernel, no more, no less
    assert _leaf_macs(from_torch) == pytest.approx(_conv_linear_macs(model, shape))
    types = summarize(from_torch)
    assert types['mbconv']['count'] >= 10
    assert any(k.se for k in from_torch if k.type == 'mbconv')
    acts = {k.act for k in from_torch if k.type == 'mbconv'}
    assert acts & ({'silu'} if name.startswith('efficientnet') else {'hswish'})


def test_resnet_has_pool_add_and_plain_convs():
    import torchvision
    model = torchvision.models.resnet18(weights=None).eval()
    kernels = detect_kernels(model, 'torch', (1, 3, 64, 64))
    types = summarize(kernels)
    assert types['pool']['count'] == 1 and types['add']['count'] == 8 and types['fc']['count'] == 1
    assert 'mbconv' not in types
    assert _leaf_macs(kernels) == pytest.approx(_conv_linear_macs(model, (1, 3, 64, 64)))


def test_onnx_without_weights_as_nni_exports_it():
    """NNI's NnMeterProfiler exports with export_params=False: weight shapes come from graph inputs."""
    spec = get_preset('cifar', num_classes=10)
    model = BigLittleModel(spec.decode(spec.random_sample(random.Random(3)))).eval().big_path()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), buffer, export_params=False, opset_version=17, dynamo=False)
    with_weights = detect_kernels(torch_to_onnx(model, (1, 3, 32, 32)), 'onnx')
    without = detect_kernels(buffer.getvalue(), 'onnx')
    assert [_plain(k) for k in without] == [_plain(k) for k in with_weights]


def test_dynamic_onnx_input_needs_a_shape(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    path = tmp_path / 'dyn.onnx'
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), input_names=['x'],
                      dynamic_axes={'x': {0: 'batch', 2: 'h', 3: 'w'}}, opset_version=17, dynamo=False)
    with pytest.raises(KernelDetectionError, match='dynamic shape'):
        detect_kernels(str(path), 'onnx')
    kernels = detect_kernels(str(path), 'onnx', '2x3x20x20')
    assert len(kernels) == 1 and kernels[0].hw == 20 and kernels[0].batch == 2 and kernels[0].act == 'relu'


def test_bad_inputs_are_explained():
    with pytest.raises(KernelDetectionError, match='NxCxHxW'):
        parse_input_shape('1x3x224')
    with pytest.raises(KernelDetectionError, match='NxCxHxW'):
        parse_input_shape('one by three')
    with pytest.raises(KernelDetectionError, match='input shape'):
        detect_kernels(nn.Conv2d(3, 3, 1), 'torch')
    with pytest.raises(KernelDetectionError, match="'torch' or 'onnx'"):
        detect_kernels(nn.Conv2d(3, 3, 1), 'tflite', (1, 3, 8, 8))
    with pytest.raises(KernelDetectionError, match='Cannot read ONNX'):
        detect_kernels(b'not an onnx file', 'onnx')


def test_untraceable_module_falls_back_to_onnx():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)

        def forward(self, x):
            y = self.bn(self.conv(x))
            if float(y.mean()) > 1e9:  # data-dependent branch: torch.fx cannot trace it
                y = y * 2
            return torch.relu(y)
    kernels = detect_kernels(DataDependent().eval(), 'torch', (1, 3, 8, 8))
    assert [(k.type, k.cout, k.act) for k in kernels] == [('conv-bn-act', 16, 'relu')]
