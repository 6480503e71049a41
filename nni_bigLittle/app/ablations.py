"""Ablations of a co-training run: what each ingredient of the method is worth, measured.

- :func:`ablation_stage`: the co-trained pair against the same two architectures trained independently and
  cascaded (``nni-biglittle ablation RUN [--pick accurate]``);
- :func:`routing_ablation_stage`: max-softmax, entropy, margin and the learned router on one pair
  (``--kind routing``);
- :func:`dimension_ablation_stage`: the search with each dimension frozen in turn (``--kind dimensions``);
- :func:`strategy_ablation_stage`: sandwich vs progressive shrinking vs DARTS vs multi-trial evolution on one
  reduced budget (``--kind strategy``).

Each writes ``<run>/results/ablation_<kind>.{csv,md}`` and resumes from its own folder in the run.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping

from nni_bigLittle.app.config import ConfigError
from nni_bigLittle.app.stages.evaluate import write_table
from nni_bigLittle.app.stages.inputs import build_space, load_training_data, run_data, trained_supernet
from nni_bigLittle.app.stages.search import front_record
from nni_bigLittle.app.stages.train import train_supernet
from nni_bigLittle.app.runs import RunFolder, environment
from nni_bigLittle.training import fit

__all__ = ['ablation_stage', 'routing_ablation_stage', 'dimension_ablation_stage', 'strategy_ablation_stage',
           'progressive_phases']


def ablation_stage(run_dir: str | os.PathLike, device: str = 'raspberry_pi_4', progress: bool = True,
                   pick: str = 'middle') -> dict[str, Any]:
    """Co-trained pair vs the same two architectures trained independently and cascaded.

    ``pick``: the front's middle model (the default; ``results/ablation_cotraining.*``) or its most accurate
    one (``'accurate'``, an escalating pair on CIFAR-10; ``results/ablation_cotraining_accurate.*``).

    The pair is the middle model of ``device``'s front. Its little network (stem, shared trunk,
    little branch) and its big network (stem, whole trunk) are trained from scratch as two separate
    networks with cross-entropy, the co-training run's recipe, batch size and epochs each. The
    cascade runs the little network, escalates the least confident inputs (max-softmax, threshold
    calibrated on validation to the co-trained model's escalation rate) to the *whole* big network
    (nothing is shared, so nothing is reused). Both are measured on the test split; the cascade's
    expected cost is ``little + router + p * big``, the co-trained one's ``little + router + p * big tail``.
    Writes ``<run>/results/ablation_cotraining.{csv,md}``.
    """
    import json
    import torch
    from nni_bigLittle.nn.costs import arch_costs
    from nni_bigLittle.evaluation import PairOutputs, collect_outputs, operating_point
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    from nni_bigLittle.nn.model import BigLittleModel
    from nni_bigLittle.strategies.cotraining import ResumableLoader
    from nni_bigLittle.strategies.evolution import build_model
    run = RunFolder(run_dir)
    record = front_record(run, device, pick)
    supernet = trained_supernet(run)
    cfg, calibration, val_loader, test_loader = run_data(run)
    spec = supernet.spec
    suffix = '' if pick == 'middle' else f'_{pick}'
    sample = {**record['sample'], 'router/policy': 'max_softmax'}
    folder = run.path / f'ablation{suffix}'
    folder.mkdir(exist_ok=True)
    torch.manual_seed(cfg.seed)
    little_net = BigLittleModel.from_sample(spec, sample)
    big_net = BigLittleModel.from_sample(spec, sample)
    splits = load_training_data(cfg)
    times = {}
    for name, net in (('little', little_net.little_path()), ('big', big_net.big_path())):
        loader = ResumableLoader(splits.train, cfg.batch_size, seed=cfg.seed)
        print(f'[ablation] training the independent {name} network', flush=True)
        times[name] = fit(net, loader, epochs=cfg.epochs, recipe=cfg.recipe,
                          folder=folder / name, progress=progress).wall_s

    def outputs(loader) -> PairOutputs:
        little, big, ys = [], [], []
        with torch.no_grad():
            for x, y in loader:
                little.append(little_net.little_path().eval()(x))
                big.append(big_net.big_path().eval()(x))
                ys.append(y)
        return PairOutputs(torch.cat(little), None, torch.cat(big), torch.cat(ys))

    cotrained = build_model(supernet, {**record, 'sample': sample}, calibration)
    co_val = operating_point(collect_outputs(cotrained, val_loader), 'max_softmax',
                             target_escalation=record['escalation_rate'])
    cotrained.router.threshold = co_val.threshold
    co_test = operating_point(collect_outputs(cotrained, test_loader), cotrained.router)
    ind_val = operating_point(outputs(val_loader), 'max_softmax', target_escalation=co_val.escalation_rate)
    ind_test = operating_point(outputs(test_loader), 'max_softmax', threshold=ind_val.threshold)
    costs = arch_costs(spec.decode(sample))
    devices = run.searched_devices()
    parts = {d: BigLittleCostProfiler(spec, d, build_expression=False).breakdown(sample) for d in devices}
    rows = []
    for label, point, tail_macs, tail_key in (('co-trained pair (shared trunk, feature reuse)', co_test,
                                                costs.big_tail.macs, 'big_tail'),
                                               ('independent cascade (same architectures)', ind_test,
                                                costs.big.macs, 'big')):
        row = {'model': label, 'test_little_acc': point.little_acc, 'test_big_acc': point.big_acc,
               'test_dynamic_acc': point.accuracy, 'test_escalation_rate': point.escalation_rate,
               'expected_mmacs': (costs.little_macs + costs.router.macs + point.escalation_rate * tail_macs) / 1e6}
        for d, part in parts.items():
            row[f'latency_ms_{d}'] = part['little'] + part['router'] + point.escalation_rate * part[tail_key]
        rows.append(row)
    rows[1]['train_wall_s'] = round(times['little'] + times['big'], 1)
    # the supernet's training time: its epochs' times (they count across resumes)
    rows[0]['train_wall_s'] = round(sum(float(r.get('epoch_time_s') or 0) for r in run.read_metrics()), 1)
    out = run.results_dir
    out.mkdir(exist_ok=True)
    write_table(rows, out / f'ablation_cotraining{suffix}')
    (out / f'ablation_cotraining{suffix}_pair.json').write_text(json.dumps({'device_front': device, 'pick': pick,
                                                                           'sample': sample}, indent=1))
    run.update_status(**{f'ablation{suffix}': {'done': True, 'environment': environment()}})
    return {'rows': rows}


def _search_seeds(spec) -> list[dict[str, Any]]:
    """The first population's seeds of the ablations' searches: the largest pair at each fork and the smallest
    pair, at 30 % escalation (random draws almost never reach the largest pairs)."""
    from nni_bigLittle.strategies.cotraining import max_pair, min_pair
    from nni_bigLittle.strategies.evolution import ESCALATION_LABEL
    seeds = [{**max_pair(spec, fork), ESCALATION_LABEL: 0.3} for fork in spec.forks]
    return seeds + [{**min_pair(spec, len(spec.trunk) // 2), ESCALATION_LABEL: 0.3}]


def _dimension_groups(spec) -> dict[str, dict[str, Any]]:
    """The search dimensions and the value each is frozen at in the ablation: the middle option of every trunk
    width / depth / kernel / expansion, the middle fork point, no little branch (depth 0: a plain early exit),
    max-softmax routing."""
    import re
    choices = spec.choices()
    middle = lambda options: options[len(options) // 2]  # noqa: E731
    groups = {name: {label: middle(options) for label, options in choices.items() if re.fullmatch(pattern, label)}
              for name, pattern in (('trunk width', r'trunk/s\d+/width'), ('trunk depth', r'trunk/s\d+/depth'),
                                    ('kernel size', r'(trunk|little)/s\d+/b\d+/kernel'),
                                    ('expansion', r'(trunk|little)/s\d+/b\d+/expand'))}
    groups['fork point'] = {'little/fork': middle(choices['little/fork'])}
    groups['little branch'] = {label: min(options) for label, options in choices.items()
                               if re.fullmatch(r'little/s\d+/depth', label)}
    groups['router policy'] = {'router/policy': 'max_softmax'} if 'max_softmax' in choices['router/policy'] else {}
    return {name: fixed for name, fixed in groups.items() if fixed}


def _hypervolume(front: list[dict[str, Any]], objective: str, reference: float) -> float:
    """Area dominated by an (accuracy up, cost down) front above accuracy 0 and left of cost ``reference``."""
    area, best = 0.0, 0.0
    points = sorted(((r[objective], r['accuracy']) for r in front if r[objective] < reference))
    for i, (cost, acc) in enumerate(points):
        best = max(best, acc)
        right = points[i + 1][0] if i + 1 < len(points) else reference
        area += (right - cost) * best
    return area


def dimension_ablation_stage(run_dir: str | os.PathLike, device: str = 'raspberry_pi_4', population: int = 12,
                             generations: int = 2, progress: bool = True) -> dict[str, Any]:
    """Each search dimension frozen in turn (:func:`_dimension_groups`): NSGA-II on the trained supernet with
    that dimension fixed, next to the same search over every dimension (same population, generations, seed,
    seeds of the first population and one shared cache of subnet outputs). Compared by the hypervolume of the
    validation front (accuracy vs predicted latency on ``device``) and its best accuracy within three latency
    budgets (the quartiles of the full search's front). Writes ``<run>/results/ablation_dimensions.{csv,md}``;
    each search checkpoints under ``<run>/ablation_dimensions/``."""
    import json
    import numpy as np
    from nni_bigLittle.strategies.evolution import SubnetCache, search_supernet
    run = RunFolder(run_dir)
    supernet = trained_supernet(run)
    _, calibration, val_loader, _ = run_data(run)
    spec = supernet.spec
    cache = SubnetCache(supernet, calibration, val_loader)
    seeds = _search_seeds(spec)
    searches = {'none (full search)': {}, **_dimension_groups(spec)}
    fronts = {}
    for name, fixed in searches.items():
        folder = run.path / 'ablation_dimensions' / name.split(' (')[0].replace(' ', '_')
        initial = [{**s, **fixed} for s in seeds][:population]
        result = search_supernet(supernet, calibration, val_loader, device=device, population=population,
                                 generations=generations, run_dir=folder, seed=0, cache=cache, initial=initial,
                                 progress=progress, fixed=fixed)
        fronts[name] = (result.front, result.objective)
    objective = fronts['none (full search)'][1]
    reference = 1.1 * max(r[objective] for front, _ in fronts.values() for r in front)
    full = sorted(r[objective] for r in fronts['none (full search)'][0])
    budgets = [float(np.quantile(full, q)) for q in (0.25, 0.5, 0.75)] if full else []
    rows = []
    for name, (front, _) in fronts.items():
        row = {'frozen': name, 'frozen_at': json.dumps(searches[name]) if len(searches[name]) <= 2 else
               f'{len(searches[name])} labels', 'front_size': len(front),
               'hypervolume': _hypervolume(front, objective, reference),
               'best_accuracy': max((r['accuracy'] for r in front), default=0.0)}
        for budget in budgets:
            row[f'best_acc_within_{budget:.2f}ms'] = max((r['accuracy'] for r in front if r[objective] <= budget),
                                                         default=0.0)
        rows.append(row)
    out = run.results_dir
    out.mkdir(exist_ok=True)
    write_table(rows, out / 'ablation_dimensions')
    run.update_status(ablation_dimensions={'done': True, 'device': device, 'population': population,
                                           'generations': generations, 'reference_cost': reference,
                                           'environment': environment()})
    return {'rows': rows}


ROUTING_TARGETS = (0.1, 0.25, 0.5, 0.75)


def routing_ablation_stage(run_dir: str | os.PathLike, device: str = 'raspberry_pi_4') -> dict[str, Any]:
    """The routing policies compared on one co-trained pair (the most accurate model of ``device``'s front):
    max-softmax, entropy, margin and the learned router (its MLP trained by the routing loss during
    co-training), each at the same escalation rates (thresholds calibrated on validation), measured on the
    test split. Same little and big networks for every policy, so only the routing differs; the expected
    cost differs only through the escalation rate (and the learned router's small MLP). Writes
    ``<run>/results/ablation_routing.{csv,md}``."""
    import json
    from nni_bigLittle.evaluation import collect_outputs, operating_point
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    from nni_bigLittle.strategies.evolution import build_model
    run = RunFolder(run_dir)
    record = front_record(run, device, 'accurate')
    supernet = trained_supernet(run)
    _, calibration, val_loader, test_loader = run_data(run)
    spec = supernet.spec
    profiler = BigLittleCostProfiler(spec, device, build_expression=False)
    rows = []
    for policy in spec.policy_choices:
        sample = {**record['sample'], 'router/policy': policy}
        model = build_model(supernet, {**record, 'sample': sample}, calibration)
        val, test = collect_outputs(model, val_loader), collect_outputs(model, test_loader)
        for target in ROUTING_TARGETS:
            threshold = operating_point(val, model.router, target_escalation=target).threshold
            point = operating_point(test, model.router, threshold=threshold)
            rows.append({'policy': policy, 'target_escalation': target, 'threshold': threshold,
                         'test_escalation_rate': point.escalation_rate, 'test_dynamic_acc': point.accuracy,
                         'test_little_acc': point.little_acc, 'test_big_acc': point.big_acc,
                         f'latency_ms_{device}': profiler.breakdown(sample, point.escalation_rate)['expected']})
    out = run.results_dir
    out.mkdir(exist_ok=True)
    write_table(rows, out / 'ablation_routing')
    (out / 'ablation_routing_pair.json').write_text(json.dumps({'device_front': device, 'sample': record['sample'],
                                                                'front_record_policy': record['policy']}, indent=1))
    run.update_status(ablation_routing={'done': True, 'environment': environment()})
    return {'rows': rows}


# ---------------------------------------------------------------------------------------------------------
# NAS strategy: sandwich vs progressive shrinking vs DARTS vs multi-trial evolution, on one reduced budget
# ---------------------------------------------------------------------------------------------------------
EVOLUTION_TRIALS = (3, 1)  # NSGA-II population and generations of the multi-trial evolution: 6 trained pairs


def progressive_phases(epochs: int) -> list[int]:
    """Once-for-All's phases (full, kernel, depth, expand, width, branches) within ``epochs``: one epoch of the
    full network, the rest spread over the later phases, the last first (a phase given 0 epochs is skipped;
    each phase unlocks every earlier dimension too, so nothing stays locked)."""
    import numpy as np
    from nni_bigLittle.strategies.cotraining import PHASES
    sizes = [len(part) for part in np.array_split(np.arange(epochs - 1), len(PHASES) - 1)][::-1]
    return [1] + sizes


def _pair_points(outputs, sample: Mapping[str, Any], spec, device: str, grid) -> list[dict[str, Any]]:
    """One trained pair at each escalation rate of ``grid`` (thresholds calibrated on ``outputs``)."""
    from nni_bigLittle.evaluation import pair_metrics
    key = f'latency_ms_{device}'
    points = []
    for rate in grid:
        m = pair_metrics(outputs, sample, spec, target_escalation=rate, devices=(device,))
        points.append({'accuracy': m['accuracy'], key: m[key], 'escalation_rate': m['escalation_rate'],
                       'target_escalation': float(rate), 'little_acc': m['little_acc'], 'big_acc': m['big_acc'],
                       'sample': dict(sample)})
    return points


def _non_dominated(points: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    front = [a for a in points if not any(b['accuracy'] >= a['accuracy'] and b[objective] <= a[objective] and
                                          (b['accuracy'] > a['accuracy'] or b[objective] < a[objective])
                                          for b in points)]
    unique = {(round(r['accuracy'], 6), round(r[objective], 6)): r for r in front}
    return sorted(unique.values(), key=lambda r: r[objective])


def strategy_ablation_stage(run_dir: str | os.PathLike, device: str = 'raspberry_pi_4', train_subset: int = 4000,
                            epochs: int = 4, population: int = 8, generations: int = 2,
                            progress: bool = True) -> dict[str, Any]:
    """Four NAS strategies, each from scratch on the same budget: the same seeded ``train_subset`` training
    images of the co-training run's data, ``epochs`` epochs over them, the run's space, batch size, loss and
    seed.

    - ``sandwich``: sandwich co-training, then NSGA-II (``population``, ``generations``) on the supernet;
    - ``progressive``: progressive shrinking (:func:`progressive_phases`), then the same NSGA-II;
    - ``darts``: DARTS (NNI's softmax relaxation) with the latency-target term of
      :mod:`~nni_bigLittle.strategies.latency_target`, target = the sandwich front's median latency, weights
      and architecture trained on the two halves of the subset (DARTS's split); it delivers one architecture,
      whose weights are inherited from the relaxed supernet (batch norm re-calibrated);
    - ``evolution``: multi-trial NSGA-II (:data:`EVOLUTION_TRIALS`), each architecture trained from scratch
      with the joint loss; as many pair-epochs in all as sandwich trains (``(num_random + 2) * epochs``).

    Every delivered pair is measured on the validation split at each escalation rate of the search grid
    (thresholds calibrated there); the fronts are compared by hypervolume (accuracy vs predicted latency on
    ``device``), best accuracy, best accuracy within the sandwich front's latency quartiles, and wall time.
    Writes ``<run>/results/ablation_strategy.{csv,md}`` and ``ablation_strategy_fronts.json``; each strategy
    works, and resumes, under ``<run>/ablation_strategy/<name>/``.
    """
    import hashlib
    import json
    import math
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset
    from nni_bigLittle.evaluation import collect_outputs
    from nni_bigLittle.nn.losses import JointLoss
    from nni_bigLittle.nn.model import BigLittleModel, recalibrate_batchnorm
    from nni_bigLittle.strategies.cotraining import ResumableLoader
    from nni_bigLittle.strategies.evolution import (DEFAULT_ESCALATION_GRID, ESCALATION_LABEL, search_supernet,
                                                    space_repair)
    from nni_bigLittle.strategies.nsga2 import nsga2, sample_key
    for name, value in (('train_subset', train_subset), ('epochs', epochs), ('population', population)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f'{name} must be a positive integer, got {value!r}.')
    run = RunFolder(run_dir)
    base, calibration, val_loader, _ = run_data(run)
    root = run.path / 'ablation_strategy'
    num_random = int(base.strategy_options.get('num_random', 2)) if base.strategy == 'sandwich' else 2
    cfg = base.replace(strategy='sandwich', strategy_options={}, threads=None, epochs=epochs, limit_train_batches=None,
                       train_subset=min(train_subset, base.train_subset or train_subset))
    objective = f'latency_ms_{device}'
    grid = sorted(DEFAULT_ESCALATION_GRID)
    fronts: dict[str, list[dict[str, Any]]] = {}
    info: dict[str, dict[str, Any]] = {}
    keep = ('accuracy', objective, 'escalation_rate', 'target_escalation', 'little_acc', 'big_acc', 'sample')

    for name, options in (('sandwich', {'num_random': num_random}),
                          ('progressive', {'phase_epochs': progressive_phases(epochs)})):
        folder = root / name
        status = train_supernet(cfg.replace(strategy=name, strategy_options=options), folder, progress=progress)
        supernet = trained_supernet(RunFolder(folder))
        began = time.time()
        result = search_supernet(supernet, calibration, val_loader, device=device, population=population,
                                 generations=generations, run_dir=folder / 'search', seed=0,
                                 initial=_search_seeds(supernet.spec)[:population], progress=progress)
        timing = folder / 'search' / 'wall_s.json'  # a resumed run keeps the first search's time
        if result.evaluations or not timing.is_file():
            timing.write_text(json.dumps({'wall_s': round(time.time() - began, 1)}))
        fronts[name] = [{k: r[k] for k in keep} for r in result.front]
        info[name] = {'train_wall_s': status['wall_s'], 'search_wall_s': json.loads(timing.read_text())['wall_s'],
                      'trained': f'supernet, {epochs} epochs ({name}: {json.dumps(options)})',
                      'evaluated_subnets': len(result.records)}
    budgets = [float(np.quantile([r[objective] for r in fronts['sandwich']], q)) for q in (0.25, 0.5, 0.75)]

    splits = load_training_data(cfg)
    space = build_space(cfg.space, splits.num_classes, splits.resolution)
    spec = space.spec

    # DARTS: the weights on one half of the subset, the architecture on the other
    folder = root / 'darts'
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / 'result.json').is_file():
        from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
        from nni_bigLittle.strategies.latency_target import latency_range, search_latency_target
        profiler = BigLittleCostProfiler(space, device, build_expression=False, escalation_rate=0.3)
        reach = latency_range(profiler)
        target = min(max(budgets[1], reach.low), reach.high)
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        half = len(order) // 2
        loaders = [DataLoader(Subset(splits.train, part), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(cfg.seed + i))
                   for i, part in enumerate((order[:half], order[half:]))]
        began = time.time()
        found = search_latency_target(space, loaders[0], loaders[1], target, profiler, epochs=epochs,
                                      relaxation='softmax', seed=cfg.seed, loss_weights=dict(cfg.loss) or None)
        torch.save(space.freeze(found.sample).state_dict(), folder / 'pair.pt')
        (folder / 'result.json').write_text(json.dumps(
            {'target_ms': target, 'wall_s': round(time.time() - began, 1), 'result': found.to_dict()},
            indent=1, default=str))
    darts = json.loads((folder / 'result.json').read_text())
    pair = BigLittleModel.from_sample(spec, darts['result']['sample'])
    pair.load_state_dict(torch.load(folder / 'pair.pt', weights_only=True))
    recalibrate_batchnorm(pair, calibration)
    fronts['darts'] = _non_dominated(_pair_points(collect_outputs(pair.eval(), val_loader), pair.sample, spec,
                                                  device, grid), objective)
    info['darts'] = {'train_wall_s': darts['wall_s'], 'search_wall_s': 0.0, 'evaluated_subnets': 1,
                     'trained': f'relaxed supernet, {epochs} epochs (target {darts["target_ms"]:.2f} ms, landed '
                                f'{darts["result"]["latency"]:.2f} ms at 30 % escalation)'}

    # multi-trial evolution: each architecture trained from scratch; its outputs cached per architecture
    folder = root / 'evolution'
    folder.mkdir(parents=True, exist_ok=True)
    trial_population, trial_generations = EVOLUTION_TRIALS
    trials = trial_population * (trial_generations + 1)
    trial_epochs = max(1, math.ceil((num_random + 2) * epochs / trials))
    loss = JointLoss(dict(cfg.loss) or None)
    trained: dict[str, Any] = {}
    wall = {'train': 0.0}
    arch_labels = [label for label in spec.choices() if label not in ('router/policy', 'router/threshold')]

    def evaluate(genome: Mapping[str, Any]) -> dict[str, float]:
        sample = {**{k: v for k, v in genome.items() if k != ESCALATION_LABEL},
                  'router/threshold': spec.threshold_choices[0]}
        key = sample_key({label: sample[label] for label in arch_labels})
        if key not in trained:
            torch.manual_seed(cfg.seed)
            model = BigLittleModel.from_sample(spec, sample)
            loader = ResumableLoader(splits.train, cfg.batch_size, seed=cfg.seed)
            print(f'[ablation] evolution trial {len(trained) + 1}/{trials}', flush=True)
            wall['train'] += fit(
                model, loader, epochs=trial_epochs, recipe=cfg.recipe,
                folder=folder / f'trial_{hashlib.sha1(key.encode()).hexdigest()[:12]}', progress=progress,
                loss_fn=lambda m, x, y: loss(m.forward_all(x), y, router=m.router)[0]).wall_s
            trained[key] = collect_outputs(model.eval(), val_loader)
        points = _pair_points(trained[key], sample, spec, device, [genome[ESCALATION_LABEL]])
        return {k: v for k, v in points[0].items() if k != 'sample'}

    genes = {label: values for label, values in spec.choices().items() if label != 'router/threshold'}
    genes[ESCALATION_LABEL] = tuple(grid)
    result = nsga2(genes, evaluate, [('accuracy', 'max'), (objective, 'min')], population=trial_population,
                   generations=trial_generations, seed=cfg.seed,
                   initial=[{k: v for k, v in s.items() if k in genes} for s in _search_seeds(spec)[:1]],
                   checkpoint=folder / 'checkpoint.json', progress=progress,
                   repair=space_repair(spec, extra_labels=[ESCALATION_LABEL], choices=genes))
    points = []
    for record in result.records:
        if record.metrics is None:
            continue
        genome = dict(record.sample)
        genome.pop(ESCALATION_LABEL, None)
        sample = {**genome, 'router/threshold': spec.threshold_choices[0]}
        key = sample_key({label: sample[label] for label in arch_labels})
        if key not in trained:  # a resumed run: the trained weights are on disk, measure them again
            evaluate({**sample, ESCALATION_LABEL: grid[0]})
        points += _pair_points(trained[key], sample, spec, device, grid)
    fronts['evolution'] = _non_dominated(points, objective)
    info['evolution'] = {'train_wall_s': round(wall['train'], 1), 'search_wall_s': 0.0,
                         'evaluated_subnets': len(trained),
                         'trained': f'{len(trained)} pairs from scratch, {trial_epochs} epoch(s) each'}

    reference = 1.1 * max(r[objective] for front in fronts.values() for r in front)
    rows = []
    for name, front in fronts.items():
        row = {'strategy': name, 'trained': info[name]['trained'], 'front_size': len(front),
               'distinct_architectures': len({json.dumps(r['sample'], sort_keys=True) for r in front}),
               'hypervolume': _hypervolume(front, objective, reference),
               'best_accuracy': max(r['accuracy'] for r in front)}
        for budget in budgets:
            row[f'best_acc_within_{budget:.2f}ms'] = max((r['accuracy'] for r in front if r[objective] <= budget),
                                                         default=0.0)
        row['train_wall_s'] = info[name]['train_wall_s']
        row['search_wall_s'] = info[name]['search_wall_s']
        rows.append(row)
    out = run.results_dir
    out.mkdir(exist_ok=True)
    write_table(rows, out / 'ablation_strategy')
    (out / 'ablation_strategy_fronts.json').write_text(json.dumps(
        {'device': device, 'objective': objective, 'split': 'validation', 'budgets_ms': budgets, 'fronts': fronts,
         'info': info}, indent=1))
    run.update_status(ablation_strategy={'done': True, 'device': device, 'train_subset': cfg.train_subset,
                                         'epochs': epochs, 'population': population, 'generations': generations,
                                         'reference_cost': reference, 'environment': environment()})
    return {'rows': rows, 'fronts': fronts}
