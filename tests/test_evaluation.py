"""Evaluating big/little pairs: operating points and metrics against hand computations, supernet
inheritance with BN re-calibration, and NNI's own multi-trial strategies (RegularizedEvolution,
Random, TPE) running unmodified on BigLittleSpace through FunctionalEvaluator(evaluate_pair)."""
import copy
import functools
import json
import random

import numpy as np
import pytest
import torch

import nni_bigLittle._nni_compat  # noqa: F401
import nni.nas.strategy  # noqa: F401  (import order, see conftest)

from nni_bigLittle.nn.arch import RouterConfig
from nni_bigLittle.nn.costs import arch_costs
from nni_bigLittle.evaluation import (
    PairOutputs, collect_outputs, evaluate_pair, load_supernet, operating_point, pair_metrics, subnet_outputs,
)
from nni_bigLittle.nn.router import CalibrationError, Router

from helpers import TINY, digits_batches, trained_tiny_supernet

@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # a long CPU job shares this machine


def _hand_outputs():
    """5 inputs, 3 classes; little right on 0, 2, 4; big right on 0, 1, 3; learned confidence given."""
    targets = torch.tensor([0, 1, 2, 0, 1])
    little = torch.tensor([[5., 0, 0], [3, 0, 0], [0, 0, 4], [0, 2, 0], [0, 6, 0]])
    big = torch.tensor([[4., 0, 0], [0, 3, 0], [2, 0, 0], [7, 0, 0], [0, 0, 1]])
    return PairOutputs(little, None, big, targets, learned_confidence=torch.tensor([0.9, 0.3, 0.8, 0.2, 0.6]))


def test_operating_point_matches_hand_computation():
    out = _hand_outputs()
    # tau = 0.5 escalates inputs 1 and 3 (confidence 0.3, 0.2): big right on both, little right on 0, 2, 4
    point = operating_point(out, 'learned', threshold=0.5)
    assert point.escalation_rate == pytest.approx(2 / 5)
    assert point.accuracy == pytest.approx(5 / 5)
    assert point.little_acc == pytest.approx(3 / 5) and point.big_acc == pytest.approx(3 / 5)
    # tau = 0.85 escalates 1, 2, 3, 4: little on 0 (right), big on 1 (right), 2 (wrong), 3 (right), 4 (wrong)
    point = operating_point(out, 'learned', threshold=0.85)
    assert (point.escalation_rate, point.accuracy) == (pytest.approx(4 / 5), pytest.approx(3 / 5))
    assert operating_point(out, 'learned', threshold=1.0).accuracy == pytest.approx(3 / 5)  # all escalated
    assert operating_point(out, 'learned', threshold=0.0).escalation_rate == 0.0
    # calibrated: 40 % of 5 = the two least confident; threshold halfway between 0.3 and 0.6
    point = operating_point(out, 'learned', target_escalation=0.4)
    assert point.threshold == pytest.approx(0.45) and point.escalation_rate == pytest.approx(0.4)
    # target accuracy 0.8: escalating input 3 alone (k = 1, tau = 0.25) gives 4/5
    point = operating_point(out, 'learned', target_accuracy=0.8)
    assert point.threshold == pytest.approx(0.25) and point.accuracy == pytest.approx(0.8)
    with pytest.raises(CalibrationError):
        operating_point(out, 'learned', target_accuracy=1.01)
    # max-softmax by hand: softmax of [5,0,0] etc.
    probs = torch.softmax(out.little_logits, 1).max(1).values.numpy()
    point = operating_point(out, 'max_softmax', threshold=0.9)
    escalated = probs < 0.9
    hand = np.where(escalated, out.big_correct, out.little_correct).mean()
    assert point.escalation_rate == pytest.approx(escalated.mean()) and point.accuracy == pytest.approx(hand)
    # a frozen Router: its policy and its own threshold
    router = Router(RouterConfig('max_softmax', 0.9, 8, 4))
    assert operating_point(out, router) == point
    with pytest.raises(ValueError, match='at most one'):
        operating_point(out, 'learned', threshold=0.5, target_escalation=0.1)
    with pytest.raises(ValueError, match='threshold'):
        operating_point(out, 'entropy')
    with pytest.raises(ValueError, match='Unknown router policy'):
        operating_point(out, 'softmax', threshold=0.5)


