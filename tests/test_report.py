"""The results report on digits: every row costed the same way, then the table, plots and headline
regenerated from the report.json record alone."""
import json

import numpy as np
import pytest
import yaml

from nni_bigLittle.app.cli import main
from nni_bigLittle.app.report import Part, PartCoster, _exit_index, expected_costs, top_k

from helpers import digits_config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('report')
    (folder / 'recipe.yaml').write_text(yaml.safe_dump(digits_config(epochs=2, limit_train_batches=8)))
    assert main(['cotrain', str(folder / 'recipe.yaml'), '--run-dir', str(folder / 'run'), '--quiet']) == 0
    assert main(['search', str(folder / 'run'), '--device', 'raspberry_pi_4', '--population', '6',
                 '--generations', '1', '--quiet']) == 0
    (folder / 'recipe_small.yaml').write_text(yaml.safe_dump(digits_config(epochs=1, train_subset=256)))
    (folder / 'baselines.yaml').write_text(yaml.safe_dump(
        {'recipe': 'recipe_small.yaml', 'models': ['mobilenetv3_small', 'mobilenetv3_large',
                                                   'branchynet_mobilenetv3_large', 'efficientnet_b0'],
         'exit_stages': [1, 3]}))
    assert main(['baselines', 'train', str(folder / 'baselines.yaml'), '--run-dir', str(folder / 'baselines'),
                 '--model', 'mobilenetv3_small', '--model', 'mobilenetv3_large', '--model',
                 'branchynet_mobilenetv3_large', '--quiet']) == 0  # EfficientNet-B0 left untrained on purpose
    return folder


def test_report_collects_every_family_and_renders_from_the_record_alone(runs, tmp_path, capsys):
    out = tmp_path / 'collected'
    assert main(['report', str(runs / 'run'), '--collect', '--baselines', str(runs / 'baselines'), '--out',
                 str(out), '--quiet']) == 0
    report = json.loads((runs / 'run' / 'results' / 'report.json').read_text())
    families = [r['family'] for r in report['rows']]
    assert families.count('ours') == 5 and families.count('supernet static') == 5
    assert families.count('static baseline') == 2 and families.count('cascade') == 3
    assert families.count('early exit') == 3 and report['baselines_missing'] == ['efficientnet_b0']
    rows = {r['model']: r for r in report['rows']}
    parts = report['parts']
    little, big = rows['Ours (little)'], rows['Ours (big)']
    for r in report['rows']:
        assert 0 <= r['top1'] <= r['top5'] <= 1 and r['macs'] > 0 and r['latency_ms_measured'] > 0
        # a row's costs are its parts' costs weighted by how often they run
        expected = sum(p['probability'] * parts[p['part']]['latency_ms_raspberry_pi_4'] for p in r['parts'])
        assert r['latency_ms_raspberry_pi_4'] == pytest.approx(expected)
        if r['family'] == 'ours' and 'escalation_rate' in r:
            tail = next(p for p in r['parts'] if p['part'].startswith('ours/big_tail'))
            assert tail['probability'] == pytest.approx(r['escalation_rate'])
            assert r['params'] >= little['params']  # the tail's weights count once, whatever the rate
            assert r['top1'] >= min(little['top1'], big['top1']) - 0.05
    cascades = sorted((r for r in report['rows'] if r['family'] == 'cascade'), key=lambda r: r['escalation_rate'])
    # thresholds calibrated on validation for 25 / 50 / 75 % escalation land near those rates on the test split
    assert all(abs(r['escalation_rate'] - target) < 0.1 for r, target in zip(cascades, (0.25, 0.5, 0.75)))
    exits = [r for r in report['rows'] if r['family'] == 'early exit']
    for r in exits:  # segment k runs for the inputs that reach it: 1 >= p1 >= p2
        probabilities = [p['probability'] for p in r['parts']]
        assert probabilities[0] == 1.0 and probabilities == sorted(probabilities, reverse=True)
    for name in ('table.csv', 'README.md', 'pareto_latency_measured.png', 'pareto_latency_raspberry_pi_4.png',
                 'pareto_macs.png', 'pareto_energy_nano.png'):
        assert (out / name).stat().st_size > 0
    text = (out / 'README.md').read_text()
    assert '## Headline' in text and 'efficientnet_b0' in text and 'Cascade MNv3-S' in text

    # the committed-records path: copy the text records, render them with no weights around
    capsys.readouterr()
    assert main(['records', str(runs / 'run'), '--out', str(tmp_path / 'records')]) == 0
    assert main(['report', str(tmp_path / 'records'), '--out', str(tmp_path / 'again')]) == 0
    assert (tmp_path / 'again' / 'table.csv').read_text() == (out / 'table.csv').read_text()
    assert main(['report', str(tmp_path), '--out', str(tmp_path / 'x')]) == 2
    assert 'report.json' in capsys.readouterr().err


def test_expected_costs_weight_parts_by_probability_and_count_weights_once():
    import torch
    coster = PartCoster(devices=('raspberry_pi_4',), energy_devices=(), measure=False)
    a = Part('a', torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()), (1, 3, 32, 32))
    b = Part('b', torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU()), (1, 3, 32, 32))
    total = expected_costs(coster, [(a, 1.0), (b, 0.25), (a, 0.5)])
    ca, cb = coster.cost(a), coster.cost(b)
    assert total['macs'] == pytest.approx(1.5 * ca['macs'] + 0.25 * cb['macs'])
    assert total['params'] == ca['params'] + cb['params'] == 8 * 27 + 8 + 16 * 27 + 16


def test_topk_and_the_branchynet_exit_rule():
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert top_k(logits, np.array([1, 0]), 1) == 0.0 and top_k(logits, np.array([1, 0]), 2) == 0.5
    sure, unsure = np.array([[10.0, 0.0]]), np.array([[0.0, 0.0]])
    heads = [np.concatenate([sure, unsure]), np.concatenate([unsure, sure]), np.concatenate([unsure, unsure])]
    assert _exit_index(heads, 0.1).tolist() == [0, 1]     # the first confident exit answers
    assert _exit_index(heads, 0.0).tolist() == [2, 2]     # nobody leaves early: the final head


def test_committed_cifar10_records_regenerate_the_published_results(tmp_path):
    """docs/results/cifar10 is exactly what `nni-biglittle report` renders from the committed records."""
    from conftest import REPO
    assert main(['report', str(REPO / 'benchmarks' / 'results' / 'cifar10_cotraining'), '--out', str(tmp_path)]) == 0
    published = REPO / 'docs' / 'results' / 'cifar10'
    for name in ('table.csv', 'README.md'):
        assert (tmp_path / name).read_text() == (published / name).read_text(), name
    for plot in published.glob('pareto_*.png'):
        assert (tmp_path / plot.name).is_file()
