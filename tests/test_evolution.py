"""Multi-objective evolution: NSGA-II sorting and crowding by hand, resume after an interruption,
single-budget mode, the search on a trained supernet (calibrated thresholds, a cache shared by two
devices) and MultiObjectiveEvolution as an NNI strategy in NasExperiment."""
import json
import math

import pytest
import torch

import nni_bigLittle._nni_compat  # noqa: F401
import nni.nas.strategy  # noqa: F401  (import order, see conftest)

from nni_bigLittle.nn.router import calibrate_threshold
from nni_bigLittle.strategies.evolution import (
    ESCALATION_LABEL, NSGA2, MultiObjectiveEvolution, SubnetCache, build_model, crowding_distance,
    non_dominated_sort, nsga2, sample_key, search_supernet, space_repair,
)
from helpers import TINY, digits_batches, trained_tiny_supernet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # a long CPU job shares this machine


def _dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_non_dominated_sort_and_crowding_by_hand():
    points = [(1, 5), (2, 3), (3, 1), (2, 4), (4, 4), (5, 5)]
    assert non_dominated_sort(points) == [[0, 1, 2], [3], [4], [5]]
    # front 0 sorted on either objective is 0, 1, 2: the ends are infinite, the middle (3-1)/2 + (5-1)/4 = 2
    assert crowding_distance(points, [0, 1, 2]) == {0: math.inf, 1: 2.0, 2: math.inf}
    four = [(0, 4), (1, 2), (3, 1), (4, 0)]
    assert crowding_distance(four, [0, 1, 2, 3]) == pytest.approx({0: math.inf, 1: 3 / 4 + 3 / 4,
                                                                    2: 3 / 4 + 2 / 4, 3: math.inf})
    # constrained domination: feasible first, then by violation, Pareto among the feasible
    assert non_dominated_sort(points, [0, 0, 1.0, 0, 0.5, 0]) == [[0, 1], [3], [5], [4], [2]]


def _toy_genes():
    return {f'x{i}': tuple(range(6)) for i in range(4)}


def _toy(genome):
    """Maximise 'gain' = x0 + x1, minimise 'cost' = x0 + 2*x1 + x2 + x3 (x in 0..5).

    Pareto front: x2 = x3 = 0 and x0 used before x1, i.e. cost = gain up to 5, then 2 * gain - 5 up to 10."""
    return {'gain': float(genome['x0'] + genome['x1']),
            'cost': float(genome['x0'] + 2 * genome['x1'] + genome['x2'] + genome['x3'])}


def test_nsga2_finds_the_pareto_front_of_a_known_problem():
    result = nsga2(_toy_genes(), _toy, [('gain', 'max'), ('cost', 'min')], population=16, generations=20, seed=3,
                   progress=False)
    front = [(r.metrics['gain'], r.metrics['cost']) for r in result.front]
    assert front == [(g, g if g <= 5 else 2 * g - 5) for g in range(10, -1, -1)]
    assert len({sample_key(r.sample) for r in result.records}) == len(result.records)  # each genome once
    assert len(result.records) <= 16 * 21
    values = [(-r.metrics['gain'], r.metrics['cost']) for r in result.front]
    assert not any(_dominates(a, b) for a in values for b in values)


class _Interrupt(Exception):
    pass


def test_nsga2_resumes_to_the_uninterrupted_result(tmp_path):
    args = dict(population=8, generations=6, seed=7, progress=False)
    objectives = [('gain', 'max'), ('cost', 'min')]
    straight = nsga2(_toy_genes(), _toy, objectives, **args)
    calls = []

    def flaky(genome):
        calls.append(genome)
        if len(calls) == 27:  # in the middle of generation 3
            raise _Interrupt
        return _toy(genome)

    path = tmp_path / 'ckpt.json'
    with pytest.raises(_Interrupt):
        nsga2(_toy_genes(), flaky, objectives, checkpoint=path, **args)
    saved = json.loads(path.read_text())
    assert 1 <= saved['state']['generation'] < 7
    resumed = nsga2(_toy_genes(), _toy, objectives, checkpoint=path, **args)
    assert 0 < resumed.evaluations < len(straight.records)
    assert [r.to_dict() for r in resumed.records] == [r.to_dict() for r in straight.records]
    assert [r.sample for r in resumed.front] == [r.sample for r in straight.front]
    # a finished run reloads without evaluating; other arguments are refused
    again = nsga2(_toy_genes(), _toy, objectives, checkpoint=path, **args)
    assert again.evaluations == 0 and [r.sample for r in again.front] == [r.sample for r in straight.front]
    with pytest.raises(ValueError, match='seed'):
        nsga2(_toy_genes(), _toy, objectives, checkpoint=path, **{**args, 'seed': 8})


