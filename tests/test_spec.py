"""The framework-free part of the space: labels, validation, sampling, decoding, channel rounding."""
import random

import pytest

from nni.mutable import Categorical, SampleValidationError

from nni_bigLittle.nn.arch import make_divisible
from nni_bigLittle.search_spaces import InvalidSampleError, get_preset
from nni_bigLittle.search_spaces.spec import KERNEL_CHOICES, EXPAND_CHOICES, WIDTH_CHOICES


@pytest.fixture(scope='module')
def spec():
    return get_preset('cifar')


def test_make_divisible_numbers_and_expressions_agree():
    width = Categorical(list(WIDTH_CHOICES), label='w')
    expand = Categorical(list(EXPAND_CHOICES), label='e')
    for base in (3, 16, 24, 40, 80, 112, 160):
        expr = make_divisible(make_divisible(width * base) * expand)
        for w in WIDTH_CHOICES:
            for e in EXPAND_CHOICES:
                assert expr.freeze({'w': w, 'e': e}) == make_divisible(make_divisible(w * base) * e)
    assert make_divisible(4) == 8 and make_divisible(20) == 24 and make_divisible(61) == 64
    assert make_divisible(33) == 32 and make_divisible(11) == 16  # 8 would lose more than 10 %


def test_labels_are_hierarchical_and_stable(spec):
    choices = spec.choices()
    assert choices['trunk/s2/width'] == (0.25, 0.5, 0.75, 1.0)
    assert choices['trunk/s0/depth'] == (1, 2, 3, 4)
    assert choices['trunk/s3/b3/kernel'] == KERNEL_CHOICES
    assert choices['little/s1/depth'] == (0, 1, 2, 3, 4)
    assert choices['little/fork'] == (0, 1, 2, 3)
    assert set(choices['router/policy']) == {'max_softmax', 'entropy', 'margin', 'learned'}
    assert 'router/threshold' in choices
    assert list(choices) == list(get_preset('cifar').choices())


def test_random_sample_is_seeded_and_valid(spec):
    a = spec.random_sample(random.Random(7))
    b = spec.random_sample(random.Random(7))
    assert a == b
    assert spec.check(a) is None
    assert spec.random_sample(random.Random(8)) != a


@pytest.mark.parametrize('mutate, label, fragment', [
    (lambda s: s.pop('trunk/s1/width'), 'trunk/s1/width', 'Missing label'),
    (lambda s: s.update({'trunk/s0/depth': 5}), 'trunk/s0/depth', 'out of range'),
    (lambda s: s.update({'trunk/s2/b0/kernel': 4}), 'trunk/s2/b0/kernel', 'out of range'),
    (lambda s: s.update({'router/policy': 'oracle'}), 'router/policy', 'out of range'),
    (lambda s: s.update({'trunk/s0/width': True}), 'trunk/s0/width', 'out of range'),
    (lambda s: s.update({'trunk/s9/width': 1.0}), 'trunk/s9/width', 'Unknown label'),
])
def test_malformed_samples_name_label_and_allowed_values(spec, mutate, label, fragment):
    sample = spec.largest()
    mutate(sample)
    with pytest.raises(InvalidSampleError) as info:
        spec.validate(sample)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, SampleValidationError)
    assert err.label == label and label in str(err) and fragment in str(err)
    assert err.allowed is not None
    if fragment != 'Unknown label':
        assert str(list(spec.choices()[label])) in str(err)


def test_little_costlier_than_big_is_rejected(spec):
    sample = spec.smallest()
    sample.update({'little/fork': 0, 'little/s0/depth': 4, 'little/s0/width': 1.0, 'little/s1/depth': 4,
                   'little/s1/width': 1.0})
    error = spec.check(sample)
    assert isinstance(error, InvalidSampleError)
    assert error.label == 'little/fork' and 'not less than the big network' in str(error)
    assert error.allowed == spec.forks


def test_json_numbers_are_accepted(spec):
    sample = spec.largest()
    sample['trunk/s0/depth'] = 4.0  # JSON round trips may turn ints into floats
    assert spec.check(sample) is None


def test_decode_channels_follow_make_divisible(spec):
    sample = spec.random_sample(random.Random(3))
    arch = spec.decode(sample)
    for i, stage in enumerate(arch.trunk):
        assert stage.depth == sample[f'trunk/s{i}/depth']
        assert stage.out_channels == make_divisible(sample[f'trunk/s{i}/width'] * spec.trunk[i].base_channels)
        for j, block in enumerate(stage.blocks):
            assert block.kernel_size == sample[f'trunk/s{i}/b{j}/kernel']
            assert block.hidden_channels == make_divisible(block.in_channels * sample[f'trunk/s{i}/b{j}/expand'])
            assert block.residual == (j > 0)
    assert arch.fork == sample['little/fork']
    assert arch.little_head.in_channels == (arch.little[-1].out_channels)
    assert arch.router.policy == sample['router/policy']


def test_extremes_are_valid_and_ordered(spec):
    from nni_bigLittle.nn.costs import arch_costs
    big = arch_costs(spec.decode(spec.largest()))
    small = arch_costs(spec.decode(spec.smallest()))
    assert big.big_macs > 10 * small.big_macs
    assert big.little_macs < big.big_macs and small.little_macs < small.big_macs


def test_preset_errors_are_clear():
    with pytest.raises(ValueError, match='Unknown preset'):
        get_preset('mnist')
    with pytest.raises(ValueError, match='Unknown space option'):
        get_preset('cifar', widht_choices=(1.0,))
    with pytest.raises(ValueError, match='resolution must be one of'):
        get_preset('cifar', resolution=48)
