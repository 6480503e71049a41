"""The one training recipe (nni_bigLittle.training): it learns, its schedule is the documented one, and a run
killed between epochs resumes to the same weights as an uninterrupted one."""
import csv

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from nni_bigLittle.data import load_dataset
from nni_bigLittle.errors import ConfigError
from nni_bigLittle.strategies.cotraining import ResumableLoader
from nni_bigLittle.training import Recipe, configure_sgd, fit
from nni_bigLittle.training.recipe import warmup_cosine


def _digits(augment='none'):
    return load_dataset('digits', val_size=300, seed=0, augment=augment, resolution=32)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _accuracy(model, dataset) -> float:
    model.eval()
    with torch.no_grad():
        loader = torch.utils.data.DataLoader(dataset, batch_size=500)
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return hits / len(dataset)


def test_recipe_checks_its_values_and_names_the_valid_keys():
    with pytest.raises(ConfigError, match='learning_rate must be > 0'):
        Recipe(learning_rate=0)
    with pytest.raises(ConfigError, match=r"Unknown optimizer key\(s\) \['lr'\]; valid: \['learning_rate'"):
        Recipe.from_dict({'lr': 0.1})
    assert Recipe.from_dict({'learning_rate': 0.05}).learning_rate == 0.05


def test_schedule_warms_up_linearly_then_decays_to_zero_and_spares_bn_from_weight_decay():
    assert [round(warmup_cosine(s, 10, 4), 3) for s in (0, 3)] == [0.2, 0.8]
    assert warmup_cosine(4, 10, 4) == pytest.approx(1.0) and warmup_cosine(10, 10, 4) == pytest.approx(0.0)
    model = _net()
    config = configure_sgd(model.parameters(), Recipe(weight_decay=1e-3), total_steps=10, steps_per_epoch=5)
    decay, no_decay = config['optimizer'].param_groups
    assert decay['weight_decay'] == 1e-3 and all(p.ndim > 1 for p in decay['params'])
    assert no_decay['weight_decay'] == 0.0 and len(no_decay['params']) == 7  # 2 BN x (weight, bias), 3 biases
    assert config['lr_scheduler']['interval'] == 'step'


def test_fit_learns_logs_each_epoch_and_leaves_the_model_on_cpu_in_eval_mode(tmp_path):
    splits = _digits()
    untrained = _accuracy(_net(), splits.val)
    model = _net()
    loader = ResumableLoader(splits.train, 64, seed=0)
    result = fit(model, loader, epochs=4, recipe=Recipe(learning_rate=0.3), folder=tmp_path, progress=False,
                 val_loader=torch.utils.data.DataLoader(splits.val, batch_size=256))
    trained = _accuracy(model, splits.val)
    assert trained > untrained + 0.3, (untrained, trained)  # a fresh net is near chance (0.1) on 10 classes
    assert not model.training and next(model.parameters()).device.type == 'cpu'
    assert result.wall_s > 0 and result.metrics['val_acc'] == pytest.approx(trained, abs=0.02)
    with open(tmp_path / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r['epoch']) for r in rows if r['val_acc']}) == [0, 1, 2, 3]
    assert sorted({int(r['epoch']) for r in rows if r['train_loss']}) == [0, 1, 2, 3]
    # a finished training is not redone: the same weights and the same recorded training time come back
    again = _net()
    assert fit(again, loader, epochs=4, recipe=Recipe(learning_rate=0.3), folder=tmp_path, progress=False).wall_s \
        == result.wall_s
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


class _KillAtEpoch(pl.Callback):
    """Stands in for a kill between epochs: the process dies as the given epoch starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyError('killed')


def test_a_run_killed_between_epochs_resumes_to_the_uninterrupted_weights(tmp_path):
    splits = _digits('standard')  # the augmentation draws from the global RNG: its state must come back too

    def run(folder, callbacks=()):
        torch.manual_seed(0)
        model = _net()
        torch.manual_seed(1)
        result = fit(model, ResumableLoader(splits.train, 64, seed=0), epochs=3, folder=folder, progress=False,
                     callbacks=callbacks)
        return model, result

    whole, _ = run(tmp_path / 'whole')
    with pytest.raises(KeyError, match='killed'):
        run(tmp_path / 'resumed', [_KillAtEpoch(2)])
    torch.manual_seed(123)  # a new process: its RNG starts elsewhere
    resumed, result = run(tmp_path / 'resumed')
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert result.wall_s > 0
