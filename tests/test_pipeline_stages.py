"""cotrain -> search -> evaluate -> ablation on digits through the CLI: the stages of the CIFAR-10 run, small."""
import csv
import json

import pytest

from nni_bigLittle.cli import main

from test_cotraining import _digits_config


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    import yaml
    folder = tmp_path_factory.mktemp('pipeline')
    config = folder / 'config.yaml'
    config.write_text(yaml.safe_dump(_digits_config(epochs=3, limit_train_batches=8)))
    assert main(['cotrain', str(config), '--run-dir', str(folder / 'run'), '--quiet']) == 0
    return folder / 'run'


def test_search_evaluate_and_ablation_stages(trained_run, capsys):
    args = ['search', str(trained_run), '--device', 'raspberry_pi_4', '--device', 'jetson_nano_trt_fp32',
            '--population', '6', '--generations', '1', '--quiet']
    assert main(args) == 0
    for device, key in (('raspberry_pi_4', 'latency_ms_raspberry_pi_4'),
                        ('jetson_nano_trt_fp32', 'latency_ms_jetson_nano_trt_fp32')):
        front = json.loads((trained_run / 'search' / device / 'front.json').read_text())['front']
        assert front
        for a in front:  # a Pareto front: nobody dominates anybody
            assert not any(b['accuracy'] >= a['accuracy'] and b[key] <= a[key] and
                           (b['accuracy'] > a['accuracy'] or b[key] < a[key]) for b in front)
    assert main(args) == 0  # re-run: resumed from the finished checkpoints, same fronts
    assert 'front' in capsys.readouterr().out

    assert main(['evaluate', str(trained_run), '--count', '2']) == 0
    with open(trained_run / 'results' / 'front_models.csv') as f:
        rows = list(csv.DictReader(f))
    models = [r['model'] for r in rows]
    assert 'static largest' in models and 'static smallest' in models
    dynamic = [r for r in rows if r['model'].startswith('dynamic')]
    assert len(dynamic) >= 2
    for r in dynamic:
        assert 0.0 <= float(r['test_escalation_rate']) <= 1.0
        assert float(r['latency_ms_raspberry_pi_4']) > 0 and float(r['expected_mmacs']) > 0

    assert main(['ablation', str(trained_run), '--quiet']) == 0
    with open(trained_run / 'results' / 'ablation_cotraining.csv') as f:
        co, independent = list(csv.DictReader(f))
    assert co['model'].startswith('co-trained') and independent['model'].startswith('independent')
    # the same escalation rate (calibrated on validation) and the cascade pays the whole big network
    assert abs(float(co['test_escalation_rate']) - float(independent['test_escalation_rate'])) < 0.15
    assert float(independent['expected_mmacs']) >= float(co['expected_mmacs']) - 1e-6 or \
        float(independent['test_escalation_rate']) < float(co['test_escalation_rate'])
    for r in (co, independent):
        assert 0.1 < float(r['test_big_acc']) <= 1.0


def test_stages_need_their_inputs(tmp_path, capsys):
    assert main(['search', str(tmp_path)]) == 2
    assert 'no trained supernet' in capsys.readouterr().err