def test_pair_metrics_against_hand_computation(tiny_space):
    from nni_bigLittle.hw_predictors.devices import load_predictor
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    spec = tiny_space.spec
    sample = tiny_space.random(random_state=5)
    sample['router/policy'] = 'margin'
    generator = torch.Generator().manual_seed(0)
    n = 40
    out = PairOutputs(torch.randn(n, 10, generator=generator) * 3, torch.randn(n, 16, generator=generator),
                      torch.randn(n, 10, generator=generator) * 3, torch.randint(0, 10, (n,), generator=generator))
    devices = ('raspberry_pi_4', 'jetson_nano_trt_fp32')
    metrics = pair_metrics(out, sample, spec, target_escalation=0.25, devices=devices, energy=True)
    json.dumps(metrics)
    assert all(type(v) is float for v in metrics.values())
    top2 = torch.softmax(out.little_logits, 1).topk(2, 1).values
    conf = (top2[:, 0] - top2[:, 1]).numpy()
    tau = metrics['threshold']
    escalated = conf < tau
    assert escalated.sum() == 10  # 25 % of 40
    little_ok = (out.little_logits.argmax(1) == out.targets).numpy()
    big_ok = (out.big_logits.argmax(1) == out.targets).numpy()
    assert metrics['accuracy'] == pytest.approx(np.where(escalated, big_ok, little_ok).mean())
    assert metrics['default'] == metrics['accuracy']
    assert metrics['little_acc'] == pytest.approx(little_ok.mean())
    assert metrics['big_acc'] == pytest.approx(big_ok.mean())
    assert metrics['escalation_rate'] == pytest.approx(0.25)
    costs = arch_costs(spec.decode(sample))
    assert metrics['expected_macs'] == pytest.approx((costs.little_macs + 0.25 * costs.big_tail.macs) / 1e6)
    for device in devices:
        profiler = BigLittleCostProfiler(spec, load_predictor(device), build_expression=False)
        assert metrics[f'latency_ms_{device}'] == pytest.approx(profiler.breakdown(sample, 0.25)['expected'])
    energy = BigLittleCostProfiler(spec, load_predictor('jetson_nano_trt_fp32', 'energy'), build_expression=False)
    assert metrics['energy_mj_jetson_nano_trt_fp32'] == pytest.approx(energy.breakdown(sample, 0.25)['expected'])
    assert 'energy_mj_raspberry_pi_4' not in metrics  # no energy predictor for the Pi
    # MnasNet's soft constraint: acc * (lat / T) ** -0.07
    target = metrics['latency_ms_raspberry_pi_4'] / 2
    rewarded = pair_metrics(out, sample, spec, target_escalation=0.25, devices=devices, latency_target=target)
    assert rewarded['default'] == pytest.approx(metrics['accuracy'] * 2.0 ** -0.07)
    # the frozen pair's ArchConfig works without the spec; the sample's own threshold when no target is given
    own = pair_metrics(out, spec.decode(sample), devices=devices)
    assert own['threshold'] == sample['router/threshold']
    assert own['latency_ms_raspberry_pi_4'] == pytest.approx(
        profiler_for(spec, 'raspberry_pi_4').breakdown(sample, own['escalation_rate'])['expected'])
    with pytest.raises(ValueError, match='latency_target'):
        pair_metrics(out, sample, spec, target_escalation=0.25, devices=devices, latency_target=1.0,
                     latency_device='jetson_tx2_tvm')
    with pytest.raises(ValueError):
        pair_metrics(out, {**sample, 'little/fork': 99}, spec, target_escalation=0.25)


def profiler_for(spec, device):
    from nni_bigLittle.hw_predictors.devices import load_predictor
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    return BigLittleCostProfiler(spec, load_predictor(device), build_expression=False)


