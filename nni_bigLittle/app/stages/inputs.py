"""What the stages read from a config or a run folder: the dataset splits, the search space, the calibration
batches and loaders of a run, and its trained supernet."""
from __future__ import annotations

from typing import Any, Mapping

from nni_bigLittle.app.config import SEARCH_DEFAULTS, TrainConfig
from nni_bigLittle.app.runs import RunFolder
from nni_bigLittle.errors import ConfigError

__all__ = ['build_space', 'load_training_data', 'run_data', 'trained_supernet']


def build_space(space_cfg: Mapping[str, Any], num_classes: int, resolution: int):
    from nni_bigLittle.search_spaces import BigLittleSpace
    options = dict(space_cfg)
    preset = options.pop('preset')
    options.setdefault('num_classes', num_classes)
    options.setdefault('resolution', resolution)
    try:
        return BigLittleSpace(preset, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f'space: {err}') from None


def load_training_data(cfg: TrainConfig | Mapping[str, Any], augment: str | None = None):
    """The dataset splits of a training config (train subset applied); ``augment`` overrides the config's."""
    import numpy as np
    import torch
    from nni_bigLittle.data import load_dataset
    cfg = TrainConfig.from_mapping(cfg)
    splits = load_dataset(cfg.dataset, cfg.data_root, val_size=cfg.val_size, seed=cfg.seed,
                          augment=cfg.augment if augment is None else augment)
    if cfg.train_subset is not None and cfg.train_subset < len(splits.train):
        keep = np.random.default_rng(cfg.seed).permutation(len(splits.train))[:cfg.train_subset]
        splits.train = torch.utils.data.Subset(splits.train, sorted(keep.tolist()))
    return splits


def run_data(run: RunFolder):
    """Train config (:class:`~nni_bigLittle.app.config.TrainConfig`) of a co-training run and its data: calibration batches (training images, no
    augmentation) and the validation and test loaders."""
    import torch
    from torch.utils.data import DataLoader
    cfg = TrainConfig.from_mapping(run.config())
    plain = load_training_data(cfg, augment='none')
    generator = torch.Generator().manual_seed(cfg.seed)
    calib_loader = DataLoader(plain.train, batch_size=SEARCH_DEFAULTS['calibration_batch_size'], shuffle=True,
                              generator=generator)
    calibration = [x for (x, _), _ in zip(calib_loader, range(SEARCH_DEFAULTS['calibration_batches']))]
    return cfg, calibration, DataLoader(plain.val, batch_size=500), DataLoader(plain.test, batch_size=500)


def trained_supernet(run: RunFolder):
    from nni_bigLittle.search_spaces import BigLittleSpace
    path = run.supernet_path
    if not path.is_file():
        raise FileNotFoundError(f'{run.path} has no trained supernet (supernet.pt); run or resume '
                                f'`nni-biglittle cotrain CONFIG --run-dir {run.path}` first.')
    return BigLittleSpace.load(path)
