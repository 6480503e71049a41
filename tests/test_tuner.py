"""BigLittleEvolution, driven through NNI's Tuner interface the way the dispatcher drives it
(the nnictl tests run it under the real manager)."""
import json
import random

import pytest

from nni_bigLittle.nn.costs import arch_costs
from nni_bigLittle.evaluation.pairs import _profiler
from nni_bigLittle.search_spaces.hpo import nni_search_space
from nni_bigLittle.search_spaces.presets import get_preset
from nni_bigLittle.strategies.nsga2 import _dominates
from nni_bigLittle.strategies.tuner import BigLittleEvolution

SPEC = get_preset('cifar')
PI4 = 'latency_ms_raspberry_pi_4'


def _space(**extra):
    return json.loads(json.dumps(nni_search_space(SPEC, extra or None)))  # as the manager sends it


def _latency(params, rate=0.3):
    arch = SPEC.decode({label: params[label] for label in SPEC.choices()})
    return float(_profiler('raspberry_pi_4', 'latency').breakdown(arch, rate)['expected'])


def _trial(params):
    """A stand-in for the trial's measurement that is a real function of the pair: bigger pays off."""
    arch = SPEC.decode({label: params[label] for label in SPEC.choices()})
    macs = arch_costs(arch).big_macs / 1e6
    return {'default': 0.0, 'accuracy': macs / (macs + 2.0), PI4: _latency(params)}


def test_proposals_are_valid_pairs_within_the_predicted_budget():
    tuner = BigLittleEvolution(population_size=6, constraints={PI4: 5.5}, seed=1)
    tuner.update_search_space(_space())
    for i in range(30):
        params = tuner.generate_parameters(i)
        assert SPEC.check({label: params[label] for label in SPEC.choices()}) is None
        assert _latency(params) <= 5.5  # screened before the trial, on the predictor
        tuner.receive_trial_result(i, params, _trial(params))
    front = tuner.nsga.front()
    assert front
    values = [(-r.metrics['accuracy'], r.metrics[PI4]) for r in front]
    assert not any(_dominates(a, b) for a in values for b in values)


def test_evolution_beats_random_draws_on_the_front():
    """After the initial population, children of the front improve on random draws: the best accuracy
    under a tight budget is at least as good as the best of the same number of random valid pairs."""
    budget = 5.2
    tuner = BigLittleEvolution(population_size=8, seed=0, constraints={PI4: budget})
    tuner.update_search_space(_space())
    for i in range(48):
        params = tuner.generate_parameters(i)
        tuner.receive_trial_result(i, params, _trial(params))
    evolved = max(r.metrics['accuracy'] for r in tuner.nsga.history if r.metrics[PI4] <= budget)
    rng = random.Random(0)
    draws = [SPEC.random_sample(rng) for _ in range(48)]
    randomly = max(_trial(d)['accuracy'] for d in draws if _latency(d) <= budget)
    assert evolved >= randomly


def test_failed_trials_missing_keys_and_imported_results():
    tuner = BigLittleEvolution(population_size=4)
    tuner.update_search_space(_space())
    a, b = tuner.generate_parameters(0), tuner.generate_parameters(1)
    assert a != b  # two trials in flight never get the same pair
    tuner.trial_end(0, success=False)  # failed before reporting
    tuner.receive_trial_result(1, b, {'default': 0.5, 'accuracy': 0.5})  # no latency key: counted as failed
    assert [r.metrics for r in tuner.nsga.history] == [None, None]
    c = dict(SPEC.largest())
    tuner.import_data([{'parameter': c, 'value': json.dumps({'default': 0.9, 'accuracy': 0.9, PI4: 9.0})}])
    assert tuner.nsga.front()[0].sample == c


def test_narrowed_space_and_extra_choices_are_kept():
    tuner = BigLittleEvolution(population_size=4)
    space = _space(learning_rate={'_type': 'choice', '_value': [0.05, 0.1]})
    for label in SPEC.choices():
        if label.endswith('/kernel'):
            space[label]['_value'] = [3]
    tuner.update_search_space(space)
    for i in range(12):
        params = tuner.generate_parameters(i)
        assert params['learning_rate'] in (0.05, 0.1)
        assert all(params[label] == 3 for label in SPEC.choices() if label.endswith('/kernel'))
        tuner.receive_trial_result(i, params, _trial(params))


def test_bad_search_spaces_and_arguments_are_refused():
    tuner = BigLittleEvolution()
    with pytest.raises(ValueError, match='give .*learning_rate.* as "choice" lists'):
        tuner.update_search_space(_space(learning_rate={'_type': 'loguniform', '_value': [0.01, 0.1]}))
    space = _space()
    del space['little/fork']
    with pytest.raises(ValueError, match="'little/fork' is missing"):
        tuner.update_search_space(space)
    with pytest.raises(ValueError, match='no_such_device'):
        BigLittleEvolution(constraints={'latency_ms_no_such_device': 5.0}).update_search_space(_space())
    with pytest.raises(ValueError, match='must be > 0'):
        BigLittleEvolution(constraints={PI4: 0})
    with pytest.raises(RuntimeError, match='no search space'):
        BigLittleEvolution().generate_parameters(0)
