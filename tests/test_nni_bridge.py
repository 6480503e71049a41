"""The NNI bridge: expected dynamic cost of BigLittleSpace samples as an NNI ExpressionProfiler,
as RandomOneShot's filter, in the multi-trial Filter middleware and as an NNI penalty."""
import copy

import numpy as np
import pytest
import torch

import nni_bigLittle._nni_compat  # noqa: F401
from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
from nni_bigLittle.hw_predictors.devices import load_predictor
from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler, ExpectedCostPenalty, cost_filter
from nni_bigLittle.search_spaces.spec import InvalidSampleError


@pytest.fixture(scope='module')
def pi4():
    return load_predictor('raspberry_pi_4')


@pytest.fixture(scope='module')
def profiler(tiny_space, pi4):
    return BigLittleCostProfiler(tiny_space, pi4, escalation_rate=0.3)


def _valid_samples(space, n, start=0):
    out, seed = [], start
    while len(out) < n:
        sample = space.random(random_state=seed)
        seed += 1
        if space.spec.check(sample) is None:
            out.append(sample)
    return out


def _one_hot(spec, sample):
    return {label: {v: float(v == sample[label]) for v in values} for label, values in spec.choices().items()}


def test_profile_expression_and_expectation_agree(tiny_space, profiler, pi4):
    for sample in _valid_samples(tiny_space, 25):
        parts = profiler.breakdown(sample)
        exact = parts['expected']
        # the definition, from the kernels of the frozen pair
        kernels = arch_kernels(tiny_space.spec.decode(sample))
        little = pi4.predict_kernels(kernels.little_path).total
        tail = pi4.predict_kernels(kernels.big_tail).total
        router = pi4.predict_kernels(list(kernels.router)).total - pi4.overhead
        assert exact == pytest.approx(little + router + 0.3 * tail, rel=1e-9)
        assert parts['big'] == pytest.approx(pi4.predict_kernels(kernels.big).total, rel=1e-9)
        assert profiler.expression.evaluate(sample) == pytest.approx(exact, rel=1e-9)
        assert float(profiler.expectation(_one_hot(tiny_space.spec, sample))) == pytest.approx(exact, rel=1e-9)
        assert 0 < parts['little'] and 0 < parts['big_tail'] < parts['big']


def test_escalation_rate_moves_cost_between_little_and_big(tiny_space, pi4):
    sample = _valid_samples(tiny_space, 1, start=7)[0]
    never = BigLittleCostProfiler(tiny_space, pi4, escalation_rate=0.0, build_expression=False).breakdown(sample)
    always = BigLittleCostProfiler(tiny_space, pi4, escalation_rate=1.0, build_expression=False).breakdown(sample)
    assert never['expected'] == pytest.approx(never['little'] + never['router'])
    # escalating everything costs more than the static big network: the little path ran first
    assert always['expected'] > always['big']
    with pytest.raises(ValueError, match='escalation_rate'):
        BigLittleCostProfiler(tiny_space, pi4, escalation_rate=1.5)


def test_fast_expectation_equals_nni_generic_expectation_and_is_differentiable(tiny_space, profiler):
    from nni.nas.oneshot.pytorch.supermodule._expression_utils import expression_expectation
    rng = np.random.default_rng(0)
    probs, weights = {}, {}
    for label, values in tiny_space.spec.choices().items():
        raw = rng.random(len(values)) + 0.1
        raw /= raw.sum()
        weights[label] = {v: float(r) for v, r in zip(values, raw)}
        probs[label] = {v: torch.tensor(float(r), dtype=torch.float64, requires_grad=True) for v, r in zip(values, raw)}
    fast = profiler.expectation(probs)
    generic = expression_expectation(profiler.expression, weights)
    assert float(fast.detach()) == pytest.approx(generic, rel=1e-9)
    fast.backward()
    grads = {label: [float(p.grad) if p.grad is not None else 0.0 for p in d.values()] for label, d in probs.items()}
    assert all(g == 0.0 for g in grads['router/threshold'])  # the threshold is not a cost (the rate p is given)
    # wider and deeper choices cost more: the gradient says so
    assert grads['trunk/s2/width'][1] > grads['trunk/s2/width'][0]
    assert grads['trunk/s1/depth'][1] > grads['trunk/s1/depth'][0]
    with pytest.raises(KeyError, match='little/fork'):
        profiler.expectation({k: v for k, v in probs.items() if k != 'little/fork'})


