"""NSGA-II: a generic multi-objective genetic algorithm over discrete genes.

NSGA-II (Deb, Pratap, Agarwal and Meyarivan, 2002): a population of ``N`` genomes; each generation
breeds ``N`` children by binary tournament on (non-domination rank, crowding distance), uniform
crossover and per-label mutation; parents and children are pooled, sorted into non-dominated fronts
(fast non-dominated sort) and the best ``N`` survive, the last front admitted being cut by crowding
distance. With a budget (single-budget mode) Deb's constrained domination is used: a feasible
genome dominates an infeasible one, of two infeasible ones the smaller violation wins.

- :class:`NSGA2` — the engine: ask/tell (or steady-state ``propose``/``tell``), JSON state.
- :func:`nsga2` — a generic loop over ``{label: choices}`` genes with a Python ``evaluate``
  (memoised per genome), checkpointed after every generation (JSON, atomic write) and resumed when
  called again with the same arguments.

Randomness: one seeded ``random.Random`` per run, its state saved in every checkpoint, so an
interrupted run resumes to the very result of an uninterrupted one.

Nothing here knows of big/little spaces, supernets, devices or predictors: the search on a trained
supernet and the NNI multi-trial strategy are in :mod:`nni_bigLittle.strategies.evolution`, the NNI
tuner in :mod:`nni_bigLittle.strategies.tuner`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

__all__ = [
    'Record', 'NSGA2', 'NSGA2Result', 'nsga2', 'non_dominated_sort', 'crowding_distance', 'sample_key',
    'CHECKPOINT_FORMAT', 'Genome', 'Objective', 'Repair', 'Constraint',
]

_logger = logging.getLogger(__name__)

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
