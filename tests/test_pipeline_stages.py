"""cotrain -> search -> evaluate -> ablation on digits through the CLI: the stages of the CIFAR-10 run, small."""
import csv
import json

import pytest

from nni_bigLittle.app.cli import main

from helpers import digits_config, pipeline_config


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    import yaml
    folder = tmp_path_factory.mktemp('pipeline')
    config = folder / 'config.yaml'
    config.write_text(yaml.safe_dump(digits_config(epochs=3, limit_train_batches=8)))
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

    assert main(['ablation', str(trained_run), '--kind', 'routing']) == 0
    with open(trained_run / 'results' / 'ablation_routing.csv') as f:
        routing = list(csv.DictReader(f))
    assert sorted({r['policy'] for r in routing}) == ['entropy', 'learned', 'margin', 'max_softmax']
    for r in routing:  # same pair, thresholds calibrated on validation: the test rates land near the targets
        assert abs(float(r['test_escalation_rate']) - float(r['target_escalation'])) < 0.15
        assert float(r['test_little_acc']) <= float(r['test_dynamic_acc']) + 0.15
    little = {r['test_little_acc'] for r in routing}
    assert len(little) == 1  # the little and big networks are the same for every policy
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
    assert main(['ablation', str(trained_run), '--kind', 'dimensions', '--population', '4', '--generations', '1',
                 '--quiet']) == 0
    with open(trained_run / 'results' / 'ablation_dimensions.csv') as f:
        dims = {r['frozen']: r for r in csv.DictReader(f)}
    assert {'none (full search)', 'trunk width', 'fork point', 'little branch', 'router policy'} <= set(dims)
    for name, r in dims.items():
        assert float(r['hypervolume']) > 0 and 0 < float(r['best_accuracy']) <= 1
    fork = json.loads((trained_run / 'ablation_dimensions' / 'fork_point' / 'front.json').read_text())
    assert len({r['sample']['little/fork'] for r in fork['front']}) == 1  # the frozen label never moved
    assert main(['ablation', str(trained_run), '--pick', 'accurate', '--quiet']) == 0  # the most accurate pair
    accurate = json.loads((trained_run / 'results' / 'ablation_cotraining_accurate_pair.json').read_text())
    middle = json.loads((trained_run / 'results' / 'ablation_cotraining_pair.json').read_text())
    assert accurate['pick'] == 'accurate' and middle['pick'] == 'middle' and (trained_run / 'ablation_accurate').is_dir()
    # each ablates the pair its pick names: the front's most accurate and its middle model (the front's size and
    # whether the two share an architecture depend on the run, not on the pick)
    from nni_bigLittle.app.runs import RunFolder
    from nni_bigLittle.app.stages.search import pick_across_front
    summary = RunFolder(trained_run).front('raspberry_pi_4')
    picks = pick_across_front(summary['front'], summary['objective'], 3)
    max_softmax = lambda entry: {**entry['sample'], 'router/policy': 'max_softmax'}  # noqa: E731
    assert accurate['sample'] == max_softmax(picks[-1]) and middle['sample'] == max_softmax(picks[min(1, len(picks) - 1)])



def test_strategy_ablation_compares_four_strategies_on_one_budget_and_resumes(trained_run):
    """sandwich, progressive shrinking, DARTS and multi-trial evolution, each from scratch on the same subset and
    epochs; their delivered models measured on validation, compared by front hypervolume; a re-run resumes."""
    args = ['ablation', str(trained_run), '--kind', 'strategy', '--train-subset', '64', '--epochs', '2',
            '--population', '3', '--generations', '1', '--quiet']
    assert main(args) == 0
    with open(trained_run / 'results' / 'ablation_strategy.csv') as f:
        rows = {r['strategy']: r for r in csv.DictReader(f)}
    assert list(rows) == ['sandwich', 'progressive', 'darts', 'evolution']
    saved = json.loads((trained_run / 'results' / 'ablation_strategy_fronts.json').read_text())
    key = saved['objective']
    for name, front in saved['fronts'].items():
        assert front and float(rows[name]['hypervolume']) > 0
        for a in front:  # each strategy's front: nobody dominates anybody
            assert not any(b['accuracy'] >= a['accuracy'] and b[key] <= a[key] and
                           (b['accuracy'] > a['accuracy'] or b[key] < a[key]) for b in front)
        assert max(r['accuracy'] for r in front) == pytest.approx(float(rows[name]['best_accuracy']))
    assert rows['darts']['distinct_architectures'] == '1'  # DARTS delivers one architecture
    config = json.loads(json.dumps(__import__('yaml').safe_load(
        (trained_run / 'ablation_strategy' / 'progressive' / 'config.yaml').read_text())))
    assert config['strategy'] == 'progressive' and sum(config['strategy_options']['phase_epochs']) == 2
    assert config['train_subset'] == 64
    trained = list((trained_run / 'ablation_strategy' / 'evolution').glob('trial_*/last.ckpt'))
    assert 1 <= len(trained) <= 6  # at most population * (generations + 1) architectures trained
    assert main(args) == 0  # resumed: nothing is trained again, the same table
    with open(trained_run / 'results' / 'ablation_strategy.csv') as f:
        assert {r['strategy']: r for r in csv.DictReader(f)} == rows


