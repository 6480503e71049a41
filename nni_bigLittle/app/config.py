"""The configs a user writes, checked once before anything starts: the co-training config and the pipeline
config (``nni-biglittle run``); every key has its default here.

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

The pipeline config holds ``run_dir``, ``train`` (the training config above) and the options of the ``search``,
``export``, ``deploy`` and ``report`` stages (:data:`SEARCH_DEFAULTS`, :data:`DEPLOY_DEFAULTS`).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from nni_bigLittle.errors import ConfigError

__all__ = ['TRAIN_DEFAULTS', 'TrainConfig', 'SEARCH_DEFAULTS', 'DEPLOY_DEFAULTS', 'BUNDLE_PICKS', 'PIPELINE_KEYS',
           'ConfigError', 'load_config', 'resolve_train_config', 'set_dotted', 'resolve_pipeline_config']


TRAIN_DEFAULTS: dict[str, Any] = {
    'dataset': 'cifar10', 'data_root': None, 'val_size': 5000, 'train_subset': None, 'augment': 'standard',
    'space': {'preset': 'cifar'}, 'strategy': 'sandwich', 'strategy_options': {}, 'epochs': 16, 'batch_size': 128,
    'optimizer': {'learning_rate': 0.1, 'momentum': 0.9, 'weight_decay': 4.0e-5, 'nesterov': True,
                  'warmup_epochs': 1.0},
    'loss': {}, 'checkpoint_every': 50, 'limit_train_batches': None, 'seed': 0, 'threads': None,
}


SEARCH_DEFAULTS: dict[str, Any] = {
    'devices': ['raspberry_pi_4', 'jetson_nano_trt_fp32'], 'metric': 'latency', 'population': 24, 'generations': 8,
    'calibration_batches': 8, 'calibration_batch_size': 128, 'budget': None, 'seed': 0,
}


DEPLOY_DEFAULTS: dict[str, Any] = {'pick': 'accurate', 'verify': 1000, 'bench_images': 200, 'bench_rounds': 3}


BUNDLE_PICKS = ('cheapest', 'middle', 'accurate')


PIPELINE_KEYS = ('run_dir', 'train', 'search', 'export', 'deploy', 'report')


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


@dataclass(frozen=True)
class TrainConfig:
    """A co-training config, checked once (:meth:`from_mapping`) and then passed around as this typed object.

    Its fields are the keys of :data:`TRAIN_DEFAULTS` (see the module docstring); :meth:`to_dict` is the plain
    form a run folder stores in ``config.yaml``. ``optimizer`` and ``loss`` stay mappings there; :attr:`recipe`
    and :attr:`loss_weights` are their typed forms."""
    dataset: str
    data_root: str | None
    val_size: int | float | None
    train_subset: int | None
    augment: str
    space: Mapping[str, Any]
    strategy: str
    strategy_options: Mapping[str, Any]
    epochs: int
    batch_size: int
    optimizer: Mapping[str, Any]
    loss: Mapping[str, Any]
    checkpoint_every: int
    limit_train_batches: int | None
    seed: int
    threads: int | None

    @classmethod
    def from_mapping(cls, config: 'Mapping[str, Any] | TrainConfig') -> 'TrainConfig':
        """Fill defaults and check every key and value (nothing is loaded or trained); a wrong key or value
        raises :class:`ConfigError` naming it and what is allowed."""
        if isinstance(config, TrainConfig):
            return config
        return cls(**_checked_train_config(config))

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy({f.name: getattr(self, f.name) for f in fields(self)})

    def replace(self, **changes: Any) -> 'TrainConfig':
        """A copy with ``changes``, checked like any config."""
        return TrainConfig.from_mapping({**self.to_dict(), **changes})

    @property
    def recipe(self):
        """The optimizer recipe (:class:`nni_bigLittle.training.Recipe`)."""
        from nni_bigLittle.training.recipe import Recipe
        return Recipe.from_dict(self.optimizer)

    @property
    def loss_weights(self):
        """The joint loss's weights (:class:`nni_bigLittle.nn.losses.LossWeights`)."""
        from nni_bigLittle.nn.losses import LossWeights
        return LossWeights.from_dict(self.loss)


