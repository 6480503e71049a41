"""The nnictl front door with the real NNI manager on loopback: the quickstart experiment, the web UI in a
headless browser, `nnictl algo register` of our tuner, and bad configs refused before anything starts.

The experiments that run trials (minutes) are marked slow: `.ci/run` runs them after the default suite.

Each test runs nnictl with HOME and NNI_CONFIG_DIR inside its tmp folder, so the experiment registry,
the experiments' folders and algorithm registrations never touch the user's."""
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from nni_bigLittle.app.cli import main

import nnictl_util as nctl
import nni_webui
from conftest import REPO

EXPERIMENTS = REPO / 'experiments'
OUR_KEYS = {'accuracy', 'little_acc', 'big_acc', 'escalation_rate', 'expected_macs', 'latency_ms_raspberry_pi_4',
            'latency_ms_jetson_nano_trt_fp32'}

@pytest.fixture
def nni_env(tmp_path):
    return nctl.isolated_env(tmp_path)


@pytest.mark.slow  # a real NNI manager and trials: .ci/run runs these after the default suite
def test_quickstart_experiment_reaches_done_and_the_web_ui_shows_our_metrics(tmp_path, nni_env):
    port = nctl.free_port()
    exp_id = nctl.create_experiment(EXPERIMENTS / 'quickstart.yaml', port, env=nni_env)
    try:
        assert nctl.wait_done(port, timeout=900, poll=2) == 'DONE', nctl.dispatcher_log(
            tmp_path / 'home' / 'nni-experiments', exp_id)
        jobs = nctl.trial_jobs(port)
        assert len(jobs) == 8 and {job['status'] for job in jobs} == {'SUCCEEDED'}
        trials = nctl.export_trials(exp_id, env=nni_env, path=tmp_path / 'export.json')
        assert len(trials) == 8
        for trial in trials:
            assert OUR_KEYS | {'default'} <= set(trial['value'])
            assert trial['value']['default'] == trial['value']['accuracy']
            assert 0.0 <= trial['value']['escalation_rate'] <= 1.0
        # our tuner kept the constraint: every pair it proposed is predicted under 7 ms on the Pi 4
        assert max(t['value']['latency_ms_raspberry_pi_4'] for t in trials) < 7.0 * 1.15
        reason = nni_webui.unavailable_reason()
        if reason is None:
            screenshot = tmp_path / 'webui_trials.png'
            table = nni_webui.read_trial_table(f'http://127.0.0.1:{port}', screenshot)
            assert nni_webui.DEFAULT_METRIC_HEADER in table.headers.values()
            assert OUR_KEYS <= table.metric_keys
            assert screenshot.is_file() and screenshot.stat().st_size > 10_000
            keep = os.environ.get('NNI_BIGLITTLE_TEST_ARTIFACTS')  # a folder to keep the screenshot in
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(screenshot, Path(keep) / screenshot.name)
    finally:
        nctl.stop(exp_id, env=nni_env, port=port)
    assert nctl.manager_processes(exp_id, port) == []
    if reason is not None:
        pytest.skip(f'web UI not checked: {reason}')


def _small_experiment(tmp_path, tuner: dict, trials: int = 2) -> str:
    config = yaml.safe_load((EXPERIMENTS / 'quickstart.yaml').read_text())
    config.update(searchSpaceFile=str(EXPERIMENTS / 'spaces' / 'cifar.json'), trialCodeDirectory=str(tmp_path),
                  maxTrialNumber=trials, tuner=tuner)
    config['trialCommand'] = config['trialCommand'].replace('--epochs 3', '--epochs 1')
    path = tmp_path / 'experiment.yaml'
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


@pytest.mark.slow  # a real NNI manager and trials: .ci/run runs these after the default suite
def test_registered_tuner_runs_by_name_and_unregisters(tmp_path, nni_env, capsys, monkeypatch):
    class_args = {'preset': 'cifar', 'population_size': 2}
    nctl.register_algo(EXPERIMENTS / 'algo_meta.yml', env=nni_env)
    assert 'BigLittleEvolution' in nctl.nnictl('algo', 'list', env=nni_env).stdout
    config = _small_experiment(tmp_path, {'name': 'BigLittleEvolution', 'classArgs': class_args})
    port = nctl.free_port()
    exp_id = nctl.create_experiment(config, port, env=nni_env)
    try:
        assert nctl.wait_done(port, timeout=600, poll=2) == 'DONE'
        assert {job['status'] for job in nctl.trial_jobs(port)} == {'SUCCEEDED'}
    finally:
        nctl.stop(exp_id, env=nni_env, port=port)
    nctl.unregister_algo('BigLittleEvolution', env=nni_env, missing_ok=False)
    assert 'BigLittleEvolution' not in nctl.nnictl('algo', 'list', env=nni_env).stdout
    # and now the name is refused before a manager starts
    monkeypatch.setenv('NNI_CONFIG_DIR', nni_env['NNI_CONFIG_DIR'])
    assert main(['experiment', 'create', config, '--port', str(port)]) == 2
    assert "Unknown tuner 'BigLittleEvolution'" in capsys.readouterr().err
    assert nctl.manager_processes(port=port) == []


