"""BigLittleSpace: NNI view (simplify / random / validation), supernet == frozen model."""
import random
import subprocess
import sys

import pytest
import torch

from nni.mutable import Categorical

from nni_bigLittle.nn.model import BigLittleModel
from nni_bigLittle.search_spaces import BigLittleSpace, InvalidSampleError


def test_simplify_lists_every_labelled_choice(cifar_space):
    simplified = cifar_space.simplify()
    choices = cifar_space.spec.choices()
    assert set(simplified) == set(choices)
    for label, mutable in simplified.items():
        assert isinstance(mutable, Categorical)
        assert tuple(mutable.values) == tuple(choices[label]), label


def test_random_returns_a_valid_dict_sample(cifar_space):
    sample = cifar_space.random(random_state=3)
    assert isinstance(sample, dict) and set(sample) == set(cifar_space.spec.choices())
    assert cifar_space.check_contains(sample) is None
    assert cifar_space.random(random_state=3) == sample  # seeded
    memo = {'little/fork': 1}
    assert cifar_space.random(memo, random_state=4)['little/fork'] == 1


def _covering_samples(space, count):
    """Random valid samples that go through every fork point and little depths 0-4 in both little stages."""
    spec = space.spec
    rng = random.Random(2024)
    forks, depths = spec.forks, spec.little_depth_choices
    samples = []
    for i in range(count):
        fixed = {'little/fork': forks[i % len(forks)],
                 'little/s0/depth': depths[(i // len(forks)) % len(depths)],
                 'little/s1/depth': depths[(i // (len(forks) * len(depths))) % len(depths)]}
        try:
            samples.append(spec.random_sample(rng, fixed=fixed))
        except InvalidSampleError:  # some (fork, depth, depth) triples cannot be cheaper than the big net
            fixed.pop('little/s1/depth')
            samples.append(spec.random_sample(rng, fixed=fixed))
    return samples


def test_frozen_model_equals_supernet_on_200_samples(cifar_space):
    samples = _covering_samples(cifar_space, 200)
    seen = {(s['little/fork'], stage, s[f'little/{stage}/depth']) for s in samples for stage in ('s0', 's1')}
    for fork in cifar_space.spec.forks:
        for depth in range(5):
            assert (fork, 's0', depth) in seen, (fork, depth)
    assert {s['little/s1/depth'] for s in samples} == set(range(5))
    assert {s['router/policy'] for s in samples} == {'max_softmax', 'entropy', 'margin', 'learned'}

    generator = torch.Generator().manual_seed(0)
    x8 = torch.randn(8, 3, 32, 32, generator=generator)
    worst = 0.0
    with torch.no_grad():
        for sample in samples:
            cifar_space.activate(sample)
            model = cifar_space.freeze(sample).eval()
            assert isinstance(model, BigLittleModel)
            for x in (x8[:1], x8):
                supernet_out = cifar_space.forward_all(x)
                frozen_out = model.forward_all(x)
                for a, b in zip(supernet_out, frozen_out):
                    assert a.shape == b.shape
                    worst = max(worst, (a - b).abs().max().item())
    assert worst <= 1e-5, worst


def test_frozen_model_holds_no_nni_modules_and_matching_sizes(cifar_space):
    sample = cifar_space.random(random_state=11)
    model = cifar_space.freeze(sample)
    assert not [type(m) for m in model.modules() if type(m).__module__.split('.')[0] == 'nni']
    from nni_bigLittle.nn.costs import arch_costs
    costs = arch_costs(model.arch)
    assert sum(p.numel() for p in model.parameters()) == (costs.little.params + costs.big_tail.params
                                                          + sum(p.numel() for p in model.router.parameters()))


def test_frozen_model_runs_without_nni(cifar_space, tmp_path):
    """Inference needs only torch: load a pickled frozen model in a process where ``import nni`` fails."""
    sample = cifar_space.random(random_state=5)
    model = cifar_space.freeze(sample).eval()
    x = torch.randn(4, 3, 32, 32)
    expected_pred, expected_esc = model.infer(x)
    torch.save({'model': model, 'x': x}, tmp_path / 'model.pt')
    script = f'''
import sys, torch
sys.modules['nni'] = None  # as if NNI were not installed
blob = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)
pred, esc = blob['model'].infer(blob['x'])
assert sys.modules['nni'] is None
print(pred.tolist(), esc.tolist())
'''
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f'{expected_pred.tolist()} {expected_esc.tolist()}'


def test_freeze_rejects_malformed_samples(tiny_space):
    sample = tiny_space.random(random_state=0)
    bad = dict(sample, **{'trunk/s1/depth': 3})
    with pytest.raises(InvalidSampleError, match=r"'trunk/s1/depth' = 3 is out of range; allowed values: \[1, 2\]"):
        tiny_space.freeze(bad)
    with pytest.raises(ValueError, match='Missing label'):
        tiny_space.activate({k: v for k, v in sample.items() if k != 'router/policy'})
    assert tiny_space.check_contains(bad) is not None
    with pytest.raises(ValueError):
        tiny_space.validate(bad)  # NNI's raising form of check_contains


def test_supernet_needs_an_active_sample():
    space = BigLittleSpace(preset='cifar', depth_choices=(1,), little_depth_choices=(0, 1), width_choices=(1.0,),
                           kernel_choices=(3,), expand_choices=(2,))
    with pytest.raises(RuntimeError, match='activate'):
        space(torch.randn(1, 3, 32, 32))


def test_supernet_trains_one_step_and_weights_reach_frozen_model(tiny_space):
    """Gradients flow through the sliced weights; the frozen model sees the updated values."""
    import copy
    space = copy.deepcopy(tiny_space).train()
    sample = space.random(random_state=1)
    space.activate(sample)
    opt = torch.optim.SGD(space.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    little, big = space(x)
    loss = torch.nn.functional.cross_entropy(little, y) + torch.nn.functional.cross_entropy(big, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    space.eval()
    with torch.no_grad():
        a = space(x)
        b = space.freeze(sample).eval()(x)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)


def test_space_round_trips_through_nni_serialization(tiny_space):
    """NNI ships a model space to trials as ``nni.dump(space.trace_copy())``; it must rebuild the same space."""
    import nni
    clone = nni.load(nni.dump(tiny_space.trace_copy()))
    assert isinstance(clone, BigLittleSpace)
    assert clone.spec == tiny_space.spec
    assert {k: v.values for k, v in clone.simplify().items()} == {k: v.values for k, v in tiny_space.simplify().items()}
    sample = tiny_space.random(random_state=2)
    assert clone.freeze(sample).arch == tiny_space.freeze(sample).arch
