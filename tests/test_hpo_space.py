"""The space as an NNI HPO search space: export, round trip of tuner draws, clear errors."""
import json
import random

import pytest

from nni_bigLittle.app.cli import main
from nni_bigLittle.search_spaces import BigLittleSpace
from nni_bigLittle.search_spaces.hpo import (
    SearchSpaceError, check_search_space, nni_search_space, parse_space_options, read_search_space,
    sample_from_parameters)
from nni_bigLittle.search_spaces.presets import get_preset
from nni_bigLittle.search_spaces.spec import InvalidSampleError

from conftest import REPO


def test_export_writes_every_label_as_a_choice(tmp_path, capsys):
    out = tmp_path / 'space.json'
    assert main(['space', 'export', '--preset', 'cifar', '-o', str(out)]) == 0
    assert '63 parameters' in capsys.readouterr().out
    space = json.loads(out.read_text())
    spec = get_preset('cifar')
    assert list(space) == list(spec.choices())
    for label, values in spec.choices().items():
        assert space[label] == {'_type': 'choice', '_value': list(values)}
    assert main(['space', 'export', '--preset', 'cifar', '--option', 'width_choices=[0.5, 1.0]']) == 0
    narrowed = json.loads(capsys.readouterr().out)
    assert narrowed['trunk/s0/width']['_value'] == [0.5, 1.0]


def test_committed_search_space_matches_the_preset():
    """experiments/spaces/cifar.json is what `space export --preset cifar` writes (regenerate it if not)."""
    committed = read_search_space(REPO / 'experiments' / 'spaces' / 'cifar.json')
    assert committed == nni_search_space(get_preset('cifar'))


def _nni_draw(space: dict, rng: random.Random) -> dict:
    """What an HPO tuner such as Random or TPE does: every parameter independently, through JSON."""
    return json.loads(json.dumps({name: rng.choice(entry['_value']) for name, entry in space.items()}))


def test_every_independent_draw_freezes_to_a_valid_model():
    spec = get_preset('cifar')
    space = nni_search_space(spec)
    rng = random.Random(0)
    repaired = 0
    net = BigLittleSpace('cifar')
    for _ in range(300):
        params = _nni_draw(space, rng)
        sample, extra, was_repaired = sample_from_parameters(spec, params)
        assert extra == {}
        assert spec.check(sample) is None
        repaired += was_repaired
        if not was_repaired:
            assert sample == params  # a valid draw comes back unchanged (4 and 4.0 compare equal)
    assert 0.05 < repaired / 300 < 0.35  # independent draws do produce invalid pairs, and all are repaired
    model = net.freeze(sample)  # and the last one builds and runs
    import torch
    little, big = model(torch.randn(2, 3, 32, 32))
    assert little.shape == big.shape == (2, 10)


def test_extra_hyper_parameters_come_back_separately():
    spec = get_preset('cifar')
    space = nni_search_space(spec, {'learning_rate': {'_type': 'loguniform', '_value': [0.01, 0.2]}})
    assert check_search_space(spec, space) == {'learning_rate': {'_type': 'loguniform', '_value': [0.01, 0.2]}}
    params = {**spec.largest(), 'learning_rate': 0.03}
    sample, extra, repaired = sample_from_parameters(spec, params)
    assert extra == {'learning_rate': 0.03} and not repaired and sample == spec.largest()


def test_bad_parameters_and_spaces_name_the_label(tmp_path):
    spec = get_preset('cifar')
    params = dict(spec.largest())
    del params['little/fork']
    with pytest.raises(InvalidSampleError, match='little/fork'):
        sample_from_parameters(spec, params)
    with pytest.raises(InvalidSampleError, match="'trunk/s0/width' = 0.3"):
        sample_from_parameters(spec, {**spec.largest(), 'trunk/s0/width': 0.3})
    space = nni_search_space(spec)
    space['trunk/s1/depth'] = {'_type': 'choice', '_value': [1, 9]}
    del space['router/policy']
    with pytest.raises(SearchSpaceError, match=r"trunk/s1/depth' has values \[9\].*'router/policy' is missing"):
        check_search_space(spec, space)
    bad = tmp_path / 'bad.json'
    bad.write_text('{"a": {"_type": "choice", "_value": [1,]}')
    with pytest.raises(SearchSpaceError, match='not valid JSON'):
        read_search_space(bad)
    with pytest.raises(SearchSpaceError, match='No search-space file'):
        read_search_space(tmp_path / 'missing.json')
    with pytest.raises(SearchSpaceError, match='KEY=VALUE'):
        parse_space_options(['width_choices'])
