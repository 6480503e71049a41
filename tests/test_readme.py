"""The README's Python example runs as written."""
import re

from conftest import REPO


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
