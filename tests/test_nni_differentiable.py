"""NNI's differentiable one-shot strategies (DARTS, GumbelDARTS, Proxyless), unmodified, on BigLittleSpace."""
import copy
import random

import nni
import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning import Callback

from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
from nni.nas.experiment import NasExperiment
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import GumbelSoftmax
# the strategies' own module: ``nni.nas.strategy`` falls back to placeholders when this module was imported first
from nni.nas.oneshot.pytorch.strategy import DARTS, GumbelDARTS, Proxyless

from nni_bigLittle.search_spaces import InvalidSampleError
from nni_bigLittle.search_spaces.relaxation import export_probs, export_sample, make_valid

STRATEGIES = {'darts': DARTS, 'gumbel': GumbelDARTS, 'proxyless': Proxyless}


@nni.trace
class BothHeads(LightningModule):
    """The evaluator's training recipe: cross-entropy on the little and the big head."""

    def __init__(self, learning_rate: float = 0.05):
        super().__init__()
        self.learning_rate = learning_rate

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        little_logits, big_logits = self.model(x)
        return F.cross_entropy(little_logits, y) + F.cross_entropy(big_logits, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate, momentum=0.9)


class ExpectedWidthPenalty(ExpectationProfilerPenalty):
    """A stand-in for an expected-latency penalty: a differentiable function of export_probs() in
    which a higher router threshold (more escalations) and wider / deeper stages cost more."""

    def __init__(self):
        super().__init__(profiler=None, baseline=1.0, scale=1.0)

    def profile(self, sample):
        return sum(prob * float(value) for label, dist in sample.items()
                   if label.endswith(('/width', '/depth', 'threshold')) for value, prob in dist.items())


class ArchSnapshot(Callback):
    """Keeps the architecture parameters as they were when training started."""

    def on_train_start(self, trainer, pl_module):
        self.before = {id(p): p.detach().clone() for p in pl_module.arch_parameters()}


@pytest.fixture(scope='module', params=sorted(STRATEGIES))
def relaxed(request, tiny_space):
    torch.manual_seed(0)  # module-scoped: runs before the autouse per-test seeding
    strategy = STRATEGIES[request.param]()
    supernet = strategy.mutate_model(copy.deepcopy(tiny_space))
    return request.param, strategy, supernet


def _resample(supernet):
    memo = {}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            memo.update(module.resample(memo=memo))
    return memo


def _arch_parameters(supernet):
    params = {}
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule) and hasattr(module, 'arch_parameters'):
            params.update({id(p): p for p in module.arch_parameters()})
    return list(params.values())


def _data(n=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    return torch.utils.data.TensorDataset(x, torch.randint(0, 10, (n,), generator=generator))


def test_mutate_keeps_weights_and_forward_gives_both_heads(relaxed, tiny_space):
    name, strategy, supernet = relaxed
    # relaxed in place: every original tensor keeps its name (a RandomOneShot supernet's state dict loads)
    assert set(tiny_space.state_dict()) <= set(supernet.state_dict())
    assert len(_arch_parameters(supernet)) == len(tiny_space.spec.choices())  # one parameter per label
    if name == 'gumbel':  # NNI's temperature schedule reaches the relaxed modules' softmax
        assert any(isinstance(m, GumbelSoftmax) for m in supernet.modules())
    sampled = _resample(supernet)
    if name == 'darts':
        assert sampled == {}
    else:  # a Gumbel-max sample / the Proxyless gates: one value per label
        assert set(sampled) == set(tiny_space.spec.choices())
    out = supernet.train().forward_all(torch.randn(4, 3, 32, 32))
    assert out.little_logits.shape == out.big_logits.shape == (4, 10)
    assert out.confidence.shape == (4,) and bool(torch.isfinite(out.confidence).all())


def test_export_probs_cover_every_label_and_carry_gradients(relaxed, tiny_space):
    _, _, supernet = relaxed
    _resample(supernet)
    supernet(torch.randn(2, 3, 32, 32))
    probs = export_probs(supernet)
    choices = tiny_space.spec.choices()
    assert set(probs) == set(choices)
    for label, dist in probs.items():
        assert list(dist) == list(choices[label]), label
        assert all(isinstance(p, torch.Tensor) and p.requires_grad for p in dist.values()), label
        assert abs(float(sum(dist.values()).detach()) - 1.0) < 1e-5, label
    # a penalty built from the probabilities reaches every architecture parameter, as a latency penalty would
    params = _arch_parameters(supernet)
    for p in params:
        p.grad = None
    penalty = sum(prob * i for dist in probs.values() for i, prob in enumerate(dist.values()))
    penalty.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)


