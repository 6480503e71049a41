"""The NNI trial entry points, run outside an experiment (parameters from --params or a seeded draw).

Inside an experiment the same code reads nni.get_next_parameter(); tests/test_nnictl.py runs them
under a real NNI manager."""
import contextlib
import io
import json

import pytest
import yaml

from nni_bigLittle.search_spaces.presets import get_preset
from nni_bigLittle.trial_code import evaluate, supernet, train
from nni_bigLittle.trial_code.common import run_main

from helpers import TINY_SPACE, digits_config

DICT_KEYS = {'default', 'accuracy', 'little_acc', 'big_acc', 'escalation_rate', 'expected_macs',
             'latency_ms_raspberry_pi_4', 'latency_ms_jetson_nano_trt_fp32'}
TINY_OPTIONS = [f'--space-option={key}={json.dumps(value)}' for key, value in TINY_SPACE.items() if key != 'preset']


def _final(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith('final ')]
    assert len(lines) == 1, out
    return json.loads(lines[0][len('final '):])


@pytest.fixture(scope='module')
def supernet_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp('trial_supernet')
    config = folder / 'config.yaml'
    config.write_text(yaml.safe_dump(digits_config(epochs=2, limit_train_batches=6)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_main(supernet.main, ['--config', str(config), '--run-dir', str(folder / 'run'), '--quiet',
                                        '--devices', 'raspberry_pi_4,jetson_nano_trt_fp32',
                                        '--params', '{"optimizer.learning_rate": 0.05}']) == 0
    (folder / 'trial_stdout.txt').write_text(out.getvalue())
    return folder / 'run'


def test_supernet_trial_reports_per_epoch_and_a_final_dict(supernet_run, capsys):
    out = (supernet_run.parent / 'trial_stdout.txt').read_text()
    intermediate = [json.loads(line[len('intermediate '):]) for line in out.splitlines()
                    if line.startswith('intermediate ')]
    assert [m['epoch'] for m in intermediate] == [1.0, 2.0]  # one per epoch, for the web UI's curves
    assert all({'default', 'little_acc', 'big_acc', 'smallest_big_acc'} <= set(m) for m in intermediate)
    assert DICT_KEYS <= set(_final(out))
    cfg = yaml.safe_load((supernet_run / 'config.yaml').read_text())
    assert cfg['optimizer']['learning_rate'] == 0.05  # the trial's parameter overrode the config
    assert (supernet_run / 'supernet.pt').is_file()
    # re-running the same trial resumes the finished run and reports again
    config = supernet_run.parent / 'config.yaml'
    assert run_main(supernet.main, ['--config', str(config), '--run-dir', str(supernet_run), '--quiet',
                                    '--params', '{"optimizer.learning_rate": 0.05}']) == 0
    final = _final(capsys.readouterr().out)
    assert {'default', 'accuracy', 'little_acc', 'big_acc', 'escalation_rate', 'expected_macs',
            'latency_ms_raspberry_pi_4', 'smallest_big_acc'} <= set(final)
    assert final['default'] == final['accuracy']


def test_evaluate_trial_inherits_supernet_weights(supernet_run, capsys):
    spec = get_preset('cifar', **{k: v for k, v in TINY_SPACE.items() if k != 'preset'})
    params = json.dumps(spec.largest())
    args = ['--supernet', str(supernet_run), '--dataset', 'digits', '--val-size', '300',
            '--devices', 'raspberry_pi_4,jetson_nano_trt_fp32', '--params', params]
    assert run_main(evaluate.main, args) == 0
    final = _final(capsys.readouterr().out)
    assert DICT_KEYS <= set(final)
    assert final['escalation_rate'] == pytest.approx(0.3, abs=0.02)  # calibrated on validation
    assert 0.0 <= final['little_acc'] <= 1.0 and final['expected_macs'] > 0
    # deterministic: the same parameters give the same numbers
    assert run_main(evaluate.main, args) == 0
    assert _final(capsys.readouterr().out) == final


def test_evaluate_trial_rejects_what_it_cannot_run(supernet_run, tmp_path, capsys):
    assert run_main(evaluate.main, ['--supernet', str(tmp_path)]) == 2
    assert 'holds no supernet.pt' in capsys.readouterr().err
    spec = get_preset('cifar', **{k: v for k, v in TINY_SPACE.items() if k != 'preset'})
    wrong = {**spec.largest(), 'trunk/s0/width': 0.25}  # not a value of the tiny space
    assert run_main(evaluate.main, ['--supernet', str(supernet_run), '--params', json.dumps(wrong)]) == 2
    assert "'trunk/s0/width' = 0.25 is out of range" in capsys.readouterr().err
    assert run_main(evaluate.main, ['--supernet', str(supernet_run), '--params', '{"x": 1']) == 2
    assert '--params is not valid JSON' in capsys.readouterr().err
    assert run_main(evaluate.main, ['--supernet', str(supernet_run), '--dataset', 'no_such_data']) == 2
    assert 'no_such_data' in capsys.readouterr().err


def test_train_trial_trains_the_drawn_pair_with_tuned_learning_rate(capsys):
    spec = get_preset('cifar', **{k: v for k, v in TINY_SPACE.items() if k != 'preset'})
    params = {**spec.smallest(), 'learning_rate': 0.1}
    assert run_main(train.main, ['--dataset', 'digits', '--val-size', '300', '--epochs', '3', *TINY_OPTIONS,
                                 '--devices', 'raspberry_pi_4,jetson_nano_trt_fp32',
                                 '--params', json.dumps(params)]) == 0
    out = capsys.readouterr().out
    intermediate = [json.loads(line[len('intermediate '):]) for line in out.splitlines()
                    if line.startswith('intermediate ')]
    assert [m['epoch'] for m in intermediate] == [1.0, 2.0, 3.0]
    final = _final(out)
    assert DICT_KEYS <= set(final) and final['epoch'] == 3.0
    # the same pair untrained, measured the same way, is the reference (not a fixed bar near the edge)
    from nni_bigLittle.evaluation import evaluate_pair
    from nni_bigLittle.nn.model import BigLittleModel
    sample = {k: v for k, v in params.items() if k != 'learning_rate'}
    untrained = evaluate_pair(BigLittleModel.from_sample(spec, sample), dataset='digits', val_size=300, epochs=0,
                              report=False)
    assert final['big_acc'] > untrained['big_acc'] + 0.15, (untrained['big_acc'], final['big_acc'])
    assert run_main(train.main, ['--dataset', 'digits', *TINY_OPTIONS,
                                 '--params', json.dumps({**params, 'momentum': 0.5})]) == 2
    assert "Unknown parameters ['momentum']" in capsys.readouterr().err