def test_filter_rejects_invalid_and_over_budget_samples(tiny_space, profiler):
    values = [profiler.profile(s) for s in _valid_samples(tiny_space, 40)]
    budget = float(np.quantile(values, 0.5))
    accept = cost_filter(profiler, max_value=budget)
    for sample in _valid_samples(tiny_space, 40, start=100):
        assert accept(sample) == (profiler.profile(sample) <= budget)
    # an invalid pair: the smallest trunk with the largest little network after the last fork
    spec = tiny_space.spec
    invalid = dict(spec.smallest())
    invalid.update({label: max(values) for label, values in spec.choices().items()
                    if label.startswith('little/') and label != 'little/fork'})
    invalid['little/fork'] = max(spec.forks)
    assert spec.check(invalid) is not None
    assert accept(invalid) is False
    with pytest.raises(InvalidSampleError):
        profiler.profile(invalid)


def _digits_loaders(n=128, batch=16):
    from nni.nas.evaluator.pytorch import DataLoader

    from nni_bigLittle.data import load_dataset
    splits = load_dataset('digits')
    data = torch.utils.data.TensorDataset(splits.train.images[:n].float() / 255, splits.train.labels[:n])
    return DataLoader(data, batch_size=batch), DataLoader(data, batch_size=batch)


def test_random_one_shot_with_our_filter_never_trains_over_budget(tiny_space, profiler, tmp_path):
    """A real NNI one-shot experiment: every subnet RandomOneShot trains is within the latency budget."""
    import torch.nn.functional as F
    from nni.nas.evaluator.pytorch import Lightning, LightningModule, Trainer
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy import RandomOneShot

    accepted = []

    def recording_filter(sample):
        ok = accept(sample)
        if ok:
            accepted.append(dict(sample))
        return ok

    class PairModule(LightningModule):
        def __init__(self):
            super().__init__()
            self.trained = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            # RandomOneShot resampled (through the filter) just before this step: the last accepted sample
            # is the subnet the supernet runs now; its stages confirm it
            sample = accepted[-1]
            stages = [m for m in self.model.trunk]
            assert [s._active_depth for s in stages] == [sample[f'trunk/s{i}/depth'] for i in range(len(stages))]
            self.trained.append(sample)
            little, big = self.model(x)
            return F.cross_entropy(little, y) + F.cross_entropy(big, y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log('val_acc', (self.model(x)[1].argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    space = copy.deepcopy(tiny_space)
    values = [profiler.profile(s) for s in _valid_samples(space, 60)]
    budget = float(np.quantile(values, 0.4))
    module = PairModule()
    train, val = _digits_loaders()
    evaluator = Lightning(module, Trainer(max_steps=12, logger=False, enable_checkpointing=False,
                                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1),
                          train_dataloaders=train, val_dataloaders=val)
    config = NasExperimentConfig('sequential', 'raw', 'local')
    config.experiment_working_directory = str(tmp_path)
    accept = cost_filter(profiler, max_value=budget)
    experiment = NasExperiment(space, evaluator, RandomOneShot(filter=recording_filter), config)
    experiment.run()
    assert len(module.trained) == 12
    for sample in module.trained:
        assert space.spec.check(sample) is None
        assert profiler.profile(sample) <= budget
    experiment.stop()


def test_multi_trial_filter_middleware_submits_only_in_budget_models(tiny_space, profiler, tmp_path):
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy import Random
    from nni.nas.strategy.middleware import Chain, Filter

    values = [profiler.profile(s) for s in _valid_samples(tiny_space, 60)]
    budget = float(np.quantile(values, 0.4))
    evaluated = []

    def evaluate(model):  # the frozen BigLittleModel of each submitted sample
        evaluated.append(model.sample)
        nni.report_final_result(0.0)

    config = NasExperimentConfig('sequential', 'raw', 'local')  # raw: the evaluator gets space.freeze(sample)
    config.execution_engine.max_model_count = 5
    config.experiment_working_directory = str(tmp_path)
    experiment = NasExperiment(copy.deepcopy(tiny_space), FunctionalEvaluator(evaluate),
                               Chain(Random(seed=0), Filter(cost_filter(profiler, max_value=budget))), config)
    experiment.run()
    assert len(evaluated) == 5
    assert all(profiler.profile(s) <= budget for s in evaluated)
    experiment.stop()


def test_expected_cost_penalty_is_an_nni_expectation_penalty(tiny_space, profiler):
    from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
    penalty = ExpectedCostPenalty(profiler, baseline=1.0, scale=0.5, nonlinear='linear')
    assert isinstance(penalty, ExpectationProfilerPenalty)
    probs = {label: {v: torch.tensor(1.0 / len(values), requires_grad=True) for v in values}
             for label, values in tiny_space.spec.choices().items()}
    loss, details = penalty(torch.tensor(2.0), probs)
    expected = float(profiler.expectation({k: {v: float(p) for v, p in d.items()} for k, d in probs.items()}))
    assert float(details['penalty']) == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(2.0 + 0.5 * (expected - 1.0), rel=1e-5)
    loss.backward()
    assert probs['trunk/s0/width'][1.0].grad is not None


def test_predictor_works_inside_nni_nn_meter_profiler(pi4):
    """nn-Meter's interface: NNI's NnMeterProfiler calls predictor.predict(onnx_model, model_type='onnx')."""
    pytest.importorskip('nn_meter', reason='nn-meter is an optional extra: pip install -e ".[nnmeter]"')
    pytest.importorskip('onnxsim', reason='NNI\'s NnMeterProfiler needs onnxsim')
    from torch import nn
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from nni_bigLittle.hw_predictors.nni_bridge import nn_meter_profiler

    from nni_bigLittle.nn.arch import BlockConfig
    from nni_bigLittle.nn.ops import MBConv

    class SmallSpace(ModelSpace):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.block = LayerChoice({
                'k3e2': MBConv(BlockConfig(16, 24, 32, 3, 2, 1, 'relu', 0, False)),
                'k5e4': MBConv(BlockConfig(16, 24, 64, 5, 4, 1, 'relu', 0, False)),
                'k7e6': MBConv(BlockConfig(16, 24, 96, 7, 6, 1, 'relu', 0, False)),
            }, label='block')
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            return self.fc(self.pool(self.block(self.stem(x))).flatten(1))

    predictor = pi4.without_overhead()
    profiler = nn_meter_profiler(SmallSpace(), torch.randn(1, 3, 32, 32), pi4)  # NNI's NnMeterProfiler
    costs = {op: profiler.profile({'block': op}) for op in ('k3e2', 'k5e4', 'k7e6')}
    assert 0 < costs['k3e2'] < costs['k5e4'] < costs['k7e6']
    # NNI cuts the space into leaf modules (conv, batch norm, activation separately) and predicts each
    # ONNX export: the ranking agrees with our block-level prediction of the same three choices
    direct = {op: predictor.predict(m.eval(), 'torch', input_shape=(1, 16, 16, 16))
              for op, m in ((name, SmallSpace().block[name]) for name in ('k3e2', 'k5e4', 'k7e6'))}
    assert sorted(costs, key=costs.get) == sorted(direct, key=direct.get)


@pytest.mark.parametrize('strategy_name', ['DARTS', 'GumbelDARTS', 'Proxyless'])
def test_differentiable_strategies_with_our_penalty_move_towards_cheaper_networks(tiny_space, profiler, tmp_path,
                                                                                  strategy_name):
    """NNI's DARTS-family strategies, unmodified, with ExpectedCostPenalty: a few real steps lower the
    expected latency of the architecture distribution, and the exported pair is valid."""
    import nni.nas.strategy  # noqa: F401 - import order: see conftest
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.experiment import NasExperiment
    from nni.nas.oneshot.pytorch import strategy as oneshot
    from test_nni_differentiable import BothHeads, _data

    from nni_bigLittle.search_spaces.relaxation import export_probs

    space = copy.deepcopy(tiny_space).train()
    uniform = {label: {v: 1.0 / len(values) for v in values} for label, values in space.spec.choices().items()}
    start = float(profiler.expectation(uniform))
    penalty = ExpectedCostPenalty(profiler, baseline=0.5 * start, scale=20.0, nonlinear='positive')
    strategy = getattr(oneshot, strategy_name)(arc_learning_rate=0.2, penalty=penalty)
    trainer = Trainer(max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator='cpu', num_sanity_val_steps=0)
    evaluator = Lightning(BothHeads(), trainer, train_dataloaders=DataLoader(_data(16, 0), batch_size=4),
                          val_dataloaders=DataLoader(_data(16, 1), batch_size=4))
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path)
    try:
        experiment.run()
        sample = experiment.export_top_models(formatter='dict')[0]
    finally:
        experiment.stop()
    with torch.no_grad():
        probs = {label: {v: float(p) for v, p in d.items()} for label, d in export_probs(space).items()}
    assert float(profiler.expectation(probs)) < start
    space.spec.validate(sample)
    assert profiler.profile(sample) > 0
