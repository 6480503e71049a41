"""Shared test helpers: tiny spaces, digits configs and a small trained supernet (imported by test modules as
``from helpers import ...``; fixtures live in conftest.py)."""
import functools
import random

import torch
import yaml

TINY_SPACE = {'preset': 'cifar', 'width_choices': [0.5, 1.0], 'depth_choices': [1, 2], 'little_depth_choices': [0, 1, 2],
              'kernel_choices': [3, 5], 'expand_choices': [2, 4]}


def digits_config(**overrides):
    config = {'dataset': 'digits', 'val_size': 300, 'space': dict(TINY_SPACE), 'batch_size': 64, 'epochs': 6,
              'checkpoint_every': 5, 'strategy_options': {'num_random': 1}, 'threads': 1}
    config.update(overrides)
    return config


TINY = dict(preset='cifar', num_classes=10, width_choices=(0.5, 1.0), depth_choices=(1, 2),
            little_depth_choices=(0, 1, 2), kernel_choices=(3, 5), expand_choices=(2, 4))


@functools.lru_cache(maxsize=1)
def trained_tiny_supernet(steps: int = 12):
    """A tiny BigLittleSpace trained a few sandwich steps on digits (shared by the evaluation and evolution tests;
    callers must not modify it)."""
    from nni_bigLittle.data import load_dataset, make_loaders
    from nni_bigLittle.nn.losses import JointLoss
    from nni_bigLittle.search_spaces import BigLittleSpace
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        space = BigLittleSpace(**TINY)
        splits = load_dataset('digits', augment='none')
        train, _, _ = make_loaders(splits, batch_size=32, seed=0)
        optimizer = torch.optim.SGD(space.parameters(), lr=0.05, momentum=0.9)
        loss_fn, rng = JointLoss(), random.Random(0)
        space.train()
        for step, (x, y) in enumerate(train):
            if step == steps:
                break
            for sample in (space.largest(), space.random(random_state=rng)):
                space.activate(sample)
                loss, _ = loss_fn(space.forward_all(x), y, router=space.router)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return space.eval()


@functools.lru_cache(maxsize=1)
def digits_batches(batch_size: int = 48, calib: int = 3):
    """(calibration inputs, validation loader) on digits: fixed, unshuffled, no augmentation."""
    from nni_bigLittle.data import load_dataset
    splits = load_dataset('digits', augment='none')
    loader = torch.utils.data.DataLoader(splits.train, batch_size=batch_size, shuffle=False)
    calib_batches = [x for x, _ in list(loader)[:calib]]
    val = torch.utils.data.DataLoader(splits.val, batch_size=batch_size, shuffle=False)
    return calib_batches, val


def pipeline_config(tmp_path, **train_overrides) -> str:
    config = {'run_dir': 'run', 'train': digits_config(epochs=2, limit_train_batches=6, **train_overrides),
              'search': {'devices': ['raspberry_pi_4', 'jetson_nano_trt_fp32'], 'population': 6, 'generations': 1},
              'export': {'count': 2}, 'report': {'count': 2}}
    path = tmp_path / 'pipeline.yaml'
    path.write_text(yaml.safe_dump(config))
    return str(path)