def test_subnet_outputs_recalibrate_batchnorm_and_are_deterministic():
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    supernet = trained_tiny_supernet()
    calib, val = digits_batches()
    sample = supernet.random(random_state=3)
    sample['router/policy'] = 'entropy'
    first = subnet_outputs(supernet, sample, calib, val)
    second = subnet_outputs(supernet, sample, calib, val)
    assert torch.equal(first.little_logits, second.little_logits) and torch.equal(first.big_logits, second.big_logits)
    assert len(first) == len(val.dataset)
    # = freeze + BN re-calibration + forward, by hand
    model = recalibrate_batchnorm(supernet.freeze(sample), calib).eval()
    x, y = next(iter(val))
    with torch.no_grad():
        little, big = model(x)
    assert torch.allclose(first.little_logits[:len(y)], little, atol=1e-5)
    assert torch.allclose(first.big_logits[:len(y)], big, atol=1e-5)
    # the supernet's learned router comes along although the sample's policy is entropy
    assert first.router_mlp is not None
    compact = first.compact()
    assert compact.little_features is None
    assert np.allclose(compact.confidence('learned'), first.confidence('learned'), atol=1e-6)
    # collect_outputs leaves the model's mode as it was
    model.train()
    collect_outputs(model, val)
    assert model.training


def test_evaluate_pair_trains_from_scratch_and_reports(tiny_space, monkeypatch):
    import nni
    reported = {'intermediate': [], 'final': []}
    monkeypatch.setattr(nni, 'report_intermediate_result', lambda m: reported['intermediate'].append(m))
    monkeypatch.setattr(nni, 'report_final_result', lambda m: reported['final'].append(m))
    sample = tiny_space.random(random_state=1)
    model = copy.deepcopy(tiny_space).freeze(sample)
    before = [p.detach().clone() for p in model.parameters()]
    rng_state = torch.random.get_rng_state()
    metrics = evaluate_pair(model, epochs=2, limit_train_batches=2, limit_val_batches=2, batch_size=32,
                            devices='raspberry_pi_4', target_escalation=0.25)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global RNG is left alone
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # trained in place
    assert [m['epoch'] for m in reported['intermediate']] == [1.0, 2.0]
    assert reported['final'] == [metrics]
    # 64 validation inputs: at most 16 escalated (fewer when confidences tie, as in a barely trained little net)
    assert 0.0 <= metrics['escalation_rate'] <= 0.25
    assert {'default', 'accuracy', 'little_acc', 'big_acc', 'threshold', 'expected_macs',
            'latency_ms_raspberry_pi_4', 'train_loss'} <= set(metrics)
    # the same call on the same fresh weights gives the same numbers (seeded)
    again = evaluate_pair(copy.deepcopy(tiny_space).freeze(sample), epochs=2, limit_train_batches=2,
                          limit_val_batches=2, batch_size=32, devices='raspberry_pi_4', target_escalation=0.25,
                          report=False)
    assert again == metrics


def test_evaluate_pair_inherits_supernet_weights(tmp_path, monkeypatch):
    import nni
    finals = []
    monkeypatch.setattr(nni, 'report_final_result', finals.append)
    supernet = trained_tiny_supernet()
    path = tmp_path / 'supernet.pt'
    supernet.save(path)
    assert load_supernet(path) is load_supernet(str(path))  # loaded once per process
    sample = supernet.random(random_state=11)
    model = copy.deepcopy(supernet).freeze(sample)
    metrics = evaluate_pair(model, supernet=path, target_escalation=None, energy=True,
                            devices=('raspberry_pi_4', 'jetson_nano_trt_fp32'), latency_target=5.0)
    assert finals == [metrics]
    assert metrics['threshold'] == sample['router/threshold']  # no target: the sample's own threshold
    assert metrics['default'] == pytest.approx(
        metrics['accuracy'] * (metrics['latency_ms_raspberry_pi_4'] / 5.0) ** -0.07)
    assert 'energy_mj_jetson_nano_trt_fp32' in metrics
    again = evaluate_pair(model, supernet=path, target_escalation=None, energy=True,
                          devices=('raspberry_pi_4', 'jetson_nano_trt_fp32'), latency_target=5.0, report=False)
    assert again == metrics


def test_evaluate_pair_rejects_bad_arguments(tiny_space, tmp_path):
    model = tiny_space.freeze(tiny_space.random(random_state=2))
    with pytest.raises(ValueError, match='either supernet'):
        evaluate_pair(model, supernet=tmp_path / 'x.pt', epochs=1, report=False)
    with pytest.raises(FileNotFoundError, match='BigLittleSpace.save'):
        evaluate_pair(model, supernet=tmp_path / 'missing.pt', report=False)
    with pytest.raises(ValueError, match='epochs'):
        evaluate_pair(model, epochs=-1, report=False)
    with pytest.raises(ValueError, match='at most one'):
        evaluate_pair(model, target_escalation=0.2, target_accuracy=0.9, report=False)
    with pytest.raises(ValueError, match='raspberry_pi_5'):
        evaluate_pair(model, devices=('raspberry_pi_5',), report=False)
    with pytest.raises(ValueError, match='Unknown dataset'):
        evaluate_pair(model, dataset='mnist', report=False)
    with pytest.raises(ValueError, match='limit_val_batches'):
        evaluate_pair(model, limit_val_batches=0, report=False)
    with pytest.raises(TypeError, match='raw'):
        evaluate_pair(torch.nn.Linear(2, 2), report=False)


