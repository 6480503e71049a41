"""The package's layering, read from the source (every import statement, lazy ones inside functions too), its
one exception base, the old module paths of 0.1 and the absence of global side effects at import."""
import ast
import importlib
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import nni_bigLittle
from nni_bigLittle._deprecated import MOVED

REPO = Path(__file__).resolve().parents[1]
# the repository's code folders and the package names they install as (setup.cfg package_dir)
FOLDERS = {'nni_bigLittle': 'nni_bigLittle', 'search_spaces': 'nni_bigLittle.search_spaces',
           'strategies': 'nni_bigLittle.strategies', 'trial_code': 'nni_bigLittle.trial_code',
           'hw_predictors': 'nni_bigLittle.hw_predictors'}
STANDALONE = ('nni_bigLittle.deploy.run_bundle', 'nni_bigLittle.hw_predictors.bench_onnx')


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob('*.py')):
            parts = list(path.relative_to(REPO / folder).with_suffix('').parts)
            if parts[-1] == '__init__':
                parts.pop()
            found['.'.join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of the package that ``name`` imports, anywhere in the file."""
    is_package = path.name == '__init__.py'
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.')[:len(name.split('.')) - node.level + is_package]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.add(module)
            out.update(f'{module}.{alias.name}' for alias in node.names)  # `from pkg import submodule`
    return {m for m in out if m.startswith('nni_bigLittle')}


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + '.') for p in prefixes)


# which layer may not import which: arrows point down only
FORBIDDEN = {
    'nni_bigLittle.nn': ('nni_bigLittle.app', 'nni_bigLittle.deploy', 'nni_bigLittle.training',
                         'nni_bigLittle.evaluation', 'nni_bigLittle.data', 'nni_bigLittle.search_spaces',
                         'nni_bigLittle.strategies', 'nni_bigLittle.hw_predictors', 'nni_bigLittle.trial_code'),
    'nni_bigLittle.data': ('nni_bigLittle.app', 'nni_bigLittle.deploy', 'nni_bigLittle.training',
                           'nni_bigLittle.evaluation', 'nni_bigLittle.nn', 'nni_bigLittle.search_spaces',
                           'nni_bigLittle.strategies', 'nni_bigLittle.hw_predictors', 'nni_bigLittle.trial_code'),
    'nni_bigLittle.training': ('nni_bigLittle.app', 'nni_bigLittle.trial_code'),
    'nni_bigLittle.evaluation': ('nni_bigLittle.app', 'nni_bigLittle.trial_code'),
    'nni_bigLittle.deploy': ('nni_bigLittle.app', 'nni_bigLittle.trial_code', 'nni_bigLittle.training'),
    'nni_bigLittle.search_spaces': ('nni_bigLittle.strategies', 'nni_bigLittle.app', 'nni_bigLittle.deploy',
                                    'nni_bigLittle.training', 'nni_bigLittle.evaluation', 'nni_bigLittle.trial_code',
                                    'nni_bigLittle.hw_predictors'),
    'nni_bigLittle.strategies': ('nni_bigLittle.app', 'nni_bigLittle.trial_code'),
    'nni_bigLittle.hw_predictors': ('nni_bigLittle.app', 'nni_bigLittle.deploy', 'nni_bigLittle.training',
                                    'nni_bigLittle.evaluation', 'nni_bigLittle.strategies', 'nni_bigLittle.trial_code'),
}


@pytest.mark.parametrize('layer', sorted(FORBIDDEN))
def test_arrows_point_down_only(layer):
    wrong = [f'{name} imports {target}' for name, path in MODULES.items() if _within(name, layer)
             for target in sorted(_imports(name, path)) if _within(target, *FORBIDDEN[layer])]
    assert not wrong, '\n'.join(wrong)


def test_search_spaces_never_import_a_strategy():
    searched = [name for name in MODULES if _within(name, 'nni_bigLittle.search_spaces')]
    assert 'nni_bigLittle.search_spaces.space' in searched and 'nni_bigLittle.search_spaces.relaxation' in searched
    assert not [name for name in searched if any(_within(t, 'nni_bigLittle.strategies')
                                                 for t in _imports(name, MODULES[name]))]


@pytest.mark.parametrize('name', STANDALONE)
def test_device_scripts_import_nothing_of_the_package(name):
    assert _imports(name, MODULES[name]) == set()


def test_the_layering_check_sees_lazy_and_relative_imports():
    """The rules above would be empty words if the scanner missed imports inside functions."""
    assert 'nni_bigLittle.search_spaces.relaxation' in _imports('nni_bigLittle.search_spaces.space',
                                                                MODULES['nni_bigLittle.search_spaces.space'])
    assert 'nni_bigLittle.hw_predictors.bench_onnx' in _imports('nni_bigLittle.hw_predictors.profilers',
                                                                MODULES['nni_bigLittle.hw_predictors.profilers'])


def _all_modules():
    modules = []
    for name in sorted(MODULES):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            modules.append(importlib.import_module(name))
    return modules


def test_every_exception_derives_from_biglittle_error():
    from nni_bigLittle.errors import BigLittleError
    classes = [obj for module in _all_modules() for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    assert len(classes) >= 20  # the scan reaches the whole package
    assert [f'{c.__module__}.{c.__qualname__}' for c in classes if not issubclass(c, BigLittleError)] == []
    names = {}
    for cls in classes:
        names.setdefault(cls.__name__, []).append(cls.__module__)
    assert {n: m for n, m in names.items() if len(m) > 1} == {}  # one class per name


def test_errors_keep_their_builtin_bases():
    from nni_bigLittle.data import DataNotFoundError
    from nni_bigLittle.errors import ConfigError
    from nni_bigLittle.nn.router import CalibrationError
    assert issubclass(ConfigError, ValueError) and issubclass(CalibrationError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_stand_alone_device_script_keeps_runtime_error_outside_the_package(tmp_path):
    script = tmp_path / 'run_bundle.py'
    script.write_text(MODULES['nni_bigLittle.deploy.run_bundle'].read_text())
    out = subprocess.run([sys.executable, '-c', 'import sys; sys.path.insert(0, sys.argv[1]); import run_bundle; '
                          'print([c.__name__ for c in run_bundle.BundleError.__mro__])', str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['BundleError', 'RuntimeError', 'Exception', 'BaseException', 'object']"


@pytest.mark.parametrize('old', sorted(MOVED))
def test_old_module_paths_warn_and_resolve_to_the_new_module(old):
    new = importlib.import_module(MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f'{old} moved to {MOVED[old]}'):
        module = importlib.import_module(old)
    assert module is new and module.__spec__.name == MOVED[old]


def _third_party_imports() -> list[str]:
    """Every module outside the package that the package's code imports (lazily too)."""
    out = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                out.add(node.module)
    return sorted(m for m in out if not m.startswith('nni_bigLittle') and m.split('.')[0] not in sys.stdlib_module_names)


def test_importing_the_package_changes_nothing_global():
    """Libraries set warning filters of their own as they load, so they are all loaded first; what changes
    after that is the package's doing: only the finder of the 0.1 module paths may be added."""
    script = '''
import importlib, sys, warnings
third_party, ours = sys.argv[1].split(','), sys.argv[2].split(',')
for name in third_party:
    try:
        importlib.import_module(name)
    except Exception:  # optional backends (tensorrt, nn_meter, ...) absent here
        pass
filters = list(warnings.filters)
from nni.nas.oneshot.pytorch.strategy import ENAS
enas_loader = ENAS.train_dataloader
meta_path = list(sys.meta_path)
gym = sys.modules.get('gym')
for name in ours:
    importlib.import_module(name)
added = [type(f).__name__ for f in sys.meta_path if f not in meta_path]
assert added == ['MovedModuleFinder'], added
assert warnings.filters == filters, [f for f in warnings.filters if f not in filters]
assert ENAS.train_dataloader is enas_loader
assert sys.modules.get('gym') is gym
print('ok')
'''
    ours = [n for n in sorted(MODULES) if not n.startswith('nni_bigLittle.trial_code.')]
    out = subprocess.run([sys.executable, '-c', script, ','.join(_third_party_imports()), ','.join(ours)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stdout[-2000:] + out.stderr[-3000:]


def test_version_is_set():
    assert nni_bigLittle.__version__.count('.') == 2