def test_nsga2_single_budget_returns_the_best_feasible():
    result = nsga2(_toy_genes(), _toy, [('gain', 'max'), ('cost', 'min')], population=10, generations=8, seed=1,
                   constraint=('cost', 3.0), progress=False)
    feasible = [r for r in result.records if r.metrics['cost'] <= 3.0]
    assert result.best is not None and result.best.metrics['cost'] <= 3.0
    assert result.best.metrics['gain'] == max(r.metrics['gain'] for r in feasible) == 3.0
    assert all(r.metrics['cost'] <= 3.0 for r in result.front)
    with pytest.raises(ValueError, match='objective'):
        nsga2(_toy_genes(), _toy, [('gain', 'best')], population=4, generations=1, progress=False)
    with pytest.raises(ValueError, match='lack the objective'):
        nsga2(_toy_genes(), _toy, [('accuracy', 'max')], population=4, generations=1, progress=False)


def test_space_repair_mends_invalid_pairs(tiny_space):
    import random
    spec = tiny_space.spec
    invalid = dict(spec.smallest())
    invalid.update({label: max(values) for label, values in spec.choices().items()
                    if label.startswith('little/') and label != 'little/fork'})
    invalid['little/fork'] = max(spec.forks)
    assert spec.check(invalid) is not None
    genome = {k: v for k, v in invalid.items() if k != 'router/threshold'}
    genome[ESCALATION_LABEL] = 0.2
    repaired = space_repair(spec, extra_labels=[ESCALATION_LABEL])(genome, random.Random(0))
    assert repaired[ESCALATION_LABEL] == 0.2
    assert all(repaired[k] == genome[k] for k in genome if not k.startswith('little/'))  # trunk kept
    sample = {k: v for k, v in repaired.items() if k != ESCALATION_LABEL}
    assert spec.check({**sample, 'router/threshold': spec.threshold_choices[0]}) is None


def test_search_supernet_front_calibration_and_shared_cache(tmp_path, monkeypatch):
    import nni_bigLittle.evaluation.pairs as evaluation
    supernet = trained_tiny_supernet()
    calib, val = digits_batches()
    passes = []
    real = evaluation.collect_outputs
    monkeypatch.setattr(evaluation, 'collect_outputs', lambda model, loader: passes.append(1) or real(model, loader))
    cache = SubnetCache(supernet, calib, val)
    grid = (0.0, 0.1, 0.2, 0.3, 0.4)
    kwargs = dict(population=6, generations=2, escalation_grid=grid, seed=0, cache=cache, progress=False)
    results = search_supernet(supernet, calib, val, device=['raspberry_pi_4', 'jetson_nano_trt_fp32'],
                              run_dir=tmp_path, **kwargs)
    assert len(passes) == cache.computed == len(cache)
    pi, nano = results['raspberry_pi_4'], results['jetson_nano_trt_fp32']
    # the second device's search reused the first's forward passes: its whole first generation (same seed,
    # same genomes) and more came from the cache
    assert cache.computed < pi.evaluations + nano.evaluations
    assert cache.hits >= 6
    n = len(val.dataset)
    for result, key in ((pi, 'latency_ms_raspberry_pi_4'), (nano, 'latency_ms_jetson_nano_trt_fp32')):
        assert result.objective == key and result.front
        points = [(-r['accuracy'], r[key]) for r in result.front]
        assert not any(_dominates(a, b) for a in points for b in points)
        # no evaluated pair dominates a front member
        everything = [(-r['accuracy'], r[key]) for r in result.records]
        assert not any(_dominates(a, b) for a in everything for b in points)
        for record in result.front:
            assert record['target_escalation'] in grid
            assert supernet.spec.check(record['sample']) is None
            outputs = evaluation.subnet_outputs(supernet, record['sample'], calib, val)
            confidence = outputs.confidence(record['policy'])
            calibrated = calibrate_threshold(confidence, target_escalation=record['target_escalation'])
            assert record['threshold'] == pytest.approx(calibrated.threshold)
            assert record['escalation_rate'] == pytest.approx(calibrated.escalation_rate)
            assert record['escalation_rate'] <= round(record['target_escalation'] * n) / n + 1e-12
        for name in ('front.json', 'front.csv', 'history.csv', 'checkpoint.json'):
            assert (tmp_path / result.device / name).is_file()
    summary = json.loads((tmp_path / 'raspberry_pi_4' / 'front.json').read_text())
    assert len(summary['front']) == len(pi.front)
    # the deployable model of a front record: supernet weights, calibrated threshold
    model = build_model(supernet, pi.front[0], calib)
    assert model.router.threshold == pi.front[0]['threshold']
    # re-running resumes from the checkpoint: nothing evaluated again
    before = cache.computed
    again = search_supernet(supernet, calib, val, device='raspberry_pi_4', run_dir=tmp_path / 'raspberry_pi_4',
                            **kwargs)
    assert again.evaluations == 0 and cache.computed == before
    assert [r['sample'] for r in again.front] == [r['sample'] for r in pi.front]