def resolve_train_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The plain (YAML) form of a checked training config: ``TrainConfig.from_mapping(config).to_dict()``."""
    return TrainConfig.from_mapping(config).to_dict()


def _checked_train_config(config: Mapping[str, Any]) -> dict[str, Any]:
    from nni_bigLittle.data import AUGMENTATIONS, available_datasets
    from nni_bigLittle.nn.losses import LossWeights
    from nni_bigLittle.training.recipe import Recipe
    if not isinstance(config, Mapping):
        raise ConfigError(f'A training config is a mapping of keys, got {type(config).__name__}.')
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
    from nni_bigLittle.strategies.cotraining import COTRAINING_STRATEGIES
    if cfg['strategy'] not in COTRAINING_STRATEGIES:
        raise ConfigError(f'strategy {cfg["strategy"]!r} is unknown; choose one of {COTRAINING_STRATEGIES.names()}.')
    if cfg['augment'] not in AUGMENTATIONS:
        raise ConfigError(f'augment {cfg["augment"]!r} is unknown; choose one of {AUGMENTATIONS}.')
    for key in ('epochs', 'batch_size', 'checkpoint_every', 'seed'):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < (0 if key == 'seed' else 1):
            raise ConfigError(f'{key} must be a {"non-negative" if key == "seed" else "positive"} integer, '
                              f'got {cfg[key]!r}.')
    for key in ('train_subset', 'limit_train_batches', 'threads'):
        if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ConfigError(f'{key} must be null or a positive integer, got {cfg[key]!r}.')
    for key in ('space', 'strategy_options', 'optimizer', 'loss'):
        if not isinstance(cfg[key], Mapping):
            raise ConfigError(f'{key} must be a mapping, got {cfg[key]!r}.')
    allowed = COTRAINING_STRATEGIES.get(cfg['strategy']).OPTIONS
    bad = sorted(set(cfg['strategy_options']) - set(allowed))
    if bad:
        raise ConfigError(f'strategy_options {bad} do not apply to {cfg["strategy"]}; allowed: {sorted(allowed)}.')
    if cfg['strategy'] == 'progressive':
        phases = cfg['strategy_options'].get('phase_epochs')
        if phases is not None and sum(phases) != cfg['epochs']:
            raise ConfigError(f'strategy_options.phase_epochs {phases} sum to {sum(phases)}, but epochs is '
                              f'{cfg["epochs"]}; make them agree.')
    bad = sorted(set(cfg['optimizer']) - set(TRAIN_DEFAULTS['optimizer']))
    if bad:
        raise ConfigError(f'Unknown optimizer key(s) {bad}; valid: {sorted(TRAIN_DEFAULTS["optimizer"])}.')
    try:
        Recipe.from_dict(cfg['optimizer'])
    except ConfigError as err:
        raise ConfigError(f'optimizer: {err}') from None
    try:
        LossWeights.from_dict(cfg['loss'])
    except ValueError as err:
        raise ConfigError(f'loss: {err}') from None
    if 'preset' not in cfg['space']:
        raise ConfigError('space needs a preset (cifar or imagenet), e.g. space: {preset: cifar}.')
    return cfg


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


def resolve_pipeline_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a pipeline config (``nni-biglittle run``) and fill its defaults; nothing is started."""
    unknown = sorted(set(config) - set(PIPELINE_KEYS))
    if unknown:
        raise ConfigError(f'Unknown pipeline key(s) {unknown}; valid keys: {list(PIPELINE_KEYS)} '
                          '(train holds the co-training config).')
    if not isinstance(config.get('train'), Mapping):
        raise ConfigError('The pipeline needs a train: mapping (the co-training config, see nni_bigLittle.app.config).')
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
    return {'run_dir': str(config['run_dir']), 'train': TrainConfig.from_mapping(config['train']), 'search': search,
            'export': export, 'deploy': deploy, 'report': report}
