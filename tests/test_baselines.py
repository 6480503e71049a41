"""Baselines (timm networks adapted to 32x32, BranchyNet exits) trained with a co-training recipe, on digits."""
import csv
import json

import numpy as np
import pytest
import torch
import yaml

from nni_bigLittle.app.baselines import EarlyExitNetwork, create_baseline, resolve_baseline_config
from nni_bigLittle.app.cli import main

from helpers import digits_config


def test_static_baselines_keep_32x32_at_the_stem():
    for name in ('mobilenetv3_small', 'mobilenetv3_large', 'efficientnet_b0'):
        model = create_baseline(name, 10, 32).eval()
        assert model.conv_stem.stride == (1, 1)
        with torch.no_grad():
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert create_baseline('mobilenetv3_small', 10, 224).conv_stem.stride == (2, 2)  # ImageNet sizes untouched


def test_branchynet_exits_and_their_segments_compute_the_same_logits():
    torch.manual_seed(0)
    model = create_baseline('branchynet_mobilenetv3_large', 10, 32, exit_stages=(2, 4)).eval()
    assert isinstance(model, EarlyExitNetwork)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        assert len(logits) == 3 and all(t.shape == (3, 10) for t in logits)
        features, from_segments = x, []  # the costed parts, run in turn, are the network
        for segment in model.segments():
            out, features = segment(features)
            from_segments.append(out)
    for a, b in zip(logits, from_segments):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match='exit_stages'):
        EarlyExitNetwork(model.backbone, (4, 2), 10)


def _config(tmp_path, **recipe):
    (tmp_path / 'recipe.yaml').write_text(yaml.safe_dump(digits_config(epochs=1, **recipe)))
    config = {'recipe': 'recipe.yaml', 'models': ['mobilenetv3_small', 'branchynet_mobilenetv3_large'],
              'exit_stages': [1, 3]}
    (tmp_path / 'baselines.yaml').write_text(yaml.safe_dump(config))
    return tmp_path / 'baselines.yaml'


def test_baselines_train_with_the_recipe_and_store_every_exit(tmp_path, capsys):
    config = _config(tmp_path, train_subset=256)
    run = tmp_path / 'run'
    assert main(['baselines', 'train', str(config), '--run-dir', str(run), '--quiet']) == 0
    assert 'mobilenetv3_small: test top-1' in capsys.readouterr().out
    resolved = yaml.safe_load((run / 'config.yaml').read_text())
    assert resolved['recipe']['dataset'] == 'digits' and resolved['recipe']['epochs'] == 1
    for name, heads in (('mobilenetv3_small', 1), ('branchynet_mobilenetv3_large', 3)):
        folder = run / 'baselines' / name
        status = json.loads((folder / 'status.json').read_text())
        assert status['heads'] == heads and status['epochs'] == 1 and status['params'] > 1e5
        checkpoint = torch.load(folder / 'train' / 'last.ckpt', weights_only=True)  # Lightning's, plain data
        assert checkpoint['epoch'] == 0 and checkpoint['global_step'] > 0 and checkpoint['biglittle_wall_s'] > 0
        with open(folder / 'train' / 'metrics.csv') as f:  # per-epoch training loss and validation accuracy
            rows = list(csv.DictReader(f))
        assert any(r['train_loss'] for r in rows) and 0 <= max(float(r['val_acc'] or 0) for r in rows) <= 1
        with np.load(folder / 'outputs.npz') as out:
            assert len(out['test_labels']) == 359 and len(out['val_labels']) == 300
            for k in range(heads):
                assert out[f'test_logits_{k}'].shape == (359, 10) and np.isfinite(out[f'test_logits_{k}']).all()
    before = (run / 'baselines' / 'mobilenetv3_small' / 'status.json').read_text()
    assert main(['baselines', 'train', str(config), '--run-dir', str(run), '--model', 'mobilenetv3_small',
                 '--quiet']) == 0  # done: kept, not retrained
    assert (run / 'baselines' / 'mobilenetv3_small' / 'status.json').read_text() == before


def test_baseline_configs_are_checked_before_anything_trains(tmp_path, capsys):
    config = _config(tmp_path)
    data = yaml.safe_load(config.read_text())
    for change, message in (({'models': ['resnet50']}, 'resnet50'), ({'recipe': 'missing.yaml'}, 'missing.yaml'),
                            ({'exit_weights': [1.0]}, 'exit_weights'), ({'depth': 3}, 'depth')):
        (tmp_path / 'bad.yaml').write_text(yaml.safe_dump({**data, **change}))
        assert main(['baselines', 'train', str(tmp_path / 'bad.yaml'), '--run-dir', str(tmp_path / 'r')]) == 2
        assert message in capsys.readouterr().err
    assert main(['baselines', 'train', str(config), '--run-dir', str(tmp_path / 'r'), '--model',
                 'efficientnet_b0']) == 2
    assert 'not in this config' in capsys.readouterr().err
    assert resolve_baseline_config(data, tmp_path)['exit_weights'] == [1.0, 1.0, 1.0]
