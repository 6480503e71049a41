"""``BigLittleEvolution``: the constraint-aware multi-objective evolution as an NNI tuner (``nnictl``).

In an experiment YAML, either as a custom algorithm::

    tuner:
      codeDirectory: .
      className: nni_bigLittle.strategies.tuner.BigLittleEvolution
      classArgs: {preset: cifar, population_size: 16, constraints: {latency_ms_raspberry_pi_4: 6.0}}

or, after ``nnictl algo register --meta experiments/algo_meta.yml``, as ``tuner: {name: BigLittleEvolution}``.

The search space is the one ``nni-biglittle space export`` writes (every label a ``choice``; narrower
value lists narrow the search; extra ``choice`` hyper-parameters such as ``learning_rate`` are
evolved with the architecture). The algorithm is a steady-state NSGA-II
(:meth:`~nni_bigLittle.strategies.nsga2.NSGA2.propose`): random valid pairs until
``population_size`` trials are evaluated or running, then children of the current population by
binary tournament on (non-domination rank, crowding distance), uniform crossover and mutation; every
result updates the population at once, so trials never wait for a generation to finish.

Objectives are keys of the trials' dict metrics (default: maximise ``accuracy``, minimise
``latency_ms_raspberry_pi_4``). ``constraints`` ``{metric key: upper bound}`` act twice:

- before a trial starts, a candidate whose *predicted* cost (``latency_ms_<device>``,
  ``energy_mj_<device>`` from the bundled predictors, or ``expected_macs`` in millions, all at the
  escalation rate ``screen_escalation``) breaks a bound is redrawn (up to ``screen_tries`` times,
  then the least violating candidate is used);
- on the reported metrics, Deb's constrained domination ranks feasible trials before infeasible
  ones, and infeasible ones by their relative violation.

With ``NNI_CHECKPOINT_DIRECTORY`` set (inside an experiment), the current Pareto front is written there after
every result (:data:`nni_bigLittle.evaluation.front.TUNER_FRONT_FILE`).
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping, Sequence

from nni.tuner import Tuner

# Only light imports here: NNI's dispatcher builds the tuner before it connects to the manager, which
# gives up after 10 s. torch, NNI's NAS modules and the predictors load in update_search_space.

__all__ = ['BigLittleEvolution']

_logger = logging.getLogger(__name__)

_PREDICTED_PREFIXES = (('latency_ms_', 'latency'), ('energy_mj_', 'energy'))


class BigLittleEvolution(Tuner):
    """Constraint-aware multi-objective evolution over big/little pairs (see the module docstring).

    Parameters
    ----------
    preset, num_classes, space_options
        The space the search-space JSON was exported from (``space_options``: ``SpaceSpec`` overrides).
    objectives
        ``[[metric key, "max" | "min"], ...]``.
    constraints
        ``{metric key: upper bound}``.
    population_size, seed
        NSGA-II population and the seed of its random generator.
    screen_escalation, screen_tries
        Escalation rate at which candidates' costs are predicted before a trial, and how many redraws a
        candidate breaking a bound gets.
    """

    def __init__(self, preset: str = 'cifar', num_classes: int = 10, space_options: Mapping[str, Any] | None = None,
                 objectives: Sequence[Sequence[str]] = (('accuracy', 'max'), ('latency_ms_raspberry_pi_4', 'min')),
                 constraints: Mapping[str, float] | None = None, population_size: int = 16, seed: int = 0,
                 screen_escalation: float = 0.3, screen_tries: int = 50):
        super().__init__()
        self.space_args = dict(preset=preset, num_classes=num_classes, **dict(space_options or {}))
        self.spec = None
        self.objectives = [tuple(o) for o in objectives]
        self.constraints = {str(k): float(v) for k, v in (constraints or {}).items()}
        for key, bound in self.constraints.items():
            if not bound > 0:
                raise ValueError(f'constraints: the bound of {key!r} must be > 0, got {bound}.')
        if not isinstance(population_size, int) or population_size < 2:
            raise ValueError(f'population_size must be an int >= 2, got {population_size!r}.')
        if not 0.0 <= screen_escalation <= 1.0:
            raise ValueError(f'screen_escalation must be in [0, 1], got {screen_escalation}.')
        self.population_size = population_size
        self.seed = seed
        self.screen_escalation = float(screen_escalation)
        self.screen_tries = int(screen_tries)
        self.nsga = None
        self.pending: dict[int, dict[str, Any]] = {}

    # ----- NNI tuner interface -------------------------------------------------------------------------------
    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        from nni_bigLittle.search_spaces.hpo import check_search_space
        from nni_bigLittle.search_spaces.presets import get_preset
        from nni_bigLittle.strategies.evolution import space_repair
        from nni_bigLittle.strategies.nsga2 import NSGA2
        self.spec = get_preset(**self.space_args)
        for key in self.constraints:
            self._predict_cost(key, None)  # an unknown device fails here, before any trial
        extra = check_search_space(self.spec, search_space)
        not_choice = sorted(name for name, entry in extra.items() if entry['_type'] != 'choice')
        if not_choice:
            raise ValueError(f'BigLittleEvolution evolves discrete choices; give {not_choice} as "choice" lists.')
        spec_choices = self.spec.choices()
        genes = {}
        for label, entry in search_space.items():
            allowed = spec_choices.get(label)
            values = entry['_value']
            if allowed is not None:  # the spec's own values (4, not 4.0), in the search space's narrowing
                values = [a for a in allowed if any(_same(v, a) for v in values)]
            genes[label] = tuple(values)
        repair = space_repair(self.spec, extra_labels=extra,
                              choices={k: v for k, v in genes.items() if k in spec_choices})
        self.nsga = NSGA2(genes, self.objectives, population=self.population_size, seed=self.seed,
                          constraint=self._violation if self.constraints else None, repair=repair)
        _logger.info('BigLittleEvolution: %d genes, objectives %s, constraints %s', len(genes), self.objectives,
                     self.constraints)

    def generate_parameters(self, parameter_id: int, **kwargs) -> dict[str, Any]:
        from nni_bigLittle.strategies.nsga2 import sample_key
        nsga = self._engine()
        taken = {sample_key(g) for g in self.pending.values()}
        best, best_violation = None, math.inf
        for _ in range(max(1, self.screen_tries)):
            genome = nsga.propose(taken)
            violation = self._predicted_violation(genome)
            if violation < best_violation:
                best, best_violation = genome, violation
            if violation == 0.0:
                break
            taken.add(sample_key(genome))  # do not propose it again in this call
        if best_violation > 0:
            _logger.info('No candidate met the constraints in %d draws; using the least violating one (%.3f).',
                         self.screen_tries, best_violation)
        self.pending[parameter_id] = best
        return dict(best)

    def receive_trial_result(self, parameter_id: int, parameters: Mapping[str, Any], value: Any, **kwargs) -> None:
        genome = self.pending.pop(parameter_id, None)
        if genome is None:  # a customised trial or an imported one: match it to the genes
            genome = self._as_genome(parameters)
            if genome is None:
                return
        metrics = self._metrics(value)
        self._engine().tell([genome], [metrics])
        self._write_front()

    def trial_end(self, parameter_id: int, success: bool, **kwargs) -> None:
        genome = self.pending.pop(parameter_id, None)
        if genome is not None and not success:  # failed before a final result: remembered as failed
            self._engine().tell([genome], [None])

    def import_data(self, data: Sequence[Mapping[str, Any]]) -> None:
        """Earlier results (``nnictl experiment import`` or a resumed experiment)."""
        for record in data:
            genome = self._as_genome(record.get('parameter', {}))
            if genome is not None and self._engine().lookup(genome) is None:
                self._engine().tell([genome], [self._metrics(record.get('value'))])
        self._write_front()

    # ----- helpers ---------------------------------------------------------------------------------------------
    def _engine(self):
        if self.nsga is None:
            raise RuntimeError('BigLittleEvolution has no search space yet (update_search_space not called).')
        return self.nsga

    def _as_genome(self, parameters: Mapping[str, Any]) -> dict[str, Any] | None:
        genome = {}
        for label, choices in self._engine().genes.items():
            match = [c for c in choices if label in parameters and _same(parameters[label], c)]
            if not match:
                _logger.warning('Parameters %s do not fit the search space (%s); ignored.', parameters, label)
                return None
            genome[label] = match[0]
        return genome

    def _metrics(self, value: Any) -> dict[str, float] | None:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return None
        if not isinstance(value, Mapping):
            value = {'default': value}
        metrics = {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        missing = [key for key, _ in self.objectives if key not in metrics]
        missing += [key for key in self.constraints if key not in metrics]
        if missing:
            _logger.warning('A trial result lacks %s (keys: %s); counted as failed. Do the trials report them '
                            '(--devices)?', missing, sorted(metrics))
            return None
        return metrics

    def _violation(self, metrics: Mapping[str, float]) -> float:
        return sum(max(0.0, metrics[key] / bound - 1.0) for key, bound in self.constraints.items())

    def _predict_cost(self, key: str, genome: Mapping[str, Any] | None) -> float | None:
        """Predicted value of constraint ``key`` for ``genome`` (``None``: not predictable before a trial)."""
        from nni_bigLittle.evaluation.pairs import _profiler
        for prefix, metric in _PREDICTED_PREFIXES:
            if key.startswith(prefix):
                profiler = _profiler(key[len(prefix):], metric)  # raises for an unknown device
                if genome is None:
                    return None
                return float(profiler.breakdown(self._arch(genome), self.screen_escalation)['expected'])
        if key == 'expected_macs':
            if genome is None:
                return None
            from nni_bigLittle.nn.costs import arch_costs
            return arch_costs(self._arch(genome)).expected_macs(self.screen_escalation) / 1e6
        return None

    def _arch(self, genome: Mapping[str, Any]):
        return self.spec.decode({label: genome[label] for label in self.spec.choices()})

    def _predicted_violation(self, genome: Mapping[str, Any]) -> float:
        total = 0.0
        for key, bound in self.constraints.items():
            value = self._predict_cost(key, genome)
            if value is not None:
                total += max(0.0, value / bound - 1.0)
        return total

    def _write_front(self) -> None:
        folder = os.environ.get('NNI_CHECKPOINT_DIRECTORY')
        if not folder:
            return
        from nni_bigLittle.evaluation.front import TUNER_FRONT_FILE, write_front
        front = [{'parameters': r.sample, 'metrics': r.metrics} for r in self._engine().front()]
        write_front(folder, {'objectives': self.objectives, 'constraints': self.constraints,
                             'evaluated': len(self._engine().history), 'front': front}, name=TUNER_FRONT_FILE)


def _same(a: Any, b: Any) -> bool:
    from nni_bigLittle.search_spaces.spec import _same as same
    return same(a, b)
