"""Multi-objective evolution (NSGA-II) over big/little pairs.

NSGA-II (Deb, Pratap, Agarwal and Meyarivan, 2002): a population of ``N`` genomes; each generation
breeds ``N`` children by binary tournament on (non-domination rank, crowding distance), uniform
crossover and per-label mutation; parents and children are pooled, sorted into non-dominated fronts
(fast non-dominated sort) and the best ``N`` survive, the last front admitted being cut by crowding
distance. With a budget (single-budget mode) Deb's constrained domination is used: a feasible
genome dominates an infeasible one, of two infeasible ones the smaller violation wins.

Three forms share one engine (:class:`NSGA2`, ask/tell, JSON state):

- :func:`nsga2` — a generic loop over ``{label: choices}`` genes with a Python ``evaluate``
  (memoised per genome), checkpointed after every generation (JSON, atomic write) and resumed when
  called again with the same arguments.
- :func:`search_supernet` — the search after co-training: genomes are the space's labels except
  ``router/threshold`` plus the escalation-rate gene ``router/escalation``; the threshold is
  *calibrated* on the validation outputs to hit that rate. Objectives: dynamic validation
  accuracy (max) and expected latency / energy on a device (or expected MACs) at the calibrated
  rate (min). One forward pass per architecture serves every policy and rate (:class:`SubnetCache`,
  reusable across devices). Returns the whole Pareto front in one run; with ``budget`` also the
  best feasible pair.
- :class:`MultiObjectiveEvolution` — the same algorithm as an NNI 3.0 multi-trial ``Strategy``
  reading the evaluator's dict metrics; there ``router/threshold`` is an ordinary discrete label.

Randomness: one seeded ``random.Random`` per run, its state saved in every checkpoint, so an
interrupted run resumes to the very result of an uninterrupted one.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import nni_bigLittle._nni_compat  # noqa: F401  (quiet NNI import)
import nni.nas.strategy  # noqa: F401  (import order: NNI's strategy package before its one-shot strategies)
from nni.mutable import MutableAnnotation
from nni.nas.execution.event import FinalMetricEvent, ModelEventType
from nni.nas.space import ModelStatus
from nni.nas.strategy.base import Strategy

__all__ = [
    'Record', 'NSGA2', 'NSGA2Result', 'nsga2', 'non_dominated_sort', 'crowding_distance', 'sample_key',
    'space_repair', 'SubnetCache', 'SearchResult', 'search_supernet', 'build_model', 'MultiObjectiveEvolution',
    'ESCALATION_LABEL', 'DEFAULT_ESCALATION_GRID',
]

_logger = logging.getLogger(__name__)

ESCALATION_LABEL = 'router/escalation'
DEFAULT_ESCALATION_GRID = tuple(round(0.05 * i, 2) for i in range(13))  # 0.0, 0.05, ..., 0.6
CHECKPOINT_FORMAT = 'nni_bigLittle.nsga2/1'

Genome = dict[str, Any]
Objective = tuple[str, str]


def sample_key(sample: Mapping[str, Any]) -> str:
    """A stable text key of a genome (sorted JSON)."""
    return json.dumps(dict(sample), sort_keys=True)


# ============================================================================================ sorting


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` Pareto-dominates ``b`` (all objectives minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_sort(values: Sequence[Sequence[float]], violations: Sequence[float] | None = None
                       ) -> list[list[int]]:
    """Deb's fast non-dominated sort of minimised objective vectors: fronts of indices, best first.

    With ``violations`` (>= 0, 0 = feasible) constrained domination is used: feasible beats
    infeasible, the smaller violation beats the larger, and feasible points compare by Pareto
    domination. Indices within a front keep their input order.
    """
    n = len(values)
    viol = [0.0] * n if violations is None else [float(v) for v in violations]
    if len(viol) != n:
        raise ValueError(f'{len(viol)} violations for {n} points.')

    def beats(i: int, j: int) -> bool:
        if viol[i] == 0.0 and viol[j] > 0.0:
            return True
        if viol[i] > 0.0 or viol[j] > 0.0:
            return viol[j] > 0.0 and viol[i] < viol[j]
        return _dominates(values[i], values[j])

    dominated: list[list[int]] = [[] for _ in range(n)]
    counts = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if beats(i, j):
                dominated[i].append(j)
                counts[j] += 1
            elif beats(j, i):
                dominated[j].append(i)
                counts[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if counts[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominated[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distance(values: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """Crowding distance of each index of ``front``: the boundary points of every objective get
    infinity, the others the sum over objectives of the normalised gap between their neighbours."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(len(values[front[0]])):
        ordered = sorted(front, key=lambda i: (values[i][m], i))
        low, high = values[ordered[0]][m], values[ordered[-1]][m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if not (math.isfinite(low) and math.isfinite(high)) or high == low:
            continue
        for k in range(1, len(ordered) - 1):
            distance[ordered[k]] += (values[ordered[k + 1]][m] - values[ordered[k - 1]][m]) / (high - low)
    return distance


# ============================================================================================ the engine


@dataclass
class Record:
    """One evaluated genome. ``metrics`` is ``None`` when its evaluation failed."""
    sample: dict[str, Any]
    metrics: dict[str, float] | None
    generation: int
    index: int

    @property
    def key(self) -> str:
        return sample_key(self.sample)

    def to_dict(self) -> dict[str, Any]:
        return {'index': self.index, 'generation': self.generation, 'sample': dict(self.sample),
                'metrics': None if self.metrics is None else dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'Record':
        return cls(dict(data['sample']), None if data['metrics'] is None else dict(data['metrics']),
                   int(data['generation']), int(data['index']))


Repair = Callable[[Genome, random.Random], Genome]
Constraint = Union[tuple[str, float], Callable[[Mapping[str, float]], float]]


def _check_objectives(objectives: Sequence[Objective]) -> list[tuple[str, str]]:
    out = []
    for item in objectives:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                and item[1] in ('max', 'min')):
            raise ValueError(f'Each objective is (metric key, "max" | "min"), got {item!r}.')
        out.append((item[0], item[1]))
    if not out:
        raise ValueError('Give at least one objective, e.g. '
                         '[("accuracy", "max"), ("latency_ms_raspberry_pi_4", "min")].')
    if len({key for key, _ in out}) != len(out):
        raise ValueError(f'Objectives repeat a metric key: {out}.')
    return out


def _check_genes(genes: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    if not genes:
        raise ValueError('genes is empty; give {label: [choices]}.')
    out = {}
    for label, choices in genes.items():
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Iterable):
            raise ValueError(f'Gene {label!r} needs a list of choices, got {choices!r}.')
        choices = tuple(choices)
        if not choices:
            raise ValueError(f'Gene {label!r} has no choices.')
        out[str(label)] = choices
    return out


class NSGA2:
    """NSGA-II as an ask/tell engine over discrete genes.

    ``ask()`` returns the genomes of the next generation (the initial population first, then
    children); ``tell(genomes, metrics)`` records them (``None`` for a failed evaluation) and keeps
    the best ``population`` by (constrained) non-domination rank and crowding distance.
    ``generation`` counts the generations told (0 before the initial population).

    ``repair(genome, rng)`` turns an invalid genome into a valid one (default: all are valid).
    ``constraint`` is ``(metric key, budget)`` (feasible when ``metrics[key] <= budget``) or a function
    of the metrics returning the violation (0 when feasible).
    """

    def __init__(self, genes: Mapping[str, Sequence[Any]], objectives: Sequence[Objective], *, population: int = 20,
                 seed: int = 0, constraint: Constraint | None = None,
                 initial: Sequence[Mapping[str, Any]] | None = None, repair: Repair | None = None,
                 crossover_prob: float = 0.9, mutation_prob: float | None = None, max_tries: int = 100):
        self.genes = _check_genes(genes)
        self.objectives = _check_objectives(objectives)
        if not isinstance(population, int) or population < 2:
            raise ValueError(f'population must be an int >= 2, got {population!r}.')
        if not 0.0 <= crossover_prob <= 1.0:
            raise ValueError(f'crossover_prob must be in [0, 1], got {crossover_prob}.')
        if mutation_prob is not None and not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f'mutation_prob must be in [0, 1], got {mutation_prob}.')
        if constraint is not None and not callable(constraint):
            if not (isinstance(constraint, (tuple, list)) and len(constraint) == 2 and isinstance(constraint[0], str)):
                raise ValueError(f'constraint must be (metric key, budget) or a function, got {constraint!r}.')
            constraint = (constraint[0], float(constraint[1]))
        self.population_size = population
        self.seed = seed
        self.constraint = constraint
        self.repair = repair
        self.crossover_prob = float(crossover_prob)
        self.mutation_prob = float(mutation_prob) if mutation_prob is not None else 1.0 / len(self.genes)
        self.max_tries = int(max_tries)
        self.initial = [self._genome(s, 'initial') for s in (initial or [])]
        if len(self.initial) > population:
            raise ValueError(f'{len(self.initial)} initial genomes for a population of {population}.')
        self.rng = random.Random(seed)
        self.generation = 0
        self.history: list[Record] = []
        self.population: list[Record] = []
        self._memo: dict[str, Record] = {}

    # ----- genomes --------------------------------------------------------------------------------------------
    def _genome(self, sample: Mapping[str, Any], what: str) -> Genome:
        missing = [label for label in self.genes if label not in sample]
        extra = [label for label in sample if label not in self.genes]
        if missing or extra:
            raise ValueError(f'An {what} genome must have exactly the gene labels; missing {missing}, unknown {extra}.')
        genome = {}
        for label, choices in self.genes.items():
            value = sample[label]
            match = [c for c in choices if c == value and isinstance(c, str) == isinstance(value, str)]
            if not match:
                raise ValueError(f'{what} genome: {label!r} = {value!r} is not one of {list(choices)}.')
            genome[label] = match[0]  # the choice itself (4 for 4.0 from JSON), so keys stay stable
        return genome

    def _repaired(self, genome: Genome) -> Genome:
        return dict(self.repair(genome, self.rng)) if self.repair is not None else genome

    def _random(self) -> Genome:
        return self._repaired({label: self.rng.choice(choices) for label, choices in self.genes.items()})

    def lookup(self, genome: Mapping[str, Any]) -> Record | None:
        """The record of an already evaluated genome."""
        return self._memo.get(sample_key(genome))

    # ----- objectives -----------------------------------------------------------------------------------------
    def _values(self, record: Record) -> tuple[float, ...]:
        out = []
        for key, sense in self.objectives:
            if key not in record.metrics:
                raise ValueError(f'The metrics of {record.sample} lack the objective {key!r} (keys: '
                                 f'{sorted(record.metrics)}).')
            value = float(record.metrics[key])
            value = math.inf if math.isnan(value) else (value if sense == 'min' else -value)
            out.append(value)
        return tuple(out)

    def violation(self, record: Record) -> float:
        if record.metrics is None:
            return math.inf
        if self.constraint is None:
            return 0.0
        if callable(self.constraint):
            value = float(self.constraint(record.metrics))
        else:
            key, budget = self.constraint
            if key not in record.metrics:
                raise ValueError(f'The constraint metric {key!r} is not among the metrics {sorted(record.metrics)}.')
            value = float(record.metrics[key]) - budget
        return math.inf if math.isnan(value) else max(0.0, value)

    def feasible(self, record: Record) -> bool:
        return record.metrics is not None and self.violation(record) == 0.0

    def _ranked(self, records: Sequence[Record]) -> list[tuple[Record, int, float]]:
        """``(record, rank, crowding)`` for the evaluated ``records``, best first."""
        records = [r for r in records if r.metrics is not None]
        values = [self._values(r) for r in records]
        fronts = non_dominated_sort(values, [self.violation(r) for r in records] if self.constraint else None)
        out = []
        for rank, front in enumerate(fronts):
            crowd = crowding_distance(values, front)
            for i in sorted(front, key=lambda i: (-crowd[i], i)):
                out.append((records[i], rank, crowd[i]))
        return out

    # ----- ask / tell -----------------------------------------------------------------------------------------
    def _novel(self, make: Callable[[], Genome], taken: set[str]) -> Genome:
        """A genome from ``make`` not evaluated nor already in this batch, if one comes within ``max_tries``."""
        genome = make()
        for _ in range(self.max_tries):
            key = sample_key(genome)
            if key not in self._memo and key not in taken:
                break
            genome = make()
        return genome

    def ask(self) -> list[Genome]:
        """The genomes of generation ``self.generation``."""
        batch: list[Genome] = []
        taken: set[str] = set()
        if self.generation == 0:
            for genome in self.initial:
                genome = self._repaired(dict(genome))
                if sample_key(genome) not in taken:
                    batch.append(genome)
                    taken.add(sample_key(genome))
            while len(batch) < self.population_size:
                genome = self._novel(self._random, taken)
                batch.append(genome)
                taken.add(sample_key(genome))
            return batch
        ranked = self._ranked(self.population)
        if not ranked:  # nothing evaluated successfully: start again from random genomes
            return [self._novel(self._random, taken) for _ in range(self.population_size)]
        for _ in range(self.population_size):
            genome = self._novel(lambda: self._child(ranked), taken)
            batch.append(genome)
            taken.add(sample_key(genome))
        return batch

    def propose(self, taken: Iterable[str] = ()) -> Genome:
        """Steady-state form, for asynchronous workers (an NNI tuner): one genome, not evaluated and not
        in ``taken`` (keys of genomes in flight). The initial genomes, then random ones until
        ``population`` genomes are evaluated or in flight, then a child of the current population. Tell
        each result with ``tell([genome], [metrics])`` (``generation`` then counts results)."""
        taken = set(taken)
        for genome in self.initial:
            genome = self._repaired(dict(genome))
            if sample_key(genome) not in taken and sample_key(genome) not in self._memo:
                return genome
        ranked = self._ranked(self.population)
        if len(self.history) + len(taken) < self.population_size or not ranked:
            return self._novel(self._random, taken)
        return self._novel(lambda: self._child(ranked), taken)

    def _tournament(self, ranked: list[tuple[Record, int, float]]) -> Genome:
        if len(ranked) == 1:
            return dict(ranked[0][0].sample)
        a, b = self.rng.sample(range(len(ranked)), 2)
        # ``ranked`` is ordered by (rank, -crowding), so the smaller position is the better one
        return dict(ranked[min(a, b)][0].sample)

    def _child(self, ranked: list[tuple[Record, int, float]]) -> Genome:
        first, second = self._tournament(ranked), self._tournament(ranked)
        if self.rng.random() < self.crossover_prob:
            child = {label: (first[label] if self.rng.random() < 0.5 else second[label]) for label in self.genes}
        else:
            child = dict(first)
        for label, choices in self.genes.items():
            if self.rng.random() < self.mutation_prob and len(choices) > 1:
                child[label] = self.rng.choice([c for c in choices if c != child[label]])
        return self._repaired(child)

    def tell(self, genomes: Sequence[Mapping[str, Any]], metrics: Sequence[Mapping[str, float] | None]) -> None:
        """Record the evaluations of the genomes of the current generation and select the survivors."""
        if len(genomes) != len(metrics):
            raise ValueError(f'{len(genomes)} genomes but {len(metrics)} metrics.')
        fresh: list[Record] = []
        for genome, values in zip(genomes, metrics):
            key = sample_key(genome)
            record = self._memo.get(key)
            if record is None:
                record = Record(dict(genome), None if values is None else {k: float(v) for k, v in values.items()},
                                self.generation, len(self.history))
                if record.metrics is not None:
                    self._values(record)  # fail now on a missing objective
                self.history.append(record)
                self._memo[key] = record
            fresh.append(record)
        pool, seen = [], set()
        for record in self.population + fresh:  # parents and children, each genome once
            if record.key not in seen and record.metrics is not None:
                pool.append(record)
                seen.add(record.key)
        self.population = [r for r, _, _ in self._ranked(pool)[:self.population_size]]
        self.generation += 1

    # ----- results --------------------------------------------------------------------------------------------
    def front(self) -> list[Record]:
        """The non-dominated records of the current population (feasible ones first in budget mode),
        best first by the first objective."""
        ranked = self._ranked(self.population)
        front = [r for r, rank, _ in ranked if rank == 0]
        return sorted(front, key=lambda r: (self._values(r), r.index))

    def best(self) -> Record | None:
        """The best feasible record ever evaluated: first objective, ties by the next ones."""
        feasible = [r for r in self.history if self.feasible(r)]
        return min(feasible, key=lambda r: (self._values(r), r.index)) if feasible else None

    # ----- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {'generation': self.generation, 'history': [r.to_dict() for r in self.history],
                'population': [r.index for r in self.population],
                'rng_state': [version, list(internal), gauss]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        version, internal, gauss = state['rng_state']
        self.rng.setstate((version, tuple(internal), gauss))
        self.history = [Record.from_dict(r) for r in state['history']]
        self._memo = {r.key: r for r in self.history}
        self.population = [self.history[i] for i in state['population']]
        self.generation = int(state['generation'])


