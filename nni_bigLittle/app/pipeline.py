"""Pipeline stages run from a YAML config: co-train the supernet (this module), search it, export, deploy, report.

``nni-biglittle cotrain CONFIG --run-dir DIR`` calls :func:`train_supernet`, which drives NNI:
``NasExperiment(BigLittleSpace(...), Lightning(CoTrainingModule(...), Trainer(...)), SandwichCoTraining(...))``.
Re-running the same command resumes from ``DIR/checkpoints/last.ckpt``; a finished run is not redone.

Training config keys (defaults in :data:`TRAIN_DEFAULTS`)::

    dataset: cifar10            # digits | cifar10 | cifar100 | fashion_mnist | imagefolder
    data_root: null             # folder or file; null searches the default places
    val_size: 5000              # seeded stratified validation split of the training set
    train_subset: null          # use only the first N (shuffled, seeded) training items
    augment: standard
    space: {preset: cifar}      # + any SpaceSpec override, e.g. width_choices: [0.5, 1.0]
    strategy: sandwich          # sandwich | progressive
    strategy_options: {}        # sandwich: num_random; progressive: phase_epochs, samples_per_step
    epochs: 16
    batch_size: 128
    optimizer: {learning_rate: 0.1, momentum: 0.9, weight_decay: 4.0e-5, nesterov: true, warmup_epochs: 1}
    loss: {}                    # LossWeights fields (nni_bigLittle.nn.losses)
    checkpoint_every: 50        # training steps between checkpoints (and at every epoch end)
    limit_train_batches: null   # cap batches per epoch (quick runs)
    seed: 0
    threads: null               # torch threads (may change between resumes)
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from nni_bigLittle.app.runs import RunFolder, environment
from nni_bigLittle.errors import ConfigError

__all__ = ['TRAIN_DEFAULTS', 'STRATEGIES', 'resolve_train_config', 'load_config', 'set_dotted', 'train_supernet',
           'ConfigError']

TRAIN_DEFAULTS: dict[str, Any] = {
    'dataset': 'cifar10', 'data_root': None, 'val_size': 5000, 'train_subset': None, 'augment': 'standard',
    'space': {'preset': 'cifar'}, 'strategy': 'sandwich', 'strategy_options': {}, 'epochs': 16, 'batch_size': 128,
    'optimizer': {'learning_rate': 0.1, 'momentum': 0.9, 'weight_decay': 4.0e-5, 'nesterov': True,
                  'warmup_epochs': 1.0},
    'loss': {}, 'checkpoint_every': 50, 'limit_train_batches': None, 'seed': 0, 'threads': None,
}
STRATEGIES = ('sandwich', 'progressive')


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'Config file {path} does not exist.')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f'{path} is not valid YAML: {err}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path} must hold a mapping of config keys, got {type(data).__name__}.')
    return data


def resolve_train_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check every key and value (nothing is loaded or trained)."""
    from nni_bigLittle.data import AUGMENTATIONS, available_datasets
    from nni_bigLittle.nn.losses import LossWeights
    unknown = sorted(set(config) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ConfigError(f'Unknown training config key(s) {unknown}; valid keys: {sorted(TRAIN_DEFAULTS)}.')
    cfg = copy.deepcopy(TRAIN_DEFAULTS)
    for key, value in config.items():
        if isinstance(cfg.get(key), dict) and isinstance(value, Mapping) and key != 'strategy_options':
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = copy.deepcopy(value)
    if cfg['dataset'] not in available_datasets():
        raise ConfigError(f'dataset {cfg["dataset"]!r} is unknown; choose one of {available_datasets()}.')
    if cfg['strategy'] not in STRATEGIES:
        raise ConfigError(f'strategy {cfg["strategy"]!r} is unknown; choose one of {STRATEGIES}.')
    if cfg['augment'] not in AUGMENTATIONS:
        raise ConfigError(f'augment {cfg["augment"]!r} is unknown; choose one of {AUGMENTATIONS}.')
    for key in ('epochs', 'batch_size', 'checkpoint_every'):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f'{key} must be a positive integer, got {cfg[key]!r}.')
    for key in ('train_subset', 'limit_train_batches', 'threads'):
        if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ConfigError(f'{key} must be null or a positive integer, got {cfg[key]!r}.')
    allowed_options = {'sandwich': {'num_random'}, 'progressive': {'phase_epochs', 'samples_per_step'}}
    bad = sorted(set(cfg['strategy_options']) - allowed_options[cfg['strategy']])
    if bad:
        raise ConfigError(f'strategy_options {bad} do not apply to {cfg["strategy"]}; allowed: '
                          f'{sorted(allowed_options[cfg["strategy"]])}.')
    if cfg['strategy'] == 'progressive':
        phases = cfg['strategy_options'].get('phase_epochs')
        if phases is not None and sum(phases) != cfg['epochs']:
            raise ConfigError(f'strategy_options.phase_epochs {phases} sum to {sum(phases)}, but epochs is '
                              f'{cfg["epochs"]}; make them agree.')
    bad = sorted(set(cfg['optimizer']) - set(TRAIN_DEFAULTS['optimizer']))
    if bad:
        raise ConfigError(f'Unknown optimizer key(s) {bad}; valid: {sorted(TRAIN_DEFAULTS["optimizer"])}.')
    try:
        LossWeights.from_dict(cfg['loss'])
    except ValueError as err:
        raise ConfigError(f'loss: {err}') from None
    space = dict(cfg['space'])
    if 'preset' not in space:
        raise ConfigError('space needs a preset (cifar or imagenet), e.g. space: {preset: cifar}.')
    return cfg


