"""Co-training: the joint loss, SandwichCoTraining / ProgressiveShrinking through NasExperiment, resume after a kill."""
import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from nni_bigLittle.nn.losses import JointLoss, LossWeights, consistency_loss, distillation, routing_loss
from nni_bigLittle.nn.model import BigLittleOutput
from nni_bigLittle.app.config import ConfigError, TrainConfig, resolve_train_config
from nni_bigLittle.app.stages.train import train_supernet
from nni_bigLittle.app.runs import RunConfigMismatch
from nni_bigLittle.strategies.cotraining import (
    PHASES, ResumableBatchSampler, draw_pair, max_pair, min_pair, phase_choices)

from conftest import REPO
from helpers import digits_config

# ----- the joint loss ---------------------------------------------------------------------------------------------
def test_distillation_is_zero_for_identical_predictions_and_positive_otherwise():
    logits = torch.randn(8, 10)
    assert distillation(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation(logits, torch.randn(8, 10)).item() > 0.01


def test_routing_loss_weights_inputs_where_escalation_pays():
    torch.manual_seed(0)
    mlp = torch.nn.Linear(4 + 3, 1)
    little = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0]])  # predicts class 0 for all
    big = torch.tensor([[0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    features = torch.randn(3, 4)
    target = torch.tensor([0, 1, 2])  # little right / little wrong+big right / little wrong+big right
    target_hopeless = torch.tensor([0, 2, 1])  # inputs 1, 2: both wrong
    from nni_bigLittle.nn.router import router_logit
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        router_logit(mlp, little, features), torch.tensor([1.0, 0.0, 0.0]), reduction='none')
    expected = (bce * torch.tensor([1.0, 2.0, 2.0])).mean()
    assert routing_loss(mlp, little, features, big, target).item() == pytest.approx(expected.item(), rel=1e-5)
    expected = (bce * torch.tensor([1.0, 0.5, 0.5])).mean()
    assert routing_loss(mlp, little, features, big, target_hopeless).item() == pytest.approx(expected.item(), rel=1e-5)


def test_consistency_counts_only_kept_inputs():
    little, big = torch.randn(4, 5), torch.randn(4, 5)
    none = torch.zeros(4, dtype=torch.bool)
    assert consistency_loss(little, big, none).item() == 0.0
    kept = torch.tensor([True, False, True, False])
    assert consistency_loss(little, big, kept).item() == pytest.approx(
        consistency_loss(little[kept], big[kept], torch.ones(2, dtype=torch.bool)).item())
    assert consistency_loss(little, little, kept).item() == pytest.approx(0.0, abs=1e-6)


def test_joint_loss_is_the_documented_weighted_sum():
    torch.manual_seed(0)
    out = BigLittleOutput(torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 16), torch.rand(6))
    y = torch.randint(0, 10, (6,))
    weights = LossWeights(alpha=2.0, beta=0.5, gamma=0.0, lam=0.0, distill=0.25)
    loss, parts = JointLoss(weights)(out, y)
    ce = torch.nn.functional.cross_entropy
    little = 0.75 * ce(out.little_logits, y) + 0.25 * distillation(out.little_logits, out.big_logits)
    assert loss.item() == pytest.approx((2.0 * ce(out.big_logits, y) + 0.5 * little).item(), rel=1e-6)
    assert set(parts) == {'loss_big', 'loss_little', 'loss_distill', 'loss'}
    with pytest.raises(ValueError, match='Unknown loss weight'):
        LossWeights.from_dict({'alpah': 1.0})
    with pytest.raises(ValueError, match='distill is a share'):
        LossWeights(distill=2.0)


# ----- sampling -----------------------------------------------------------------------------------------------------
def test_pairs_are_valid_and_phases_lock_the_right_labels(tiny_space):
    spec = tiny_space.spec
    rng = random.Random(0)
    for fork in spec.forks:
        assert spec.check(max_pair(spec, fork)) is None and spec.check(min_pair(spec, fork)) is None
    for _ in range(20):
        assert spec.check(draw_pair(spec, rng)) is None
    full = phase_choices(spec, 'full')
    assert all(len(v) == 1 for k, v in full.items() if k != 'little/fork' and not k.startswith('router/'))
    kernel = phase_choices(spec, 'kernel')
    assert len(kernel['trunk/s0/b0/kernel']) == 2 and len(kernel['trunk/s0/depth']) == 1
    width = phase_choices(spec, 'width')
    assert len(width['trunk/s1/width']) == 2 and len(width['little/s0/width']) == 1
    branches = phase_choices(spec, 'branches')
    assert branches == {k: tuple(v) for k, v in spec.choices().items()}
    for phase in PHASES:
        sample = draw_pair(spec, rng, phase_choices(spec, phase))
        assert spec.check(sample) is None
    with pytest.raises(ValueError, match='Unknown phase'):
        phase_choices(spec, 'expansion')


def test_resumable_sampler_skips_the_batches_already_trained():
    sampler = ResumableBatchSampler(20, 4, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert sorted(i for b in full for i in b) == list(range(20))
    for _ in range(3):
        sampler.mark_done()
    state = sampler.state_dict()
    fresh = ResumableBatchSampler(20, 4, seed=3)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # Lightning calls this again for the resumed epoch: it must not reset the position
    assert list(fresh) == full[3:]
    fresh.set_epoch(3)
    assert len(list(fresh)) == 5 and list(fresh) != full
    with pytest.raises(ValueError, match='data or its split changed'):
        ResumableBatchSampler(24, 4, seed=3).load_state_dict(state)


# ----- configs and run folders -----------------------------------------------------------------------------------------
def test_bad_configs_fail_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="Unknown training config key.*'epoch'"):
        resolve_train_config({'epoch': 3})
    with pytest.raises(ConfigError, match="strategy 'darts' is unknown"):
        resolve_train_config({'strategy': 'darts'})
    with pytest.raises(ConfigError, match="dataset 'cifar11' is unknown"):
        resolve_train_config({'dataset': 'cifar11'})
    with pytest.raises(ConfigError, match='phase_epochs .* sum to 3, but epochs is 6'):
        resolve_train_config({'strategy': 'progressive', 'epochs': 6, 'strategy_options': {'phase_epochs': [1, 1, 1]}})
    with pytest.raises(ConfigError, match='num_random'):
        resolve_train_config({'strategy': 'progressive', 'strategy_options': {'num_random': 2}})
    with pytest.raises(ConfigError, match='loss: Unknown loss weight'):
        resolve_train_config({'loss': {'beta2': 1}})
    with pytest.raises(ConfigError, match="optimizer: learning_rate must be a number, got 'fast'"):
        resolve_train_config({'optimizer': {'learning_rate': 'fast'}})
    assert not any(tmp_path.iterdir())


def test_a_config_is_checked_once_into_a_typed_object():
    cfg = TrainConfig.from_mapping({'dataset': 'digits', 'epochs': 3, 'optimizer': {'learning_rate': 0.05}})
    assert cfg.epochs == 3 and cfg.optimizer['momentum'] == 0.9  # defaults filled in, nested ones too
    assert cfg.recipe.learning_rate == 0.05 and cfg.loss_weights.alpha == 1.0
    assert TrainConfig.from_mapping(cfg.to_dict()) == cfg and TrainConfig.from_mapping(cfg) is cfg
    assert cfg.replace(epochs=4).epochs == 4 and cfg.epochs == 3
    with pytest.raises(ConfigError, match='epochs must be a positive integer'):
        cfg.replace(epochs=0)
    with pytest.raises(Exception):  # frozen: a checked config is not changed behind the checks' back
        cfg.epochs = 5


# ----- training through NasExperiment -------------------------------------------------------------------------------------
def _untrained_accuracies(sample_of) -> tuple[float, float]:
    """(little, big) validation accuracy of a pair of the untrained tiny space, BN re-calibrated as the probes do:
    the reference the co-trained pairs are held against (chance is 0.1 on digits, but an untrained net's
    answers are not uniform, and the reference moves with the torch build as the trained accuracies do)."""
    from nni_bigLittle.data import load_dataset
    from nni_bigLittle.evaluation import collect_outputs
    from nni_bigLittle.nn.model import recalibrate_batchnorm
    from nni_bigLittle.search_spaces import BigLittleSpace
    from helpers import TINY
    torch.manual_seed(0)
    space = BigLittleSpace(**TINY)
    splits = load_dataset('digits', val_size=300, seed=0, augment='none')
    model = space.freeze(sample_of(space.spec))
    recalibrate_batchnorm(model, [x for x, _ in torch.utils.data.DataLoader(splits.train, batch_size=64)][:8])
    outputs = collect_outputs(model.eval(), torch.utils.data.DataLoader(splits.val, batch_size=300))
    return float(outputs.little_correct.mean()), float(outputs.big_correct.mean())


def test_sandwich_cotraining_trains_both_heads_well_above_chance(tmp_path):
    status = train_supernet(digits_config(), tmp_path / 'run', progress=False)
    assert status['done'] and (tmp_path / 'run' / 'supernet.pt').is_file()
    with open(tmp_path / 'run' / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['epoch']) for r in rows] == list(range(6))
    last = rows[-1]
    # largest and smallest pairs, BN re-calibrated, on the validation split, against the same pairs untrained
    little0, big0 = _untrained_accuracies(lambda spec: spec.largest())
    assert float(last['val/largest/big_acc']) > big0 + 0.4
    assert float(last['val/largest/little_acc']) > little0 + 0.1
    assert float(last['val/smallest/big_acc']) > _untrained_accuracies(lambda spec: spec.smallest())[1] + 0.3
    assert float(last['val/largest/dynamic_acc']) > float(last['val/largest/little_acc'])
    # the saved supernet loads and freezes into standalone models
    from nni_bigLittle.search_spaces import BigLittleSpace
    space = BigLittleSpace.load(tmp_path / 'run' / 'supernet.pt')
    model = space.freeze(space.spec.largest()).eval()
    assert model(torch.zeros(1, 3, 32, 32))[1].shape == (1, 10)
    # so does the last co-training checkpoint (e.g. to search a run that is still training)
    from_checkpoint = BigLittleSpace.load(tmp_path / 'run' / 'checkpoints' / 'last.ckpt')
    assert from_checkpoint.spec == space.spec
    assert all(torch.equal(a, b) for a, b in zip(from_checkpoint.state_dict().values(), space.state_dict().values()))
    # a finished run is not redone; a different config in the same folder is refused
    assert train_supernet(digits_config(), tmp_path / 'run', progress=False)['done']
    with pytest.raises(RunConfigMismatch, match='differs in: epochs'):
        train_supernet(digits_config(epochs=7), tmp_path / 'run', progress=False)


