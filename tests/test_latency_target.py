"""Latency-target search (LightNAS): real searches on digits with a small space, the Lagrange
multiplier's direction, the out-of-range check and the export's projection."""
import copy

import pytest
import torch

from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
from nni.nas.experiment import NasExperiment

from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
from nni_bigLittle.strategies.latency_target import (
    DEFAULT_LAM_LR, FROZEN_IN_PROJECTION, LagrangeLatencyPenalty, LatencyTargetSearch, LatencyTargetTask,
    TargetOutOfRangeError, latency_range, project_to_target, search_latency_target, temper)

EPOCHS, STEPS, BATCH = 3, 8, 16  # 24 architecture steps per search


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope='module')
def profiler(tiny_space):
    return BigLittleCostProfiler(tiny_space, 'raspberry_pi_4', escalation_rate=0.3, build_expression=False)


@pytest.fixture(scope='module')
def achievable(profiler):
    return latency_range(profiler)


def _loaders():
    from nni_bigLittle.data import load_dataset
    splits = load_dataset('digits')
    n = STEPS * BATCH
    train = torch.utils.data.Subset(splits.train, range(n))
    val = torch.utils.data.Subset(splits.val, range(n))
    return (DataLoader(train, batch_size=BATCH, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(0)),
            DataLoader(val, batch_size=BATCH, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(1)))


def _uniform_latency(profiler):
    return float(profiler.expectation({label: {v: 1.0 / len(values) for v in values}
                                       for label, values in profiler.spec.choices().items()}))


