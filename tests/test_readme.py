"""Every Python snippet of the README runs as a user would copy it (a fresh interpreter, an empty folder), and the
main ones compute what the README says."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

README = REPO / 'README.md'
SNIPPETS = re.findall(r'^```python\n(.*?)^```', README.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize('index', range(len(SNIPPETS)), ids=lambda i: f'snippet{i + 1}')
def test_readme_snippet_runs_as_copied(index, tmp_path):
    script = tmp_path / 'snippet.py'
    script.write_text(SNIPPETS[index])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f'README snippet {index + 1} failed:\n{SNIPPETS[index]}\n{done.stderr[-3000:]}'


# what the snippets compute, checked in this interpreter
def test_readme_python_example_runs():
    text = (REPO / 'README.md').read_text()
    blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
    assert blocks, 'README has no python example'
    namespace = {}
    exec(compile(blocks[0], 'README.md', 'exec'), namespace)  # noqa: S102 - our own README
    assert tuple(namespace['pred'].shape) == (8,) and str(namespace['escalated'].dtype) == 'torch.bool'


def test_readme_predictor_example_runs():
    text = (REPO / 'README.md').read_text()
    block = next(b for b in re.findall(r'```python\n(.*?)```', text, flags=re.S) if 'load_predictor' in b)
    namespace = {}
    exec(compile(block, 'README.md', 'exec'), namespace)  # noqa: S102 - our own README
    assert namespace['budget'] > 0
    assert namespace['darts'].penalty is not None and namespace['one_shot'] is not None


def test_readme_cotraining_example_runs(tmp_path, monkeypatch):
    text = (REPO / 'README.md').read_text()
    block = next(b for b in re.findall(r'```python\n(.*?)```', text, flags=re.S) if 'SandwichCoTraining' in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, 'README.md', 'exec'), namespace)  # noqa: S102 - our own README
    from nni_bigLittle.search_spaces import BigLittleSpace
    loaded = BigLittleSpace.load(tmp_path / 'supernet.pt')
    assert loaded.spec == namespace['space'].spec
