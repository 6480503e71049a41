"""Module paths of version 0.1 that moved in 0.2, kept importable for one release (removed in 0.3).

``import nni_bigLittle.model`` (or ``from nni_bigLittle.model import X``) warns once and yields the
module at its new path itself, so every name of it, private ones included, still resolves. The finder
answers only for the names in :data:`MOVED`; every other import passes it by.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    **{f'nni_bigLittle.{name}': f'nni_bigLittle.nn.{name}'
       for name in ('arch', 'ops', 'elastic', 'model', 'router', 'losses', 'costs')},
    **{f'nni_bigLittle.{name}': f'nni_bigLittle.deploy.{name}' for name in ('export', 'run_bundle', 'bench')},
    'nni_bigLittle.tensorrt_engines': 'nni_bigLittle.deploy.tensorrt',
    **{f'nni_bigLittle.{name}': f'nni_bigLittle.app.{name}'
       for name in ('cli', 'pipeline', 'report', 'ablations', 'experiment', 'baselines', 'runs')},
    'nni_bigLittle.strategies.differentiable': 'nni_bigLittle.search_spaces.relaxation',
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warnings.warn(f'{spec.name} moved to {self.new} in nni_bigLittle 0.2; import it from there '
                      '(the old path is removed in 0.3).', DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self._spec = module.__spec__  # the import system overwrites __spec__ with the old name's; restored below
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _MovedModuleLoader(new))


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