@pytest.fixture(scope='module')
def low_search(tiny_space, profiler, achievable, tmp_path_factory):
    """Through NasExperiment: a target near the cheap end, below the uniform distribution's latency."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    target = achievable.low + 0.05 * (achievable.high - achievable.low)
    space = copy.deepcopy(tiny_space).train()
    strategy = LatencyTargetSearch(profiler, target)
    trainer = Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator='cpu', num_sanity_val_steps=0)
    train, val = _loaders()
    evaluator = Lightning(LatencyTargetTask(), trainer, train_dataloaders=train, val_dataloaders=val)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path_factory.mktemp('low'))
    try:
        experiment.run()
        exported = experiment.export_top_models(formatter='dict')[0]
    finally:
        experiment.stop()
    return strategy.result(), exported, trainer, space


@pytest.fixture(scope='module')
def high_search(tiny_space, profiler, achievable):
    """Through the function entry point: a target near the expensive end, above the uniform latency."""
    torch.set_num_threads(1)
    target = achievable.low + 0.75 * (achievable.high - achievable.low)
    train, val = _loaders()
    return search_latency_target(copy.deepcopy(tiny_space).train(), train, val, target, device=profiler,
                                 epochs=EPOCHS, seed=0)


def test_range_covers_smallest_and_largest(tiny_space, profiler, achievable):
    assert achievable.low <= profiler.profile(tiny_space.smallest())
    assert achievable.high >= profiler.profile(tiny_space.largest())
    for sample, value in ((achievable.low_sample, achievable.low), (achievable.high_sample, achievable.high)):
        tiny_space.spec.validate(sample)
        assert profiler.profile(sample) == pytest.approx(value)


@pytest.mark.parametrize('search', ['low_search', 'high_search'])
def test_one_search_lands_within_five_percent(search, request, tiny_space, profiler):
    result = request.getfixturevalue(search)
    if isinstance(result, tuple):
        result, exported, _, _ = result
        assert exported == result.sample  # NNI's export is the projected sample
    target = result.target
    tiny_space.spec.validate(result.sample)
    assert result.latency == pytest.approx(profiler.profile(result.sample))
    assert abs(result.latency / target - 1) <= 0.05 and result.within_tolerance
    assert result.relative_error == pytest.approx(result.latency / target - 1)
    # the targets were chosen out of reach of the untrained distribution: the search had to move it
    assert abs(_uniform_latency(profiler) / target - 1) > 0.05
    # the constrained latency (the expected latency under the annealed temperature) approached the target
    first, last = result.steps[0], result.history[-1]
    assert first['latency_temperature'] == 1.0 and last['latency_temperature'] == pytest.approx(0.1)
    assert abs(last['tempered_latency'] / target - 1) < abs(first['violation'])
    assert len(result.history) == EPOCHS and len(result.steps) == EPOCHS * STEPS
    # the projection changes architecture labels only, and only when the argmax missed the tolerance
    if result.repaired:
        assert abs(result.argmax_latency / target - 1) > 0.05
        assert not set(result.repaired) & set(FROZEN_IN_PROJECTION)
    else:
        assert result.sample == result.argmax_sample


def test_lam_ascends_on_the_constraint_violation(low_search, high_search, profiler):
    low, high = low_search[0], high_search
    # start: the expected latency is above the low target and below the high one
    assert low.steps[0]['violation'] > 0 > high.steps[0]['violation']
    assert low.steps[0]['lam'] > 0 > high.steps[0]['lam']
    assert low.history[0]['lam'] > 0 > high.history[0]['lam']
    for result in (low, high):
        for step in result.steps:  # gradient ascent: lam moves with the sign of LAT / T - 1, by lam_lr times it
            assert step['lam'] - step['lam_before'] == pytest.approx(DEFAULT_LAM_LR * step['violation'])
        assert result.lam == pytest.approx(result.steps[-1]['lam'])


def test_per_epoch_records_reach_the_lightning_logger(low_search):
    result, _, trainer, _ = low_search
    metrics = trainer.callback_metrics
    for name in ('expected_latency', 'tempered_latency', 'argmax_latency', 'lam'):
        assert f'latency_target/{name}' in metrics
    assert float(metrics['latency_target/lam']) == pytest.approx(result.history[-1]['lam'], rel=1e-5)
    assert float(metrics['latency_target/expected_latency']) == pytest.approx(result.history[-1]['expected_latency'],
                                                                              rel=1e-5)


def test_targets_outside_the_range_raise_before_training(tiny_space, profiler, achievable, tmp_path):
    for target in (0.95 * achievable.low, 1.05 * achievable.high):
        with pytest.raises(TargetOutOfRangeError, match='outside the achievable range') as info:
            LatencyTargetSearch(profiler, target)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match='positive'):
        LatencyTargetSearch(profiler, -1.0)

    # by device name: the profiler is built, and the target checked, when NNI hands the space over
    calls = []

    class Recording(LatencyTargetTask):
        def training_step(self, batch, batch_idx):
            calls.append(batch_idx)
            return super().training_step(batch, batch_idx)

    space = copy.deepcopy(tiny_space)
    train, val = _loaders()
    evaluator = Lightning(Recording(), Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                                               enable_progress_bar=False, enable_model_summary=False),
                          train_dataloaders=train, val_dataloaders=val)
    experiment = NasExperiment(space, evaluator, LatencyTargetSearch('raspberry_pi_4', 1.05 * achievable.high))
    experiment.config.experiment_working_directory = str(tmp_path)
    try:
        with pytest.raises(ValueError, match='outside the achievable range'):
            experiment.run()
    finally:
        experiment.stop()
    assert calls == [] and not hasattr(space, '_relaxed_for')  # nothing trained, the space not relaxed
    with pytest.raises(ValueError, match='outside the achievable range'):
        search_latency_target(copy.deepcopy(tiny_space), train, val, 0.9 * achievable.low, epochs=1)


def test_penalty_is_the_lightnas_term_with_gradient_ascent_on_lam(tiny_space, profiler):
    probs = {label: {v: torch.tensor(1.0 / len(values), dtype=torch.float64, requires_grad=True) for v in values}
             for label, values in tiny_space.spec.choices().items()}
    latency = _uniform_latency(profiler)
    target = 0.9 * latency
    penalty = LagrangeLatencyPenalty(profiler, target, lam_lr=0.5, lam_init=0.25)
    loss, details = penalty(torch.tensor(1.0), probs)
    assert float(loss.detach()) == pytest.approx(1.0 + 0.25 * (latency / target - 1), rel=1e-6)
    assert float(penalty.lam) == pytest.approx(0.25 + 0.5 * (latency / target - 1))
    assert float(details['latency']) == pytest.approx(latency, rel=1e-6)
    loss.backward()  # the gradient reaches the probabilities (hence alpha), scaled by the old lam
    assert probs['trunk/s0/width'][1.0].grad > probs['trunk/s0/width'][0.5].grad
    assert 'lam' in dict(penalty.named_buffers())  # saved with the one-shot module's state dict

    # damping: the augmented-Lagrangian term rho / 2 * g ** 2 (zero, with its gradient, on the target)
    damped = LagrangeLatencyPenalty(profiler, target, lam_lr=0.5, lam_init=0.25, damping=8.0)
    g = latency / target - 1
    loss, _ = damped(torch.tensor(1.0), {k: {v: p.detach() for v, p in d.items()} for k, d in probs.items()})
    assert float(loss) == pytest.approx(1.0 + 0.25 * g + 4.0 * g ** 2, rel=1e-6)
    assert float(damped.lam) == pytest.approx(0.25 + 0.5 * g)  # the ascent on lam is unchanged


def test_tempered_latency_tends_to_the_argmax_latency(tiny_space, profiler):
    generator = torch.Generator().manual_seed(0)
    probs = {}
    for label, values in tiny_space.spec.choices().items():
        p = torch.softmax(torch.randn(len(values), generator=generator, dtype=torch.float64), 0)
        probs[label] = {v: p[i] for i, v in enumerate(values)}
    assert temper(probs, 1.0) == probs
    # the latency of the argmax of every label (one-hot distributions; the pair need not be valid here)
    one_hot = {label: {v: float(v == max(dist, key=lambda k: float(dist[k]))) for v in dist}
               for label, dist in probs.items()}
    argmax_latency = float(profiler.expectation(one_hot))
    errors = []
    for t in (1.0, 0.3, 0.1, 0.01):
        tempered = temper(probs, t)
        assert all(float(sum(d.values())) == pytest.approx(1.0) for d in tempered.values())
        errors.append(abs(float(profiler.expectation(tempered)) - argmax_latency))
    assert errors[-1] < min(errors[:-1]) and errors[-1] < 1e-6 * argmax_latency


def test_projection_is_deterministic_and_lands(tiny_space, profiler, achievable):
    spec = tiny_space.spec
    sample = dict(achievable.high_sample)
    target = achievable.low + 0.3 * (achievable.high - achievable.low)
    flat = {label: {v: 0.0 for v in values} for label, values in spec.choices().items()}
    projected, changes = project_to_target(profiler, sample, target, 0.05, flat)
    assert abs(profiler.profile(projected) / target - 1) <= 0.025  # aims at half the tolerance
    assert project_to_target(profiler, sample, target, 0.05, flat) == (projected, changes)
    assert changes and not set(changes) & set(FROZEN_IN_PROJECTION)
    assert all(sample[label] == old and projected[label] == new for label, (old, new) in changes.items())
    spec.validate(projected)
    # preferences steer it: forbid (in preference) the moves it made first, and it takes others
    steer = copy.deepcopy(flat)
    for label, (old, new) in changes.items():
        steer[label][new] = -50.0
    other, other_changes = project_to_target(profiler, sample, target, 0.05, steer)
    assert abs(profiler.profile(other) / target - 1) <= 0.05 and other_changes != changes
    # a sample already within tolerance is returned as is
    assert project_to_target(profiler, projected, target, 0.05, flat) == (projected, {})