def _build_space(space_cfg: Mapping[str, Any], num_classes: int, resolution: int):
    from nni_bigLittle.search_spaces import BigLittleSpace
    options = dict(space_cfg)
    preset = options.pop('preset')
    options.setdefault('num_classes', num_classes)
    options.setdefault('resolution', resolution)
    try:
        return BigLittleSpace(preset, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f'space: {err}') from None


def load_training_data(cfg: Mapping[str, Any]):
    """The dataset splits of a resolved config (train subset applied)."""
    import numpy as np
    import torch
    from nni_bigLittle.data import load_dataset
    splits = load_dataset(cfg['dataset'], cfg['data_root'], val_size=cfg['val_size'], seed=cfg['seed'],
                          augment=cfg['augment'])
    if cfg['train_subset'] is not None and cfg['train_subset'] < len(splits.train):
        keep = np.random.default_rng(cfg['seed']).permutation(len(splits.train))[:cfg['train_subset']]
        splits.train = torch.utils.data.Subset(splits.train, sorted(keep.tolist()))
    return splits


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config[a][b] = value`` for ``key = 'a.b'`` (``optimizer.learning_rate``, ``loss.gamma``), making
    the inner mappings as needed; a plain key sets the top level."""
    *path, last = key.split('.')
    target = config
    for part in path:
        inner = target.get(part)
        if inner is None:
            inner = target[part] = {}
        elif not isinstance(inner, dict):
            raise ConfigError(f'Cannot set {key!r}: {part!r} is {inner!r}, not a mapping.')
        target = inner
    target[last] = value


def train_supernet(config: Mapping[str, Any], run_dir: str | os.PathLike, progress: bool = True,
                   trace_steps: bool = False, on_epoch=None) -> dict[str, Any]:
    """Co-train a ``BigLittleSpace`` supernet (see the module docstring). Returns the status entry.

    ``on_epoch(row)`` is called with each epoch's metrics row (as written to ``metrics.csv``)."""
    cfg = resolve_train_config(config)
    run = RunFolder(run_dir)
    resumed = run.open(cfg, ignore=('threads',))
    done = run.status().get('train', {})
    if done.get('done'):
        print(f'[cotrain] {run.path} is complete (supernet: {done["supernet"]}); nothing to do.')
        return done

    import torch
    import nni_bigLittle._nni_compat  # noqa: F401
    import nni.nas.strategy  # noqa: F401  (NNI import order: before the one-shot strategies)
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from nni.nas.experiment import NasExperiment
    from torch.utils.data import DataLoader
    from nni_bigLittle.strategies.cotraining import (
        CoTrainingModule, ProgressiveShrinking, ResumableLoader, SandwichCoTraining)

    if cfg['threads']:
        torch.set_num_threads(cfg['threads'])
    torch.manual_seed(cfg['seed'])
    splits = load_training_data(cfg)
    space = _build_space(cfg['space'], splits.num_classes, splits.resolution)
    train_loader = ResumableLoader(splits.train, cfg['batch_size'], seed=cfg['seed'])
    val_loader = DataLoader(splits.val, batch_size=256, shuffle=False)
    checkpoint = run.last_checkpoint
    if resumed and checkpoint is not None:
        print(f'[cotrain] resuming {run.path} from {checkpoint.name}')
    elif resumed:
        print(f'[cotrain] {run.path} has no checkpoint yet; starting from scratch.')
    module = CoTrainingModule(**cfg['optimizer'], loss=cfg['loss'])
    trainer = Trainer(
        max_epochs=cfg['epochs'], limit_train_batches=cfg['limit_train_batches'], accelerator='cpu'
        if not torch.cuda.is_available() else 'auto', devices=1, logger=False, enable_checkpointing=False,
        callbacks=[AtomicCheckpoint(run.checkpoints, cfg['checkpoint_every'])], num_sanity_val_steps=0,
        enable_progress_bar=progress, enable_model_summary=False, default_root_dir=str(run.path))
    evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)
    started = time.time()
    sessions = list(done.get('sessions', [])) + [{'environment': environment(cfg['threads']), 'wall_s': 0.0}]

    def record(row: Mapping[str, Any] | None = None) -> None:
        """Per-epoch metrics row, and the wall time of every invocation so far (a killed one keeps
        the time up to its last epoch end)."""
        if row is not None:
            run.upsert_metrics(row)
            if on_epoch is not None:
                on_epoch(dict(row))
        sessions[-1]['wall_s'] = round(time.time() - started, 1)
        run.update_status(train={**run.status().get('train', {}), 'sessions': sessions,
                                 'wall_s': round(sum(s['wall_s'] for s in sessions), 1)})

    common = dict(seed=cfg['seed'], resume_from=str(checkpoint) if checkpoint else None,
                  metrics_callback=record, trace_file=str(run.path / 'steps.csv') if trace_steps else None)
    options = dict(cfg['strategy_options'])
    if cfg['strategy'] == 'sandwich':
        strategy = SandwichCoTraining(**options, **common)
    else:
        strategy = ProgressiveShrinking(**options, **common)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(run.path / 'nni')
    run.update_status(train={'done': False})
    record()
    try:
        experiment.run()
    finally:
        experiment.stop()
        record()
    supernet_path = run.path / 'supernet.pt'
    space.save(supernet_path, config=cfg)
    status = {**run.status()['train'], 'done': True, 'supernet': supernet_path.name,
              'epochs': cfg['epochs'], 'final_metrics': (run.read_metrics() or [{}])[-1]}
    run.update_status(train=status)
    print(f'[cotrain] done in {status["wall_s"] / 60:.1f} min of wall time; supernet saved to {supernet_path}')
    return status