def test_progressive_shrinking_runs_its_phases(tmp_path):
    config = digits_config(strategy='progressive', epochs=3, limit_train_batches=6,
                            strategy_options={'phase_epochs': [1, 1, 0, 0, 0, 1], 'samples_per_step': 2})
    status = train_supernet(config, tmp_path / 'run', progress=False)
    assert status['done']
    ckpt = torch.load(tmp_path / 'run' / 'checkpoints' / 'last.ckpt', weights_only=False)
    assert 'biglittle_teacher' in ckpt  # the frozen full network teaches after the first phase
    with open(tmp_path / 'run' / 'metrics.csv') as f:
        assert [int(r['epoch']) for r in csv.DictReader(f)] == [0, 1, 2]


def _cli(run_dir, config_path):
    env = {**os.environ, 'PYTHONHASHSEED': '0'}
    return [sys.executable, '-m', 'nni_bigLittle.app.cli', 'cotrain', str(config_path), '--run-dir', str(run_dir),
            '--quiet', '--trace-steps'], env


def _trace(run_dir):
    rows = {}
    with open(run_dir / 'steps.csv') as f:
        for line in f:
            epoch, batch, step, labels, samples = line.strip().split(',')
            rows[(int(epoch), int(batch))] = (int(step), labels, samples)  # redone steps: the last one counts
    return rows


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_command(tmp_path):
    config = digits_config(epochs=3, limit_train_batches=8, checkpoint_every=3)
    config_path = tmp_path / 'config.yaml'
    config_path.write_text(yaml.safe_dump(config))

    reference = tmp_path / 'reference'
    cmd, env = _cli(reference, config_path)
    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True, timeout=600)

    run = tmp_path / 'killed'
    cmd, env = _cli(run, config_path)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill it mid-epoch, some steps after the checkpoint of step 3 (epoch 0 has 8 steps)
    while time.time() < deadline:
        if (run / 'steps.csv').is_file() and len((run / 'steps.csv').read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len((run / 'steps.csv').read_text().splitlines())
    assert 5 <= killed_at < 8, 'the run was not killed in the middle of its first epoch'
    ckpt = torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=False)
    assert ckpt['global_step'] == 3 and ckpt['epoch'] == 0
    assert not (run / 'supernet.pt').exists()

    result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'resuming' in result.stdout and 'last.ckpt' in result.stdout
    assert (run / 'supernet.pt').is_file()
    # every step after the checkpoint was redone with the same batch and the same sampled pairs
    assert _trace(run) == _trace(reference)
    assert len(_trace(run)) == 24
    with open(run / 'metrics.csv') as f:
        assert [int(r['epoch']) for r in csv.DictReader(f)] == [0, 1, 2]
    import json
    status = json.loads((run / 'status.json').read_text())['train']
    assert status['done'] and len(status['sessions']) == 2  # the killed invocation and the resumed one
    assert status['wall_s'] == pytest.approx(sum(s['wall_s'] for s in status['sessions']), abs=0.2)