def test_classification_loss_reaches_the_architecture_but_not_the_router(relaxed):
    name, strategy, supernet = relaxed
    params = {label: alpha for label, alpha in strategy._arch_parameters.items()}
    for p in params.values():
        p.grad = None
    x, y = _data(4).tensors
    _resample(supernet)
    little_logits, big_logits = supernet.train()(x)
    (F.cross_entropy(little_logits, y) + F.cross_entropy(big_logits, y)).backward()

    def moved(label):
        return params[label].grad is not None and float(params[label].grad.abs().sum()) > 0

    # trunk stage 0 (8x8 features, block 0 always runs) and the fork see the loss under every strategy
    for label in ('trunk/s0/width', 'trunk/s0/depth', 'trunk/s0/b0/kernel', 'trunk/s0/b0/expand', 'little/fork'):
        assert moved(label), (name, label)
    assert not moved('router/policy') and not moved('router/threshold')  # only penalties move the router


def test_one_hot_gates_give_exactly_the_frozen_subnet(tiny_space):
    """With Proxyless gates fixed to a sample, the relaxed supernet is that subnet (masks, depth
    mixtures, skipped little stages and the fork mixture are exact at one-hot weights)."""
    supernet = Proxyless().mutate_model(copy.deepcopy(tiny_space)).eval()
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(0)
    for sample in [tiny_space.largest(), tiny_space.spec.random_sample(rng), tiny_space.spec.random_sample(rng)]:
        supernet.activate(sample)
        with torch.no_grad():
            relaxed_out = supernet(x)
            frozen_out = tiny_space.freeze(sample).eval()(x)
        for a, b in zip(relaxed_out, frozen_out):
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('name', sorted(STRATEGIES))
def test_nni_experiment_runs_and_exports_a_valid_sample(name, tiny_space, tmp_path):
    space = copy.deepcopy(tiny_space).train()
    snapshot = ArchSnapshot()
    # manual optimisation: an architecture step and a weight step per batch, each counted by max_steps
    trainer = Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator='cpu', num_sanity_val_steps=0, callbacks=[snapshot])
    evaluator = Lightning(BothHeads(), trainer, train_dataloaders=DataLoader(_data(8, seed=0), batch_size=4),
                          val_dataloaders=DataLoader(_data(8, seed=1), batch_size=4))
    # DARTS also gets a penalty on export_probs(), as an expected-latency penalty would be
    penalty = ExpectedWidthPenalty() if name == 'darts' else None
    strategy = STRATEGIES[name](arc_learning_rate=0.05, penalty=penalty)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path)
    try:
        assert experiment.run() is not False
        sample = experiment.export_top_models(formatter='dict')[0]
    finally:
        experiment.stop()

    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
    params = strategy.oneshot_module.arch_parameters()
    assert len(params) == len(tiny_space.spec.choices())
    changed = [p for p in params if not torch.equal(p.detach(), snapshot.before[id(p)])]
    assert len(changed) >= len(params) // 2  # the architecture steps moved the parameters the loss reaches

    router = space.router._arch_alpha
    threshold_before = snapshot.before[id(router['router/threshold'])]
    threshold_after = router['router/threshold'].detach()
    if penalty is None:  # the classification loss alone never moves the router (Adam's weight decay aside)
        assert torch.allclose(threshold_after, threshold_before, atol=1e-4)
    else:  # the penalty moves probability towards lower thresholds (fewer escalations)
        assert threshold_after.softmax(-1)[0] > threshold_before.softmax(-1)[0]
        assert threshold_after.softmax(-1)[-1] < threshold_before.softmax(-1)[-1]

    tiny_space.spec.validate(sample)
    assert sample == export_sample(space)
    frozen = space.freeze(sample).eval()
    with torch.no_grad():
        little_logits, big_logits = frozen(torch.randn(2, 3, 32, 32))
    assert little_logits.shape == big_logits.shape == (2, 10)


def test_export_repairs_an_invalid_argmax_deterministically(tiny_space):
    strategy = DARTS()
    supernet = strategy.mutate_model(copy.deepcopy(tiny_space))
    spec = tiny_space.spec
    invalid = {**spec.smallest(), 'little/fork': max(spec.forks)}
    for label in spec.choices():
        if label.startswith('little/s') and label.endswith(('/width', '/depth')):
            invalid[label] = max(spec.choices()[label])
    with pytest.raises(InvalidSampleError):
        spec.validate(invalid)
    with torch.no_grad():  # make ``invalid`` the argmax of every label
        for label, alpha in strategy._arch_parameters.items():
            alpha.zero_()
            alpha[list(spec.choices()[label]).index(invalid[label])] = 1.0
    exported = export_sample(supernet)
    spec.validate(exported)
    assert exported == make_valid(spec, invalid) == make_valid(spec, invalid)
    changed = {label for label in invalid if exported[label] != invalid[label]}
    assert changed and all(label.startswith('little/') for label in changed)  # the big network is kept
    assert make_valid(spec, exported) == exported  # a valid sample is returned unchanged
    with pytest.raises(InvalidSampleError, match='trunk/s0/width'):
        make_valid(spec, {**invalid, 'trunk/s0/width': 0.3})  # malformed samples are not repaired