def _atomic_checkpoint(trainer, path: Path) -> None:
    tmp = path.with_suffix('.tmp')
    trainer.save_checkpoint(str(tmp), weights_only=False)  # the full state, for resume
    os.replace(tmp, path)


try:
    from pytorch_lightning import Callback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object


class AtomicCheckpoint(_Callback):
    """``last.ckpt`` every ``every`` training steps and at each epoch end, written atomically."""

    def __init__(self, folder: str | os.PathLike, every: int):
        self.folder, self.every = Path(folder), int(every)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_checkpoint(trainer, self.folder / 'last.ckpt')

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_checkpoint(trainer, self.folder / 'last.ckpt')


# ---------------------------------------------------------------------------------------------------------
# search a trained supernet, then measure chosen front models on the test split
# ---------------------------------------------------------------------------------------------------------
SEARCH_DEFAULTS: dict[str, Any] = {
    'devices': ['raspberry_pi_4', 'jetson_nano_trt_fp32'], 'metric': 'latency', 'population': 24, 'generations': 8,
    'calibration_batches': 8, 'calibration_batch_size': 128, 'budget': None, 'seed': 0,
}


def _run_data(run: RunFolder):
    """Train config of a co-training run and its data: calibration batches (training images, no
    augmentation) and the validation and test loaders."""
    import torch
    from torch.utils.data import DataLoader
    cfg = yaml.safe_load(run.config_path.read_text())
    plain = load_training_data({**cfg, 'augment': 'none'})
    generator = torch.Generator().manual_seed(cfg['seed'])
    calib_loader = DataLoader(plain.train, batch_size=SEARCH_DEFAULTS['calibration_batch_size'], shuffle=True,
                              generator=generator)
    calibration = [x for (x, _), _ in zip(calib_loader, range(SEARCH_DEFAULTS['calibration_batches']))]
    return cfg, calibration, DataLoader(plain.val, batch_size=500), DataLoader(plain.test, batch_size=500)


def _trained_supernet(run: RunFolder):
    from nni_bigLittle.search_spaces import BigLittleSpace
    path = run.path / 'supernet.pt'
    if not path.is_file():
        raise FileNotFoundError(f'{run.path} has no trained supernet (supernet.pt); run or resume '
                                f'`nni-biglittle cotrain CONFIG --run-dir {run.path}` first.')
    return BigLittleSpace.load(path)