@pytest.fixture(scope='module')
def supernet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('supernet') / 'supernet.pt'
    trained_tiny_supernet().save(path)
    return path


@pytest.mark.parametrize('name', ['RegularizedEvolution', 'Random', 'TPE'])
def test_nni_multi_trial_strategies_run_unmodified_on_the_space(name, supernet_file, tmp_path, monkeypatch):
    """NNI's own strategies through NasExperiment with FunctionalEvaluator(evaluate_pair): dict metrics are
    reported and the exported sample is a valid pair."""
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas import strategy as nni_strategy

    reported = []
    original = nni.report_final_result

    def recording(metric):
        reported.append(metric)
        original(metric)

    monkeypatch.setattr(nni, 'report_final_result', recording)
    strategy = {'RegularizedEvolution': lambda: nni_strategy.RegularizedEvolution(population_size=3, sample_size=2,
                                                                                    seed=0),
                'Random': lambda: nni_strategy.Random(seed=0),
                'TPE': lambda: nni_strategy.TPE('maximize', seed=0)}[name]()
    if name == 'Random':  # train each pair briefly from scratch
        evaluator = FunctionalEvaluator(evaluate_pair, epochs=1, limit_train_batches=2, limit_val_batches=2,
                                        batch_size=32)
    else:  # inherit the supernet's weights
        evaluator = FunctionalEvaluator(evaluate_pair, supernet=str(supernet_file), calib_batches=2, batch_size=48)
    config = NasExperimentConfig('sequential', 'raw', 'local')
    config.execution_engine.max_model_count = 4
    config.experiment_working_directory = str(tmp_path)
    # TPE draws labels independently; the space repairs the invalid pairs it draws instead of stopping the run
    space = _fresh_space(repair_invalid=name == 'TPE')
    experiment = NasExperiment(space, evaluator, strategy, config)
    try:
        experiment.run()
        best = experiment.export_top_models(formatter='dict')[0]
        ranked = list(strategy.list_models())
    finally:
        experiment.stop()
    assert len(reported) == 4
    for metric in reported:
        assert isinstance(metric, dict) and {'default', 'accuracy', 'escalation_rate', 'latency_ms_raspberry_pi_4',
                                             'expected_macs'} <= set(metric)
        assert metric['default'] == metric['accuracy'] and 0.0 <= metric['accuracy'] <= 1.0
    assert space.spec.check(best) is None
    assert ranked[0].sample == best and ranked[0].metric == max(m['default'] for m in reported)


def _fresh_space(repair_invalid=False):
    """A fresh space with the supernet's spec (what a user builds the experiment on)."""
    from nni_bigLittle.search_spaces import BigLittleSpace
    return BigLittleSpace(**TINY, repair_invalid=repair_invalid)


def test_repair_invalid_space_freezes_the_repaired_pair_and_strict_space_refuses(tiny_space):
    import random
    from nni_bigLittle.search_spaces import InvalidSampleError
    from nni_bigLittle.search_spaces.spec import make_valid
    spec = tiny_space.spec
    rng = random.Random(0)
    invalid = next(s for s in ({k: rng.choice(v) for k, v in spec.choices().items()} for _ in range(1000))
                   if spec.check(s) is not None)
    strict = _fresh_space()
    assert isinstance(strict.check_contains(invalid), InvalidSampleError)
    with pytest.raises(InvalidSampleError, match='little network costs'):
        strict.freeze(invalid)
    lenient = _fresh_space(repair_invalid=True)
    assert lenient.check_contains(invalid) is None
    assert lenient.freeze(invalid).sample == make_valid(spec, invalid)
    assert lenient.check_contains({**invalid, 'little/fork': 99}) is not None  # out of range: not repairable