@pytest.mark.parametrize('epochs', [1, 2, 4, 6, 9])
def test_progressive_phases_fit_the_epoch_budget(epochs):
    from nni_bigLittle.app.ablations import progressive_phases
    phases = progressive_phases(epochs)
    assert len(phases) == 6 and phases[0] == 1 and sum(phases) == epochs and min(phases) >= 0
    if epochs >= 2:
        assert phases[-1] >= 1  # the last phase unlocks every dimension: the search's space is trained

def test_stages_need_their_inputs(tmp_path, capsys):
    assert main(['search', str(tmp_path)]) == 2
    assert 'no trained supernet' in capsys.readouterr().err


def test_run_pipeline_trains_searches_exports_reports_and_resumes(tmp_path, capsys):
    from nni_bigLittle.app.stages.export import load_exported
    config = pipeline_config(tmp_path)
    assert main(['run', config, '--quiet']) == 0
    out = capsys.readouterr().out
    for stage in ('train', 'search', 'export', 'deploy', 'report'):
        assert f': {stage} (' in out
    assert 'Pareto front for raspberry_pi_4' in out and 'Pareto front for jetson_nano_trt_fp32' in out
    assert '| static largest |' in out
    run = tmp_path / 'run'
    exported = sorted((run / 'export').glob('*/front_*.pt'))
    assert len(exported) == 4
    import torch
    model = load_exported(exported[0])
    pred, escalated = model.infer(torch.randn(4, 3, 32, 32))
    assert pred.shape == (4,) and escalated.dtype == torch.bool
    for device in ('raspberry_pi_4', 'jetson_nano_trt_fp32'):  # a verified bundle per front, measured here
        manifest = json.loads((run / 'bundles' / device / 'manifest.json').read_text())
        assert manifest['verification']['prediction_agreement'] == 1.0 and manifest['source']['device'] == device
        bench = json.loads((run / 'results' / f'bench_{device}' / 'bench.json').read_text())
        assert bench['rows'][0]['row'] == 'dynamic' and bench['rows'][0]['calls'] == 200 * 3
    assert 'Router and dispatch overhead' in out
    assert main(['run', config, '--quiet']) == 0  # everything done: resumed, nothing retrained
    assert 'is complete' in capsys.readouterr().out


def test_run_pipeline_refuses_bad_configs_before_starting(tmp_path, capsys):
    import yaml
    config = yaml.safe_load(open(pipeline_config(tmp_path, strategy='spiral')))
    (tmp_path / 'bad.yaml').write_text(yaml.safe_dump(config))
    assert main(['run', str(tmp_path / 'bad.yaml')]) == 2
    assert 'spiral' in capsys.readouterr().err
    config = yaml.safe_load(open(pipeline_config(tmp_path, dataset='cifar10', data_root=str(tmp_path / 'nowhere'))))
    (tmp_path / 'nodata.yaml').write_text(yaml.safe_dump(config))
    assert main(['run', str(tmp_path / 'nodata.yaml')]) == 2
    assert 'cifar10' in capsys.readouterr().err
    config = yaml.safe_load(open(pipeline_config(tmp_path)))
    config['deploy'] = {'pick': 'fastest'}
    (tmp_path / 'nodeploy.yaml').write_text(yaml.safe_dump(config))
    assert main(['run', str(tmp_path / 'nodeploy.yaml')]) == 2
    assert 'deploy.pick' in capsys.readouterr().err
    config = yaml.safe_load(open(pipeline_config(tmp_path)))
    config['search']['devices'] = ['raspberry_pi_9']
    (tmp_path / 'nodevice.yaml').write_text(yaml.safe_dump(config))
    assert main(['run', str(tmp_path / 'nodevice.yaml')]) == 2
    assert 'raspberry_pi_9' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()  # nothing was started


@pytest.mark.slow
def test_quickstart_pipeline_as_the_readme_runs_it(tmp_path, capsys):
    """The README's main job, whole (about 5 minutes on 2 cores)."""
    from conftest import REPO
    assert main(['run', str(REPO / 'experiments' / 'quickstart_pipeline.yaml'), '--run-dir', str(tmp_path / 'qs'),
                 '--quiet']) == 0
    out = capsys.readouterr().out
    assert out.count('Pareto front for') == 2 and '| static smallest |' in out


def test_records_copies_the_text_records_and_no_weights(trained_run, tmp_path, capsys):
    assert main(['records', str(trained_run), '--out', str(tmp_path / 'records')]) == 0
    copied = {p.relative_to(tmp_path / 'records').as_posix() for p in (tmp_path / 'records').rglob('*') if p.is_file()}
    assert {'config.yaml', 'metrics.csv', 'status.json'} <= copied
    assert not any(name.endswith(('.pt', '.ckpt')) for name in copied)
    assert main(['records', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'x')]) == 2
    assert 'not a run folder' in capsys.readouterr().err