def search_stage(run_dir: str | os.PathLike, progress: bool = True, **options: Any) -> dict[str, Any]:
    """NSGA-II on the trained supernet of a co-training run, one search per device sharing one cache of
    subnet outputs; writes ``<run>/search/<device>/front.{json,csv}``. Resumes per device."""
    from nni_bigLittle.strategies.evolution import SubnetCache, search_supernet
    unknown = sorted(set(options) - set(SEARCH_DEFAULTS))
    if unknown:
        raise ConfigError(f'Unknown search option(s) {unknown}; valid: {sorted(SEARCH_DEFAULTS)}.')
    opts = {**SEARCH_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    run = RunFolder(run_dir)
    supernet = _trained_supernet(run)
    _, calibration, val_loader, _ = _run_data(run)
    cache = SubnetCache(supernet, calibration, val_loader)
    started = time.time()
    results = {}
    # the pairs co-training trains at every step seed the first population: random draws almost never
    # reach the largest pairs, the most accurate end of the front
    from nni_bigLittle.strategies.cotraining import max_pair, min_pair
    from nni_bigLittle.strategies.evolution import DEFAULT_ESCALATION_GRID, ESCALATION_LABEL
    spec = supernet.spec
    initial = [{**max_pair(spec, fork), ESCALATION_LABEL: rate} for fork in spec.forks
               for rate in (0.3, max(DEFAULT_ESCALATION_GRID))]
    initial.append({**min_pair(spec, len(spec.trunk) // 2), ESCALATION_LABEL: 0.3})
    initial = initial[:opts['population']]
    for device in opts['devices']:
        result = search_supernet(supernet, calibration, val_loader, device=device, metric=opts['metric'],
                                 population=opts['population'], generations=opts['generations'],
                                 budget=opts['budget'], run_dir=run.path / 'search' / device, seed=opts['seed'],
                                 cache=cache, initial=initial, progress=progress)
        results[device] = {'front_size': len(result.front), 'evaluations': result.evaluations,
                           'objective': result.objective}
        print(f'[search] {device}: {len(result.front)} models on the front ({result.objective} vs accuracy)')
        for record in result.front:
            print(f'  acc {record["accuracy"]:.4f}  {result.objective} {record[result.objective]:.3f}  '
                  f'escalation {record["escalation_rate"]:.2f}  policy {record["policy"]}')
    status = {'done': True, 'options': opts, 'devices': results, 'cache_subnets': cache.computed,
              'wall_s': round(time.time() - started, 1), 'environment': environment()}
    run.update_status(search=status)
    return status


def front_record(run: RunFolder, device: str, pick: str = 'accurate') -> dict[str, Any]:
    """The searched front's ``pick`` model of ``device`` ('middle' or 'accurate', of :func:`pick_across_front`'s
    three)."""
    import json
    front_file = run.path / 'search' / device / 'front.json'
    if not front_file.is_file():
        raise FileNotFoundError(f'No front for {device} in {run.path}; run `nni-biglittle search {run.path}` first.')
    if pick not in ('middle', 'accurate'):
        raise ValueError(f"pick must be 'middle' or 'accurate', got {pick!r}.")
    summary = json.loads(front_file.read_text())
    picks = pick_across_front(summary['front'], summary['objective'], 3)
    return picks[-1] if pick == 'accurate' else picks[1 if len(picks) > 1 else 0]


def pick_across_front(front: list[dict[str, Any]], objective: str, count: int = 3) -> list[dict[str, Any]]:
    """``count`` front models spread over the cost axis: cheapest, most accurate, and evenly between."""
    ordered = sorted(front, key=lambda r: r[objective])
    if len(ordered) <= count:
        return ordered
    picks = [round(i * (len(ordered) - 1) / (count - 1)) for i in range(count)]
    return [ordered[i] for i in dict.fromkeys(picks)]


def evaluate_stage(run_dir: str | os.PathLike, count: int = 3) -> dict[str, Any]:
    """Test-split numbers of ``count`` models across each device's front (little, big and dynamic
    accuracy at the calibrated threshold, escalation rate, expected MACs, predicted latency) next to
    the largest and smallest static subnets; writes ``<run>/results/front_models.{csv,md}``."""
    import json
    from nni_bigLittle.nn.costs import arch_costs
    from nni_bigLittle.evaluation import collect_outputs, operating_point
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    from nni_bigLittle.strategies.evolution import build_model
    run = RunFolder(run_dir)
    supernet = _trained_supernet(run)
    _, calibration, _, test_loader = _run_data(run)
    spec = supernet.spec
    rows = []
    searched = sorted(p.parent.name for p in (run.path / 'search').glob('*/front.json'))
    if not searched:
        raise FileNotFoundError(f'{run.path} has no search results; run `nni-biglittle search {run.path}` first.')
    profilers = {d: BigLittleCostProfiler(spec, d, build_expression=False) for d in searched}

    def costs(sample, p):
        arch = spec.decode(sample)
        out = {'expected_mmacs': arch_costs(arch).expected_macs(p) / 1e6}
        for d, prof in profilers.items():
            out[f'latency_ms_{d}'] = prof.breakdown(sample, escalation_rate=p)['expected']
        return out

    for device in searched:
        summary = json.loads((run.path / 'search' / device / 'front.json').read_text())
        objective = summary['objective']
        for rank, record in enumerate(pick_across_front(summary['front'], objective, count)):
            model = build_model(supernet, record, calibration)
            point = operating_point(collect_outputs(model, test_loader), model.router)
            rows.append({'model': f'dynamic ({device} front #{rank + 1})', 'searched_for': device,
                         'policy': record['policy'], 'threshold': record['threshold'],
                         'val_accuracy': record['accuracy'], 'test_little_acc': point.little_acc,
                         'test_big_acc': point.big_acc, 'test_dynamic_acc': point.accuracy,
                         'test_escalation_rate': point.escalation_rate,
                         **costs(record['sample'], point.escalation_rate), 'sample': json.dumps(record['sample'])})
    for name, sample in (('static largest', spec.largest()), ('static smallest', spec.smallest())):
        model = supernet.freeze(sample)
        recalibrate_batchnorm(model, calibration)
        point = operating_point(collect_outputs(model.eval(), test_loader), 'max_softmax', threshold=1.0)
        rows.append({'model': name, 'searched_for': '', 'policy': 'always big', 'threshold': 1.0,
                     'val_accuracy': '', 'test_little_acc': point.little_acc, 'test_big_acc': point.big_acc,
                     'test_dynamic_acc': point.big_acc, 'test_escalation_rate': 1.0,
                     **_static_costs(spec, sample, profilers), 'sample': json.dumps(sample)})
    out = run.path / 'results'
    out.mkdir(exist_ok=True)
    _write_table(rows, out / 'front_models')
    run.update_status(evaluate={'done': True, 'rows': len(rows), 'environment': environment()})
    return {'rows': rows}


def _static_costs(spec, sample, profilers) -> dict[str, float]:
    """A static big network: the big path alone, no router, no little network."""
    from nni_bigLittle.nn.costs import arch_costs
    out = {'expected_mmacs': arch_costs(spec.decode(sample)).big_macs / 1e6}
    for d, prof in profilers.items():
        out[f'latency_ms_{d}'] = prof.breakdown(sample)['big']
    return out


def _write_table(rows: list[dict[str, Any]], stem: Path) -> None:
    import csv
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem.with_suffix('.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    shown = [k for k in keys if k != 'sample']
    fmt = lambda v: f'{v:.4f}' if isinstance(v, float) else str(v)  # noqa: E731
    lines = ['| ' + ' | '.join(shown) + ' |', '|' + '---|' * len(shown)]
    lines += ['| ' + ' | '.join(fmt(r.get(k, '')) for k in shown) + ' |' for r in rows]
    stem.with_suffix('.md').write_text('\n'.join(lines) + '\n')


# ---------------------------------------------------------------------------------------------------------
# standalone training (the baselines, and the ablations' independently trained networks)
# ---------------------------------------------------------------------------------------------------------
def _train_standalone(module, loader, epochs: int, recipe: Mapping[str, Any], checkpoint: Path, desc: str,
                      progress: bool = True, loss_fn=None) -> float:
    """Cross-entropy training (or ``loss_fn(module, x, y)``) with the co-training recipe's optimizer and
    schedule; resumes per epoch from ``checkpoint``. Returns the training wall time (seconds, summed over
    resumes)."""
    import math as _math
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')  # a full-budget run on a GPU
    module.to(device=device, memory_format=torch.channels_last)
    decay = [p for p in module.parameters() if p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{'params': decay, 'weight_decay': recipe['weight_decay']},
                                 {'params': no_decay, 'weight_decay': 0.0}], lr=recipe['learning_rate'],
                                momentum=recipe['momentum'], nesterov=recipe['nesterov'])
    total = epochs * len(loader)
    warmup = int(round(recipe['warmup_epochs'] * len(loader)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + _math.cos(_math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    start, wall = 0, 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        module.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        torch.set_rng_state(state['rng'].cpu())
        start, wall = state['epoch'], state['wall_s']
    for epoch in range(start, epochs):
        began = time.time()
        module.train()
        loader.batch_sampler.set_epoch(epoch)
        for x, y in tqdm(loader, desc=f'{desc} epoch {epoch + 1}/{epochs}', disable=not progress, leave=False):
            x, y = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), y.to(device)
            loss = F.cross_entropy(module(x), y) if loss_fn is None else loss_fn(module, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
        wall += time.time() - began
        tmp = checkpoint.with_suffix('.tmp')
        torch.save({'model': module.state_dict(), 'optimizer': optimizer.state_dict(),
                    'scheduler': scheduler.state_dict(), 'rng': torch.get_rng_state(), 'epoch': epoch + 1,
                    'wall_s': wall}, tmp)
        os.replace(tmp, checkpoint)
    module.to('cpu')  # evaluation and export run on the CPU
    return wall


# ---------------------------------------------------------------------------------------------------------
# export and the whole pipeline (nni-biglittle run)
# ---------------------------------------------------------------------------------------------------------
def export_stage(run_dir: str | os.PathLike, count: int = 3) -> dict[str, Any]:
    """Freeze ``count`` models across each searched front (weights from the supernet, batch norm
    re-calibrated, the calibrated threshold set) to ``<run>/export/<device>/front_<k>.pt``: a dict with
    ``sample``, ``threshold``, ``spec`` and the ``state_dict`` of the ``BigLittleModel``, loadable
    without NNI (:func:`load_exported`)."""
    import dataclasses
    import json
    import torch
    from nni_bigLittle.strategies.evolution import build_model
    run = RunFolder(run_dir)
    supernet = _trained_supernet(run)
    _, calibration, _, _ = _run_data(run)
    written = []
    for summary_path in sorted((run.path / 'search').glob('*/front.json')):
        device = summary_path.parent.name
        summary = json.loads(summary_path.read_text())
        folder = run.path / 'export' / device
        folder.mkdir(parents=True, exist_ok=True)
        for rank, record in enumerate(pick_across_front(summary['front'], summary['objective'], count)):
            model = build_model(supernet, record, calibration)
            path = folder / f'front_{rank + 1}.pt'
            torch.save({'format': 'nni_bigLittle.exported/1', 'spec': dataclasses.asdict(supernet.spec),
                        'sample': record['sample'], 'threshold': float(record['threshold']),
                        'record': {k: v for k, v in record.items() if k != 'sample'},
                        'state_dict': model.state_dict()}, path)
            written.append(str(path.relative_to(run.path)))
    if not written:
        raise FileNotFoundError(f'{run.path} has no search results; run the search stage first.')
    run.update_status(export={'done': True, 'files': written})
    return {'files': written}


def load_exported(path: str | os.PathLike, with_payload: bool = False):
    """The ``BigLittleModel`` of a file written by :func:`export_stage` (eval mode, threshold set); with
    ``with_payload``, ``(model, payload)`` where the payload holds ``spec``, ``sample`` and the front ``record``."""
    import torch
    from nni_bigLittle.nn.model import BigLittleModel
    from nni_bigLittle.search_spaces.spec import SpaceSpec
    try:
        payload = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # pickle / zip errors of a truncated or foreign file
        raise ValueError(f'{path} cannot be read as a checkpoint ({err}).') from None
    if not isinstance(payload, dict) or payload.get('format') != 'nni_bigLittle.exported/1':
        raise ValueError(f'{path} is not a model exported by nni-biglittle run / export_stage.')
    model = BigLittleModel(SpaceSpec.from_dict(payload['spec']).decode(payload['sample']))
    model.load_state_dict(payload['state_dict'])
    model.router.threshold = payload['threshold']
    return (model.eval(), payload) if with_payload else model.eval()


BUNDLE_PICKS = ('cheapest', 'middle', 'accurate')


def _exported_checkpoint(run: RunFolder, device: str | None, pick: str) -> tuple[Path, str]:
    """The front model of a run to bundle: ``<run>/export/<device>/front_<k>.pt`` (exported first if needed)."""
    exported = run.path / 'export'
    if not any(exported.glob('*/front_*.pt')):
        print(f'[export] no frozen front models in {run.path.name}/export yet: running the export stage', flush=True)
        export_stage(run.path)
    devices = [p.name for p in sorted(exported.iterdir()) if any(p.glob('front_*.pt'))]
    preferred = [d for d in SEARCH_DEFAULTS['devices'] if d in devices] + [d for d in devices
                                                                          if d not in SEARCH_DEFAULTS['devices']]
    if device is None:
        device = preferred[0]
    elif device not in devices:
        raise ValueError(f'{run.path.name} has no front models for device {device!r}; it has {devices}.')
    files = sorted((exported / device).glob('front_*.pt'), key=lambda p: int(p.stem.split('_')[1]))
    index = {'cheapest': 0, 'middle': len(files) // 2, 'accurate': len(files) - 1}[pick]
    return files[index], device


def export_bundle(source: str | os.PathLike, out: str | os.PathLike, *, device: str | None = None,
                  pick: str = 'accurate', verify: int | None = 1000, sample_images: int = 256,
                  progress: bool = True) -> dict[str, Any]:
    """A deployment bundle (``nni-biglittle export``) from a run folder or an exported checkpoint.

    From a run: the ``pick`` model (cheapest / middle / most accurate of the frozen front models) of
    ``device``'s front (default: the first searched device). Verified against PyTorch on the first ``verify``
    test images (``None``: all of them, ``0``: skip) and given the first ``sample_images`` raw test images
    as ``data.npz``. A checkpoint outside a run folder has no data to verify with or to preprocess for:
    its bundle takes ready float input only."""
    import dataclasses
    import torch
    from torch.utils.data import DataLoader, Subset
    from nni_bigLittle.data import ArrayDataset
    from nni_bigLittle.deploy.export import write_bundle
    if pick not in BUNDLE_PICKS:
        raise ValueError(f'pick must be one of {BUNDLE_PICKS}, got {pick!r}.')
    source = Path(source)
    if source.is_dir():
        run = RunFolder(source)
        if not run.config_path.is_file():
            raise FileNotFoundError(f'{source} is not a run folder (no config.yaml) or a .pt checkpoint; give the '
                                    'folder of a `nni-biglittle run` / `cotrain` + `search` run.')
        checkpoint, device = _exported_checkpoint(run, device, pick)
    elif source.is_file():
        checkpoint = source
        holder = next((p for p in source.parents if (p / 'config.yaml').is_file()), None)
        run = RunFolder(holder) if holder is not None else None
        device = source.parent.name if run is not None else None
    else:
        raise FileNotFoundError(f'{source}: no such run folder or checkpoint.')
    model, payload = load_exported(checkpoint, with_payload=True)
    meta = {'checkpoint': checkpoint.name, 'device': device, 'front_record': payload.get('record')}
    preprocess = class_names = verify_inputs = sample_data = None
    if run is not None:
        cfg = yaml.safe_load(run.config_path.read_text())
        splits = load_training_data({**cfg, 'augment': 'none'})
        preprocess = {'mean': splits.info['mean'], 'std': splits.info['std']}
        class_names = splits.class_names
        meta.update(run=run.path.name, checkpoint=str(checkpoint.relative_to(run.path)), dataset=splits.name)
        n_test = len(splits.test)
        count = n_test if verify is None else min(int(verify), n_test)
        if count > 0:
            verify_inputs = [x for x, _ in DataLoader(Subset(splits.test, range(count)), batch_size=250)]
            meta['verified_on'] = f'the first {count} of {n_test} test images of {splits.name}'
        if sample_images > 0 and isinstance(splits.test, ArrayDataset):
            k = min(sample_images, n_test)
            sample_data = {'x_test': splits.test.images[:k].permute(0, 2, 3, 1).contiguous().numpy(),
                           'y_test': splits.test.labels[:k].numpy()}
    else:
        print(f'[export] {checkpoint.name} is not inside a run folder: no data to verify with, and the bundle '
              'takes ready (preprocessed) float input only', flush=True)
    spec = payload['spec'] if isinstance(payload['spec'], dict) else dataclasses.asdict(payload['spec'])
    with torch.no_grad():
        return write_bundle(model, out, preprocess=preprocess, class_names=class_names, spec=spec,
                            verify_inputs=verify_inputs, sample_data=sample_data, source=meta, progress=progress)


DEPLOY_DEFAULTS: dict[str, Any] = {'pick': 'accurate', 'verify': 1000, 'bench_images': 200, 'bench_rounds': 3}


def deploy_stage(run_dir: str | os.PathLike, pick: str = 'accurate', verify: int | None = 1000,
                 bench_images: int = 200, bench_rounds: int = 3, progress: bool = True) -> dict[str, Any]:
    """For each searched device: a deployment bundle of its ``pick`` front model in ``<run>/bundles/<device>``
    (verified against PyTorch on ``verify`` test images) and a short side-by-side benchmark of it on this
    machine (ONNX Runtime, 1 thread), ``<run>/results/bench_<device>.{md,json}``. Done bundles and benchmarks
    are kept on a re-run."""
    import json
    from nni_bigLittle.deploy.bench import bench, format_bench, write_bench
    run = RunFolder(run_dir)
    devices = sorted(p.parent.name for p in (run.path / 'search').glob('*/front.json'))
    if not devices:
        raise FileNotFoundError(f'{run.path} has no search results; run the search stage first.')
    written = {}
    for device in devices:
        folder = run.path / 'bundles' / device
        manifest = folder / 'manifest.json'
        if not manifest.is_file() or json.loads(manifest.read_text()).get('verification') is None:
            export_bundle(run.path, folder, device=device, pick=pick, verify=verify, progress=progress)
        results = run.path / 'results' / f'bench_{device}'
        if not (results / 'bench.json').is_file():
            result = bench(folder, images=bench_images, rounds=bench_rounds, warmup=10, progress=progress)
            write_bench(result, results)
            print(f'[deploy] {device}: bundle {folder.relative_to(run.path)}, measured here:\n' + format_bench(result))
        written[device] = {'bundle': str(folder.relative_to(run.path)), 'bench': str(results.relative_to(run.path))}
    run.update_status(deploy={'done': True, 'devices': written})
    return written


PIPELINE_KEYS = ('run_dir', 'train', 'search', 'export', 'deploy', 'report')


def resolve_pipeline_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a pipeline config (``nni-biglittle run``) and fill its defaults; nothing is started."""
    unknown = sorted(set(config) - set(PIPELINE_KEYS))
    if unknown:
        raise ConfigError(f'Unknown pipeline key(s) {unknown}; valid keys: {list(PIPELINE_KEYS)} '
                          '(train holds the co-training config).')
    if not isinstance(config.get('train'), Mapping):
        raise ConfigError('The pipeline needs a train: mapping (the co-training config, see nni_bigLittle.app.pipeline).')
    if not config.get('run_dir'):
        raise ConfigError('The pipeline needs run_dir: the folder of the run (resumed when it exists).')
    search = dict(config.get('search') or {})
    bad = sorted(set(search) - set(SEARCH_DEFAULTS))
    if bad:
        raise ConfigError(f'Unknown search option(s) {bad}; valid: {sorted(SEARCH_DEFAULTS)}.')
    search = {**SEARCH_DEFAULTS, **search}
    for device in search['devices']:
        from nni_bigLittle.evaluation.pairs import _profiler
        try:
            _profiler(device, search['metric'] if search['metric'] != 'macs' else 'latency')
        except (KeyError, ValueError) as err:
            raise ConfigError(f'search.devices: {err}') from None
    export = {'count': 3, **dict(config.get('export') or {})}
    report = {'count': 3, **dict(config.get('report') or {})}
    for name, section in (('export', export), ('report', report)):
        if set(section) != {'count'} or not isinstance(section['count'], int) or section['count'] < 1:
            raise ConfigError(f'{name} takes only count: a positive int (models per front), got {section}.')
    deploy = dict(config.get('deploy') or {})
    bad = sorted(set(deploy) - set(DEPLOY_DEFAULTS))
    if bad:
        raise ConfigError(f'Unknown deploy option(s) {bad}; valid: {sorted(DEPLOY_DEFAULTS)}.')
    deploy = {**DEPLOY_DEFAULTS, **deploy}
    if deploy['pick'] not in BUNDLE_PICKS:
        raise ConfigError(f'deploy.pick must be one of {BUNDLE_PICKS}, got {deploy["pick"]!r}.')
    for key in ('verify', 'bench_images', 'bench_rounds'):
        if not isinstance(deploy[key], int) or deploy[key] < (0 if key == 'verify' else 1):
            raise ConfigError(f'deploy.{key} must be a {"non-negative" if key == "verify" else "positive"} int, '
                              f'got {deploy[key]!r}.')
    return {'run_dir': str(config['run_dir']), 'train': resolve_train_config(config['train']), 'search': search,
            'export': export, 'deploy': deploy, 'report': report}


def run_pipeline(config: Mapping[str, Any], run_dir: str | os.PathLike | None = None, progress: bool = True,
                 base: str | os.PathLike = '.') -> dict[str, Any]:
    """train supernet (NNI ``NasExperiment`` + co-training strategy) -> multi-objective search per device
    -> export front models -> deploy (ONNX bundles, verified, benchmarked here) -> report (test split); each
    stage resumes or is skipped when done. Relative
    ``run_dir`` and ``train.data_root`` are taken from ``base`` (the config file's folder). Prints the
    Pareto fronts and the report table; returns the status."""
    cfg = resolve_pipeline_config(config)
    base = Path(base)
    run_path = Path(run_dir) if run_dir is not None else base / cfg['run_dir']
    train = dict(cfg['train'])
    if train['data_root'] is not None and not Path(train['data_root']).is_absolute():
        train['data_root'] = str((base / train['data_root']).resolve())
    from nni_bigLittle.data import load_dataset
    load_dataset(train['dataset'], train['data_root'], val_size=train['val_size'], seed=train['seed'],
                 augment='none')  # a missing dataset fails here, before anything starts
    stages = [('train', 'co-train the supernet'), ('search', 'Pareto search per device'),
              ('export', 'freeze front models'), ('deploy', 'ONNX bundles, verified and measured here'),
              ('report', 'test-split report')]
    started = time.time()
    for i, (stage, what) in enumerate(stages):
        print(f'[run] stage {i + 1}/{len(stages)}: {stage} ({what})', flush=True)
        if stage == 'train':
            train_supernet(train, run_path, progress=progress)
        elif stage == 'search':
            search_stage(run_path, progress=progress, **cfg['search'])
        elif stage == 'export':
            files = export_stage(run_path, count=cfg['export']['count'])['files']
            print(f'[run] exported {len(files)} models to {run_path / "export"}')
        elif stage == 'deploy':
            deploy_stage(run_path, progress=progress, **cfg['deploy'])
        else:
            evaluate_stage(run_path, count=cfg['report']['count'])
    print(format_fronts(run_path))
    print((run_path / 'results' / 'front_models.md').read_text())
    run = RunFolder(run_path)
    run.update_status(pipeline={'done': True, 'wall_s_last_invocation': round(time.time() - started, 1)})
    return run.status()


def format_fronts(run_dir: str | os.PathLike) -> str:
    """The searched Pareto fronts of a run as text tables (one per device)."""
    import json
    out = []
    for summary_path in sorted((Path(run_dir) / 'search').glob('*/front.json')):
        summary = json.loads(summary_path.read_text())
        objective = summary['objective']
        out.append(f'Pareto front for {summary_path.parent.name} ({len(summary["front"])} models, validation):')
        out.append(f'  {"accuracy":>8}  {objective:>28}  {"escalation":>10}  {"little_acc":>10}  {"big_acc":>8}  policy')
        for r in sorted(summary['front'], key=lambda r: r[objective]):
            out.append(f'  {r["accuracy"]:8.4f}  {r[objective]:28.3f}  {r["escalation_rate"]:10.2f}  '
                       f'{r["little_acc"]:10.4f}  {r["big_acc"]:8.4f}  {r["policy"]}')
    return '\n'.join(out)