# ============================================================================================ the generic loop


@dataclass
class NSGA2Result:
    """``records``: every evaluated genome in evaluation order; ``front``: the final Pareto front
    (best first by the first objective); ``best``: the best feasible record (budget mode; without a
    constraint the best by the first objective); ``population``: the final population."""
    records: list[Record]
    front: list[Record]
    population: list[Record]
    best: Record | None
    generations: int
    objectives: list[tuple[str, str]]
    evaluations: int = 0  # evaluate() calls made by this call (0 when it only reloaded a finished run)


def _describe(value: Any) -> Any:
    if callable(value):
        return f'{getattr(value, "__module__", "")}.{getattr(value, "__qualname__", repr(value))}'
    return value


def _fingerprint(engine: NSGA2) -> dict[str, Any]:
    return json.loads(json.dumps({
        'genes': {label: list(choices) for label, choices in engine.genes.items()},
        'objectives': [list(o) for o in engine.objectives], 'population': engine.population_size,
        'seed': engine.seed, 'constraint': _describe(engine.constraint), 'initial': engine.initial,
        'crossover_prob': engine.crossover_prob, 'mutation_prob': engine.mutation_prob,
        'repair': _describe(engine.repair),
    }, default=str))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Progress:
    """A tqdm bar over generations, or one printed line per generation when tqdm is missing."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.enabled, self.total, self.desc = enabled, total, desc
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, initial=initial, desc=desc, unit='gen', leave=True)
            except ImportError:
                self.bar = None

    def update(self, generation: int, info: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
        else:
            print(f'{self.desc}: generation {generation}/{self.total} {info}', flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary(engine: NSGA2) -> str:
    front = engine.front()
    if not front:
        return 'front 0'
    key, _ = engine.objectives[0]
    return f'front {len(front)}, best {key} {front[0].metrics[key]:.4g}, evaluated {len(engine.history)}'


def nsga2(genes: Mapping[str, Sequence[Any]], evaluate: Callable[[Genome], Mapping[str, float] | None],
          objectives: Sequence[Objective], *, population: int = 20, generations: int = 10, seed: int = 0,
          constraint: Constraint | None = None, initial: Sequence[Mapping[str, Any]] | None = None,
          checkpoint: str | os.PathLike | None = None, progress: bool = True, repair: Repair | None = None,
          crossover_prob: float = 0.9, mutation_prob: float | None = None, max_tries: int = 100) -> NSGA2Result:
    """Run NSGA-II: an initial population of ``population`` genomes, then ``generations`` generations
    of as many children, so at most ``population * (generations + 1)`` evaluations.

    ``evaluate(genome)`` returns a metrics dict holding every objective key (``None``: failed, the
    genome is dropped); each distinct genome is evaluated once. ``objectives`` lists
    ``(metric key, 'max' | 'min')``. ``constraint=(key, budget)`` turns on single-budget mode
    (``metrics[key] <= budget``, constrained domination); ``result.best`` is then the best feasible
    record by the first objective. ``initial`` genomes seed the first population.

    With ``checkpoint`` (a JSON file) the state -- evaluated records, population, generation and the
    random generator -- is written after every generation, atomically; calling again with the same
    arguments resumes from it (a finished run returns at once; a larger ``generations`` continues it).
    A checkpoint written with other arguments raises ``ValueError``.
    """
    if not isinstance(generations, int) or generations < 0:
        raise ValueError(f'generations must be an int >= 0, got {generations!r}.')
    engine = NSGA2(genes, objectives, population=population, seed=seed, constraint=constraint, initial=initial,
                   repair=repair, crossover_prob=crossover_prob, mutation_prob=mutation_prob, max_tries=max_tries)
    fingerprint = _fingerprint(engine)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding='utf-8'))
        except json.JSONDecodeError as err:
            raise ValueError(f'Checkpoint {path} is not valid JSON ({err}); delete it to start afresh.') from err
        if saved.get('format') != CHECKPOINT_FORMAT:
            raise ValueError(f'{path} is not an NSGA-II checkpoint (format {saved.get("format")!r}).')
        if saved['config'] != fingerprint:
            changed = sorted(k for k in fingerprint if saved['config'].get(k) != fingerprint[k])
            raise ValueError(f'Checkpoint {path} was written by a run with other arguments ({", ".join(changed)}). '
                             'Use another checkpoint path or delete this one to start afresh.')
        engine.load_state_dict(saved['state'])
        _logger.info('Resumed NSGA-II from %s at generation %d (%d evaluations).', path, engine.generation,
                     len(engine.history))

    calls = 0
    bar = _Progress(generations + 1, min(engine.generation, generations + 1), progress, 'NSGA-II')
    try:
        while engine.generation <= generations:
            batch = engine.ask()
            results: dict[str, Mapping[str, float] | None] = {}
            metrics = []
            for genome in batch:
                key = sample_key(genome)
                known = engine.lookup(genome)
                if known is not None:
                    metrics.append(known.metrics)
                    continue
                if key not in results:
                    results[key] = evaluate(dict(genome))
                    calls += 1
                metrics.append(results[key])
            engine.tell(batch, metrics)
            if path is not None:
                _atomic_write(path, json.dumps({'format': CHECKPOINT_FORMAT, 'config': fingerprint,
                                                'state': engine.state_dict()}))
            bar.update(engine.generation - 1, _summary(engine))
    finally:
        bar.close()
    return NSGA2Result(list(engine.history), engine.front(), list(engine.population), engine.best(),
                       engine.generation - 1,
                       list(engine.objectives), calls)


# ============================================================================================ repair


def space_repair(spec, extra_labels: Iterable[str] = (), max_tries: int = 200,
                 choices: Mapping[str, Sequence[Any]] | None = None) -> Repair:
    """A repair for genomes over a ``SpaceSpec``'s labels (plus ``extra_labels`` the spec does not know).

    An invalid pair (the little network not cheaper than the big one) is mended by re-drawing little
    labels (each with a probability growing from 1/max_tries to 1), then any label, keeping the other
    genes; a missing ``router/threshold`` is filled for the check only. Values are re-drawn from
    ``choices`` (default: the spec's; a narrowed search space gives its own).
    """
    choices = {**spec.choices(), **(choices or {})}
    extra = set(extra_labels)
    placeholder = choices['router/threshold'][0]

    def check(genome: Genome):
        sample = {label: value for label, value in genome.items() if label not in extra}
        sample.setdefault('router/threshold', placeholder)
        return spec.check(sample)

    labels = [label for label in choices if label != 'router/threshold']
    little = [label for label in labels if label.startswith('little/')]

    def repair(genome: Genome, rng: random.Random) -> Genome:
        if check(genome) is None:
            return genome
        for group in (little, labels):
            for attempt in range(max_tries):
                share = (attempt + 1) / max_tries
                candidate = dict(genome)
                for label in group:
                    if label in candidate and rng.random() < share:
                        candidate[label] = rng.choice(choices[label])
                if check(candidate) is None:
                    return candidate
        raise ValueError(f'Could not repair the genome {genome} into a valid big/little pair in {2 * max_tries} tries.')

    repair.__qualname__ = f'space_repair({spec.name})'
    return repair


# ============================================================================================ search on a supernet


class SubnetCache:
    """Validation outputs of supernet subnets, one forward pass per architecture.

    The key is every label except ``router/policy``, ``router/threshold`` and ``router/escalation``:
    the outputs do not depend on the router, so one pass serves every policy and escalation rate,
    and the cache can be shared by the searches of several devices. ``computed`` counts the
    subnets evaluated (forward passes), ``hits`` the lookups served from the cache. Entries are
    :meth:`PairOutputs.compact` (learned confidence precomputed); ``max_entries`` bounds the cache
    (least recently used dropped).
    """

    def __init__(self, supernet, calib_batches: Iterable, val_loader: Iterable, max_entries: int | None = 4096):
        self.supernet = supernet
        self.calib_batches = list(calib_batches)
        if not self.calib_batches:
            raise ValueError('SubnetCache needs at least one calibration batch for batch-norm re-calibration.')
        self.val_loader = val_loader
        self.max_entries = max_entries
        self.computed = 0
        self.hits = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()
        choices = supernet.spec.choices()
        self._arch_labels = [label for label in choices if not label.startswith('router/')]
        self._placeholder = {'router/policy': choices['router/policy'][0],
                             'router/threshold': choices['router/threshold'][0]}

    def arch_key(self, sample: Mapping[str, Any]) -> str:
        return json.dumps({label: sample[label] for label in self._arch_labels}, sort_keys=True)

    def __len__(self) -> int:
        return len(self._entries)

    def outputs(self, sample: Mapping[str, Any]):
        """The (compact) :class:`~nni_bigLittle.evaluation.PairOutputs` of ``sample``'s architecture."""
        from nni_bigLittle.evaluation import subnet_outputs
        key = self.arch_key(sample)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        arch = {label: sample[label] for label in self._arch_labels}
        outputs = subnet_outputs(self.supernet, {**arch, **self._placeholder}, self.calib_batches,
                                 self.val_loader).compact()
        self.computed += 1
        self._entries[key] = outputs
        if self.max_entries is not None and len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return outputs


@dataclass
class SearchResult:
    """The outcome of :func:`search_supernet` on one device.

    ``front``: the Pareto front as flat records (best accuracy first), each with ``sample`` (a valid
    space sample whose ``router/threshold`` is the nearest threshold choice, for ``space.freeze``),
    ``threshold`` (the calibrated one to deploy), ``target_escalation`` (the gene), the measured
    ``escalation_rate``, ``accuracy``, ``little_acc``, ``big_acc``, ``expected_macs`` (M) and the
    device cost (``latency_ms_<device>`` / ``energy_mj_<device>``). ``best``: the best feasible record
    in single-budget mode (else ``None``). ``records``: every evaluated genome.
    """
    device: str
    metric: str
    objective: str
    front: list[dict[str, Any]]
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    budget: float | None
    generations: int
    evaluations: int
    run_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _objective_key(metric: str, device: str) -> str:
    if metric == 'latency':
        return f'latency_ms_{device}'
    if metric == 'energy':
        return f'energy_mj_{device}'
    if metric == 'macs':
        return 'expected_macs'
    raise ValueError(f'metric must be "latency", "energy" or "macs", got {metric!r}.')


def _nearest(choices: Sequence[float], value: float) -> float:
    return min(choices, key=lambda c: (abs(float(c) - value), c))


def _flat(record: Record, spec) -> dict[str, Any]:
    genome = record.sample
    metrics = dict(record.metrics or {})
    sample = {label: genome[label] for label in spec.choices() if label != 'router/threshold'}
    if 'threshold' in metrics:
        sample['router/threshold'] = _nearest(spec.threshold_choices, metrics['threshold'])
    else:
        sample['router/threshold'] = spec.threshold_choices[0]
    sample = {label: sample[label] for label in spec.choices()}
    return {'index': record.index, 'generation': record.generation, 'policy': genome['router/policy'],
            'target_escalation': genome[ESCALATION_LABEL], **metrics, 'sample': sample}


def _write_csv(path: Path, rows: list[dict[str, Any]], labels: Sequence[str]) -> None:
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key != 'sample' and key not in keys:
                keys.append(key)
    header = keys + list(labels)
    lines = []
    for row in rows:
        lines.append([row.get(k, '') for k in keys] + [row['sample'].get(label, '') for label in labels])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(lines)
    os.replace(tmp, path)


def search_supernet(supernet, calib_batches: Iterable, val_loader: Iterable, *,
                    device: str | Sequence[str] = 'raspberry_pi_4', metric: str = 'latency', population: int = 24,
                    generations: int = 10, escalation_grid: Sequence[float] = DEFAULT_ESCALATION_GRID,
                    policies: Sequence[str] | None = None, budget: float | None = None,
                    run_dir: str | os.PathLike | None = None, seed: int = 0, cache: SubnetCache | None = None,
                    initial: Sequence[Mapping[str, Any]] | None = None, progress: bool = True,
                    fixed: Mapping[str, Any] | None = None) -> SearchResult | dict[str, SearchResult]:
    """NSGA-II on a trained supernet: the whole accuracy / cost Pareto front in one run.

    ``supernet``: a ``BigLittleSpace`` with trained weights (or the path of a file written by
    ``BigLittleSpace.save``). Each genome's subnet is frozen, its batch norm re-calibrated on
    ``calib_batches`` and evaluated on ``val_loader`` (the validation split; once per architecture,
    see :class:`SubnetCache`, pass ``cache`` to share it). The genome's ``router/escalation`` (from
    ``escalation_grid``) is turned into a threshold calibrated on those validation outputs, and the
    objectives are the dynamic accuracy (max) and the expected ``metric`` (``'latency'`` ms,
    ``'energy'`` mJ or ``'macs'`` M) on ``device`` at the measured escalation rate (min).
    ``policies`` restricts ``router/policy``; ``initial`` seeds the first population with space samples;
    ``fixed`` ({label: value}) freezes those labels (the search-dimension ablation).

    ``budget`` (in the metric's unit) switches to single-budget mode: constrained domination and
    ``result.best``, the most accurate pair within the budget. With ``run_dir`` the run checkpoints
    there (``checkpoint.json``, resumed when re-run with the same arguments) and writes ``front.json``,
    ``front.csv`` and ``history.csv``. A list of devices runs one search per device (sub-folders of
    ``run_dir``) sharing one cache and returns ``{device: SearchResult}``.
    """
    from nni_bigLittle.evaluation import energy_devices, load_supernet, pair_metrics
    if isinstance(supernet, (str, os.PathLike)):
        supernet = load_supernet(supernet)
    if not hasattr(supernet, 'spec') or not hasattr(supernet, 'freeze'):
        raise TypeError(f'supernet must be a BigLittleSpace or the path of a saved one, got {type(supernet).__name__}.')
    if cache is None:
        cache = SubnetCache(supernet, calib_batches, val_loader)
    elif cache.supernet is not supernet:
        raise ValueError('The cache belongs to another supernet; create '
                         'SubnetCache(supernet, calib_batches, val_loader).')
    if not isinstance(device, str):
        devices = list(device)
        if not devices or len(set(devices)) != len(devices):
            raise ValueError(f'device must be a predictor name or a list of distinct names, got {device!r}.')
        return {d: search_supernet(supernet, calib_batches, val_loader, device=d, metric=metric,
                                   population=population, generations=generations, escalation_grid=escalation_grid,
                                   policies=policies, budget=budget,
                                   run_dir=None if run_dir is None else Path(run_dir) / d, seed=seed, cache=cache,
                                   initial=initial, progress=progress, fixed=fixed)
                for d in devices}

    spec = supernet.spec
    objective = _objective_key(metric, device)
    if metric == 'energy' and not energy_devices([device]):
        from nni_bigLittle.hw_predictors.devices import list_bundled
        bundled = sorted({row['name'] for row in list_bundled() if row['metric'] == 'energy'})
        raise ValueError(f'No energy predictor for {device!r}; bundled energy predictors: {bundled or "none"}. '
                         'Use metric="latency" or "macs" for this device.')
    from nni_bigLittle.evaluation.pairs import _predictor
    _predictor(device, 'latency')  # an unknown device fails here, not after the first subnet
    grid = sorted({float(p) for p in escalation_grid})
    if not grid or not all(0.0 <= p <= 1.0 for p in grid):
        raise ValueError(f'escalation_grid needs rates in [0, 1], got {list(escalation_grid)}.')
    genes = {label: values for label, values in spec.choices().items() if label != 'router/threshold'}
    if policies is not None:
        unknown = [p for p in policies if p not in spec.policy_choices]
        if unknown or not policies:
            raise ValueError(f'policies must be a non-empty subset of {list(spec.policy_choices)}, got {policies!r}.')
        genes['router/policy'] = tuple(policies)
    genes[ESCALATION_LABEL] = tuple(grid)
    for label, value in (fixed or {}).items():
        if label not in genes or value not in genes[label]:
            raise ValueError(f'fixed: {label}={value!r} is not a choice of this space '
                             f'({list(genes.get(label, ())) or "no such label"}).')
        genes[label] = (value,)

    def to_genome(sample: Mapping[str, Any]) -> Genome:
        genome = {label: sample[label] for label in genes if label in sample}
        genome.setdefault(ESCALATION_LABEL, _nearest(grid, 0.3))
        genome.update(fixed or {})
        return genome

    def evaluate(genome: Genome) -> dict[str, float]:
        sample = {**{k: v for k, v in genome.items() if k != ESCALATION_LABEL},
                  'router/threshold': spec.threshold_choices[0]}
        metrics = pair_metrics(cache.outputs(genome), sample, spec, policy=genome['router/policy'],
                               target_escalation=genome[ESCALATION_LABEL], devices=(device,),
                               energy=metric == 'energy')
        metrics['target_escalation'] = float(genome[ESCALATION_LABEL])
        return metrics

    evaluate.__qualname__ = 'search_supernet.evaluate'
    run_path = Path(run_dir) if run_dir is not None else None
    result = nsga2(genes, evaluate, [('accuracy', 'max'), (objective, 'min')], population=population,
                   generations=generations, seed=seed,
                   constraint=None if budget is None else (objective, float(budget)),
                   initial=[to_genome(s) for s in (initial or [])],
                   checkpoint=None if run_path is None else run_path / 'checkpoint.json', progress=progress,
                   repair=space_repair(spec, extra_labels=[ESCALATION_LABEL], choices=genes))
    front = [_flat(r, spec) for r in result.front]
    records = [_flat(r, spec) for r in result.records if r.metrics is not None]
    best = _flat(result.best, spec) if (budget is not None and result.best is not None) else None
    out = SearchResult(device=device, metric=metric, objective=objective, front=front, records=records, best=best,
                       budget=None if budget is None else float(budget), generations=result.generations,
                       evaluations=result.evaluations, run_dir=None if run_path is None else str(run_path),
                       extra={'cache_computed': cache.computed, 'cache_hits': cache.hits})
    if run_path is not None:
        labels = list(spec.choices())
        summary = {'device': device, 'metric': metric, 'objective': objective, 'budget': out.budget,
                   'population': population, 'generations': generations, 'seed': seed,
                   'escalation_grid': grid, 'evaluated': len(records), 'front': front, 'best': best}
        _atomic_write(run_path / 'front.json', json.dumps(summary, indent=1))
        _write_csv(run_path / 'front.csv', front, labels)
        _write_csv(run_path / 'history.csv', records, labels)
    return out


def build_model(supernet, record: Mapping[str, Any], calib_batches: Iterable):
    """The deployable ``BigLittleModel`` of a front record: frozen from ``supernet``, batch norm
    re-calibrated on ``calib_batches``, router threshold set to the calibrated ``record['threshold']``."""
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    model = supernet.freeze(record['sample'])
    recalibrate_batchnorm(model, calib_batches)
    model.router.threshold = float(record['threshold'])
    return model.eval()


# ============================================================================================ NNI strategy


def _parse_metric(value: Any) -> Any:
    """NNI's training-service engine may hand the metric over as (doubly) JSON-encoded text."""
    for _ in range(2):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                break
    return value


class MultiObjectiveEvolution(Strategy):
    """NSGA-II as an NNI 3.0 multi-trial strategy.

    Genes are the model space's labels (``model_space.simplify()``; every one must be discrete, e.g.
    ``nni.choice``). Each generation is submitted to the engine and awaited; objectives are read from
    the evaluator's dict metrics (``nni.report_final_result({'default': ..., 'accuracy': ...,
    'latency_ms_raspberry_pi_4': ...})``, e.g. :func:`nni_bigLittle.evaluation.evaluate_pair`).
    A failed trial or one without the objective keys is left out of the population. The run stops
    after ``generations`` generations (plus the initial population) or when the engine's budget
    (``max_model_count`` / ``max_duration``) is spent. ``list_models()`` yields the Pareto front,
    best first by the first objective.

    On ``BigLittleSpace`` invalid children (little costlier than big) are repaired by re-drawing little
    labels (:func:`space_repair`); on other spaces by re-drawing labels until
    ``model_space.check_contains`` accepts. ``router/threshold`` is an ordinary discrete label here:
    the evaluator should use the sample's threshold (``evaluate_pair(..., target_escalation=None)``),
    otherwise the searched threshold is overridden by the calibrated one and the label is inert.
    For the calibrated form, search a trained supernet with :func:`search_supernet`.
    """

    def __init__(self, objectives: Sequence[Objective] = (('accuracy', 'max'), ('latency_ms_raspberry_pi_4', 'min')),
                 *, population: int = 20, generations: int = 5, seed: int = 0, constraint: Constraint | None = None,
                 initial: Sequence[Mapping[str, Any]] | None = None, crossover_prob: float = 0.9,
                 mutation_prob: float | None = None):
        super().__init__()
        self.objectives = _check_objectives(objectives)
        if not isinstance(generations, int) or generations < 0:
            raise ValueError(f'generations must be an int >= 0, got {generations!r}.')
        if not isinstance(population, int) or population < 2:
            raise ValueError(f'population must be an int >= 2, got {population!r}.')
        self.population_size = population
        self.generations = generations
        self.seed = seed
        self.constraint = constraint
        self.initial = initial
        self.crossover_prob = crossover_prob
        self.mutation_prob = mutation_prob
        self._engine_nsga: NSGA2 | None = None
        self._pending_state: Mapping[str, Any] | None = None
        self._raw_metrics: dict[Any, Any] = {}
        self._models: dict[str, Any] = {}

    def extra_repr(self) -> str:
        return (f'objectives={self.objectives}, population={self.population_size}, generations={self.generations}, '
                f'seed={self.seed}')

    # ----- lifecycle ----------------------------------------------------------------------------------------
    def _initialize(self, model_space, engine):
        genes = {}
        for label, mutable in model_space.simplify().items():
            if isinstance(mutable, MutableAnnotation):
                continue
            values = getattr(mutable, 'values', None)
            if values is None:
                raise TypeError(f'MultiObjectiveEvolution needs discrete labels (nni.choice); {label!r} is '
                                f'{type(mutable).__name__}.')
            genes[label] = tuple(values)
        inner = getattr(model_space, 'model_space', model_space)
        spec = getattr(inner, 'spec', None)
        if spec is not None and hasattr(spec, 'check') and set(genes) == set(spec.choices()):
            repair = space_repair(spec)
        else:
            repair = _checking_repair(model_space, genes)
        self._engine_nsga = NSGA2(genes, self.objectives, population=self.population_size, seed=self.seed,
                                  constraint=self.constraint, initial=self.initial, repair=repair,
                                  crossover_prob=self.crossover_prob, mutation_prob=self.mutation_prob)
        if self._pending_state is not None:
            self._engine_nsga.load_state_dict(self._pending_state)
            self._pending_state = None
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)

    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        self._raw_metrics[event.model] = event.metric  # the raw dict; model.metrics keeps only 'default'

    @property
    def nsga(self) -> NSGA2:
        if self._engine_nsga is None:
            raise RuntimeError('The strategy is not initialised; run it in a NasExperiment first.')
        return self._engine_nsga

    def _run(self) -> None:
        nsga = self.nsga
        while nsga.generation <= self.generations:
            if not self.engine.budget_available():
                _logger.info('Engine budget spent; stopping before generation %d.', nsga.generation)
                break
            batch = nsga.ask()
            metrics, complete = self._evaluate(batch)
            nsga.tell(batch, metrics)
            _logger.info('NSGA-II generation %d: %s', nsga.generation - 1, _summary(nsga))
            if not complete:
                _logger.info('Engine budget spent; stopping after generation %d.', nsga.generation - 1)
                break

    def _evaluate(self, batch: list[Genome]) -> tuple[list[dict[str, float] | None], bool]:
        submitted: dict[str, Any] = {}
        complete = True
        for genome in batch:
            key = sample_key(genome)
            if key in submitted or self.nsga.lookup(genome) is not None:
                continue
            if not self.wait_for_resource():
                complete = False
                break
            model = self.model_space.freeze(genome)
            self.engine.submit_models(model)
            submitted[key] = model
        if submitted:
            self.engine.wait_models(*submitted.values())
        metrics: list[dict[str, float] | None] = []
        for genome in batch:
            known = self.nsga.lookup(genome)
            if known is not None:
                metrics.append(known.metrics)
                continue
            model = submitted.get(sample_key(genome))
            metrics.append(None if model is None else self._metrics_of(model))
            if model is not None:
                self._models[sample_key(genome)] = model
        return metrics, complete

    def _metrics_of(self, model) -> dict[str, float] | None:
        if model.status != ModelStatus.Trained:
            _logger.warning('Model %s did not train successfully (%s); left out.', model.sample, model.status)
            return None
        raw = _parse_metric(self._raw_metrics.pop(model, model.metric))
        if not isinstance(raw, Mapping):
            raw = {'default': raw}
        values = {str(k): float(v) for k, v in raw.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        missing = [key for key, _ in self.objectives if key not in values]
        if missing:
            _logger.warning('Metrics of %s lack the objectives %s (got %s); left out.', model.sample, missing,
                            sorted(values))
            return None
        return values

    # ----- results ------------------------------------------------------------------------------------------
    def pareto_front(self) -> list[Record]:
        """The non-dominated records of the final population, best first by the first objective."""
        return self.nsga.front()

    def list_models(self, sort: bool = True, limit: int | None = None):
        """The models of the Pareto front, best first by the first objective (``sort`` is accepted for
        NNI's interface; the front is always in that order)."""
        front = self.pareto_front()
        for record in front[:limit]:
            model = self._models.get(record.key)
            if model is None:  # e.g. after load_state_dict: the sample only
                model = self.model_space.freeze(record.sample)
            yield model

    # ----- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {'nsga2': self.nsga.state_dict()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if self._engine_nsga is None:
            self._pending_state = state_dict['nsga2']
        else:
            self._engine_nsga.load_state_dict(state_dict['nsga2'])


def _checking_repair(model_space, genes: Mapping[str, Sequence[Any]], max_tries: int = 200) -> Repair:
    """Repair for any NNI space: re-draw labels (each with a growing probability) until the space accepts."""
    labels = list(genes)

    def repair(genome: Genome, rng: random.Random) -> Genome:
        if model_space.check_contains(genome) is None:
            return genome
        for attempt in range(max_tries):
            share = (attempt + 1) / max_tries
            candidate = {label: (rng.choice(genes[label]) if rng.random() < share else genome[label])
                         for label in labels}
            if model_space.check_contains(candidate) is None:
                return candidate
        raise ValueError(f'Could not find a valid sample near {genome} in {max_tries} tries.')

    repair.__qualname__ = 'checking_repair'
    return repair
