"""Packaging: the namespace mapping, optional backends absent, and the console script."""
import subprocess
import sys

import pytest

SUBPACKAGES = ['nni_bigLittle', 'nni_bigLittle.search_spaces', 'nni_bigLittle.strategies',
               'nni_bigLittle.hw_predictors', 'nni_bigLittle.trial_code']


def test_subpackages_map_to_the_top_level_folders():
    import importlib
    from pathlib import Path
    for name in SUBPACKAGES:
        module = importlib.import_module(name)
        folder = Path(module.__file__).parent.name
        assert folder == (name.split('.')[-1] if '.' in name else 'nni_bigLittle'), (name, module.__file__)


def test_core_imports_with_optional_backends_missing():
    script = '''
import sys
BLOCKED = ('onnx', 'onnxruntime', 'tensorrt', 'nn_meter')
for name in BLOCKED:
    sys.modules[name] = None  # what an uninstalled package looks like to import and importlib.util.find_spec
import nni_bigLittle, nni_bigLittle.search_spaces, nni_bigLittle.strategies, nni_bigLittle.hw_predictors
import nni_bigLittle.trial_code, nni_bigLittle.data, nni_bigLittle.app.cli, nni_bigLittle.nn.costs
from nni_bigLittle.search_spaces import BigLittleSpace
space = BigLittleSpace('cifar', depth_choices=(1,), little_depth_choices=(0,), width_choices=(0.5,),
                       kernel_choices=(3,), expand_choices=(2,))
space.freeze(space.random(random_state=0))
assert all(sys.modules[name] is None for name in BLOCKED)
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr


def _cli(*args):
    """Run the installed console script (it sits next to this interpreter in the venv)."""
    import shutil
    from pathlib import Path
    script = Path(sys.executable).parent / 'nni-biglittle'
    script = str(script) if script.exists() else shutil.which('nni-biglittle')
    assert script, 'the nni-biglittle console script is not installed (pip install -e .)'
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=300)


def test_cli_space_show_and_sample():
    out = _cli('space', 'show', '--preset', 'cifar')
    assert out.returncode == 0, out.stderr
    assert 'trunk/s0/width' in out.stdout and 'router/threshold' in out.stdout and 'largest: big' in out.stdout
    import json
    out = _cli('space', 'sample', '--seed', '4')
    record = json.loads(out.stdout)
    assert record['little_macs'] < record['big_macs']
    assert record['expected_macs@0.3'] == pytest.approx(record['little_macs'] + record['router_macs']
                                                         + 0.3 * record['big_tail_macs'])


def test_cli_data_info_and_clear_errors(tmp_path):
    out = _cli('data', 'info', 'digits')
    assert out.returncode == 0 and 'train   1294' in out.stdout, out.stdout + out.stderr
    out = _cli('data', 'info', 'cifar10', '--root', str(tmp_path))
    assert out.returncode == 2 and out.stderr.startswith('error: cifar10 not found') and 'Traceback' not in out.stderr
    out = _cli('space', 'show', '--preset', 'mnist')
    assert out.returncode == 2 and 'Unknown preset' in out.stderr