def test_search_supernet_single_budget_mode():
    supernet = trained_tiny_supernet()
    calib, val = digits_batches()
    cache = SubnetCache(supernet, calib, val)
    free = search_supernet(supernet, calib, val, metric='macs', population=6, generations=1, cache=cache,
                           escalation_grid=(0.0, 0.2, 0.4), progress=False)
    costs = sorted(r['expected_macs'] for r in free.records)
    budget = costs[len(costs) // 2]
    result = search_supernet(supernet, calib, val, metric='macs', population=6, generations=1, cache=cache,
                             escalation_grid=(0.0, 0.2, 0.4), budget=budget, progress=False)
    assert result.best is not None and result.best['expected_macs'] <= budget
    feasible = [r for r in result.records if r['expected_macs'] <= budget]
    assert result.best['accuracy'] == max(r['accuracy'] for r in feasible)
    with pytest.raises(ValueError, match='energy'):
        search_supernet(supernet, calib, val, metric='energy', device='raspberry_pi_4', cache=cache, progress=False)
    with pytest.raises(ValueError, match='metric'):
        search_supernet(supernet, calib, val, metric='flops', cache=cache, progress=False)


def test_multi_objective_evolution_in_nas_experiment(tmp_path):
    """MultiObjectiveEvolution as an NNI strategy: dict metrics from evaluate_pair, router/threshold searched as
    an ordinary label, a non-dominated front out of list_models()."""
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_bigLittle.evaluation import evaluate_pair
    from nni_bigLittle.search_spaces import BigLittleSpace

    path = tmp_path / 'supernet.pt'
    trained_tiny_supernet().save(path)
    key = 'latency_ms_raspberry_pi_4'
    strategy = MultiObjectiveEvolution([('accuracy', 'max'), (key, 'min')], population=4, generations=1, seed=0)
    evaluator = FunctionalEvaluator(evaluate_pair, supernet=str(path), target_escalation=None, calib_batches=2,
                                    batch_size=48)
    config = NasExperimentConfig('sequential', 'raw', 'local')
    config.execution_engine.max_model_count = 20
    config.experiment_working_directory = str(tmp_path)
    space = BigLittleSpace(**TINY)
    experiment = NasExperiment(space, evaluator, strategy, config)
    try:
        experiment.run()
        exported = experiment.export_top_models(top_k=10, formatter='dict')
    finally:
        experiment.stop()
    records = strategy.nsga.history
    assert 4 < len(records) <= 8 and all(r.metrics is not None for r in records)
    assert len({r.sample['router/threshold'] for r in records}) > 1  # the threshold label is searched
    front = strategy.pareto_front()
    points = [(-r.metrics['accuracy'], r.metrics[key]) for r in front]
    assert not any(_dominates(a, b) for a in points for b in points)
    assert exported == [r.sample for r in front]
    for sample in exported:
        assert space.spec.check(sample) is None
        record = strategy.nsga.lookup(sample)
        assert record.metrics['threshold'] == sample['router/threshold']
    # its state round-trips
    state = json.loads(json.dumps(strategy.state_dict()))
    fresh = NSGA2(strategy.nsga.genes, strategy.objectives, population=4)
    fresh.load_state_dict(state['nsga2'])
    assert [r.sample for r in fresh.front()] == [r.sample for r in front]
