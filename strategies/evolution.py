"""Multi-objective evolution (NSGA-II) over big/little pairs.

The algorithm (the ask/tell :class:`~nni_bigLittle.strategies.nsga2.NSGA2` engine, the checkpointed
:func:`~nni_bigLittle.strategies.nsga2.nsga2` loop, non-dominated sorting, crowding distance and
constrained domination) lives in :mod:`nni_bigLittle.strategies.nsga2`; its names are re-exported
here. This module puts it to work on big/little spaces, in two forms sharing that engine:

- :func:`search_supernet` — the search after co-training: genomes are the space's labels except
  ``router/threshold`` plus the escalation-rate gene ``router/escalation``; the threshold is
  *calibrated* on the validation outputs to hit that rate. Objectives: dynamic validation
  accuracy (max) and expected latency / energy on a device (or expected MACs) at the calibrated
  rate (min). One forward pass per architecture serves every policy and rate (:class:`SubnetCache`,
  reusable across devices). Returns the whole Pareto front in one run; with ``budget`` also the
  best feasible pair.
- :class:`MultiObjectiveEvolution` — the same algorithm as an NNI 3.0 multi-trial ``Strategy``
  reading the evaluator's dict metrics; there ``router/threshold`` is an ordinary discrete label.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import nni_bigLittle._nni_compat  # noqa: F401  (quiet NNI import)
import nni.nas.strategy  # noqa: F401  (import order: NNI's strategy package before its one-shot strategies)
from nni.mutable import MutableAnnotation
from nni.nas.execution.event import FinalMetricEvent, ModelEventType
from nni.nas.space import ModelStatus
from nni.nas.strategy.base import Strategy

from nni_bigLittle.evaluation.front import entry_point, write_front
from nni_bigLittle.nn.operating_point import OperatingPoint
from nni_bigLittle.strategies.nsga2 import (
    NSGA2, Constraint, Genome, NSGA2Result, Objective, Record, Repair, _check_objectives,
    _summary, crowding_distance, non_dominated_sort, nsga2, sample_key,
)

__all__ = [
    'Record', 'NSGA2', 'NSGA2Result', 'nsga2', 'non_dominated_sort', 'crowding_distance', 'sample_key',
    'space_repair', 'SubnetCache', 'SearchResult', 'search_supernet', 'build_model', 'MultiObjectiveEvolution',
    'ESCALATION_LABEL', 'DEFAULT_ESCALATION_GRID',
]

_logger = logging.getLogger(__name__)

ESCALATION_LABEL = 'router/escalation'
DEFAULT_ESCALATION_GRID = tuple(round(0.05 * i, 2) for i in range(13))  # 0.0, 0.05, ..., 0.6


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
    """A front entry: the validation metrics, the operating point they were measured at (the threshold
    calibrated on validation for the genome's target escalation) and its flat sample."""
    genome = record.sample
    metrics = dict(record.metrics or {})
    entry = {'index': record.index, 'generation': record.generation, 'policy': genome['router/policy'],
             'target_escalation': genome[ESCALATION_LABEL], **metrics}
    if 'threshold' in metrics:
        flat = {label: genome[label] for label in spec.choices() if label != 'router/threshold'}
        point = OperatingPoint.from_flat_sample({**flat, 'router/threshold': metrics['threshold']},
                                                target_escalation=float(genome[ESCALATION_LABEL]),
                                                calibrated_on='validation')
        entry['operating_point'] = point.to_dict()
        entry['sample'] = {label: point.flat_sample[label] for label in spec.choices()}
    return entry


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
    there (``checkpoint.json``, resumed when re-run with the same arguments) and writes the front (:func:`nni_bigLittle.evaluation.front.write_front`),
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
        write_front(run_path, summary)
        _write_csv(run_path / 'front.csv', front, labels)
        _write_csv(run_path / 'history.csv', records, labels)
    return out


def build_model(supernet, point: OperatingPoint | Mapping[str, Any], calib_batches: Iterable):
    """The deployable ``BigLittleModel`` of an operating point (or of a front entry holding one): frozen from
    ``supernet`` with the point's exact threshold, batch norm re-calibrated on ``calib_batches``."""
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    if not isinstance(point, OperatingPoint):
        point = entry_point(point)
    model = supernet.freeze(point.flat_sample)
    recalibrate_batchnorm(model, calib_batches)
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