def test_bad_configs_fail_before_anything_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.setenv('NNI_CONFIG_DIR', str(tmp_path / 'nni_config'))
    ours = {'codeDirectory': '.', 'className': 'nni_bigLittle.strategies.tuner.BigLittleEvolution',
            'classArgs': {'preset': 'cifar'}}
    port = nctl.free_port()

    def refused(config: str, expected: str) -> None:
        assert main(['experiment', 'create', config, '--port', str(port)]) == 2
        assert expected in capsys.readouterr().err
        assert nctl.manager_processes(port=port) == []

    refused(_small_experiment(tmp_path, {'name': 'NoSuchTuner'}), "Unknown tuner 'NoSuchTuner'")
    refused(_small_experiment(tmp_path, {**ours, 'className': 'nni_bigLittle.strategies.tuner.Nope'}),
            'The tuner class cannot be loaded')
    refused(_small_experiment(tmp_path, {**ours, 'classArgs': {'constraints': {'latency_ms_no_such_device': 5}}}),
            'no_such_device')
    # a search space that does not fit the space the trials build
    bad_space = tmp_path / 'space.json'
    bad_space.write_text('{"trunk/s0/width": {"_type": "choice", "_value": [0.3]}}')
    config = yaml.safe_load(open(_small_experiment(tmp_path, ours)))
    config['searchSpaceFile'] = str(bad_space)
    (tmp_path / 'bad_space.yaml').write_text(yaml.safe_dump(config))
    refused(str(tmp_path / 'bad_space.yaml'), "does not fit the 'cifar' space")
    # data the trials cannot find
    config = yaml.safe_load(open(_small_experiment(tmp_path, {'name': 'TPE'})))
    config['trialCommand'] = config['trialCommand'].replace('--dataset digits',
                                                            f'--dataset cifar10 --data-root {tmp_path / "nowhere"}')
    (tmp_path / 'no_data.yaml').write_text(yaml.safe_dump(config))
    refused(str(tmp_path / 'no_data.yaml'), 'The trials cannot load their data')
    # the tuner optimises a key the trial does not report
    config = yaml.safe_load(open(_small_experiment(tmp_path, {
        **ours, 'classArgs': {'objectives': [['accuracy', 'max'], ['latency_ms_raspberry_pi_3', 'min']]}})))
    (tmp_path / 'keys.yaml').write_text(yaml.safe_dump(config))
    refused(str(tmp_path / 'keys.yaml'), "needs metric keys ['latency_ms_raspberry_pi_3']")
    # a port that is taken
    good = _small_experiment(tmp_path, ours)
    with socket.socket() as taken:
        taken.bind(('', port))
        taken.listen()
        refused(good, f'Port {port} is in use')
    # and the good one passes the check, and launches
    assert main(['experiment', 'check', good]) == 0
    assert 'OK (tuner BigLittleEvolution' in capsys.readouterr().out
    assert main(['experiment', 'create', good, '--port', str(port), '--settle', '3']) == 0
    out = capsys.readouterr().out
    exp_id = re.search(r'id (\w+), web UI', out).group(1)
    try:
        assert nctl.check_status(port)['status'] in ('RUNNING', 'NO_MORE_TRIAL', 'DONE', 'TUNER_NO_MORE_TRIAL')
    finally:
        nctl.stop(exp_id, port=port)
    assert nctl.manager_processes(exp_id, port) == []


@pytest.mark.slow  # a real NNI manager and trials: .ci/run runs these after the default suite
def test_supernet_trial_sends_per_epoch_results_to_the_manager(tmp_path, nni_env):
    """The co-training run inside the trial swaps NNI's trial channel while it trains; the per-epoch
    results must still reach the manager (the web UI's curves)."""
    import json
    import urllib.request
    from helpers import digits_config
    (tmp_path / 'train.yaml').write_text(yaml.safe_dump(digits_config(epochs=2, limit_train_batches=4)))
    (tmp_path / 'space.json').write_text('{"optimizer.learning_rate": {"_type": "choice", "_value": [0.05, 0.1]}}')
    (tmp_path / 'exp.yaml').write_text(yaml.safe_dump({
        'searchSpaceFile': 'space.json', 'trialCodeDirectory': '.', 'trialConcurrency': 1, 'maxTrialNumber': 1,
        'trialCommand': 'python -m nni_bigLittle.trial_code.supernet --config train.yaml --threads 1 --quiet',
        'tuner': {'name': 'TPE', 'classArgs': {'optimize_mode': 'maximize'}},
        'trainingService': {'platform': 'local'}}))
    with nctl.running_experiment(tmp_path / 'exp.yaml', env=nni_env) as (exp_id, port):
        assert nctl.wait_done(port, timeout=600, poll=2) == 'DONE'
        assert [job['status'] for job in nctl.trial_jobs(port)] == ['SUCCEEDED']
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/nni/metric-data', timeout=10) as response:
            records = json.loads(response.read())
    reports = [(r['type'], json.loads(json.loads(r['data']))) for r in records]
    assert [(kind, value['epoch']) for kind, value in reports] == [('PERIODICAL', 1.0), ('PERIODICAL', 2.0),
                                                                  ('FINAL', 2.0)]
    assert all({'default', 'big_acc', 'little_acc'} <= set(value) for _, value in reports)
