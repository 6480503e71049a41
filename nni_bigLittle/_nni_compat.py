"""Import NNI's PyTorch NAS layer quietly, and make NNI 3.0 work with today's libraries.

- NNI 3.0 warns once for every ``torch.nn`` class newer than itself ("is found to be not a
  nn.Module"); the warning is harmless and would otherwise greet every user of the package.
- Import order: importing ``nni.nas.oneshot.pytorch.strategy`` before ``nni.nas.strategy`` makes the
  latter export placeholder strategies (a circular import NNI catches as ``ImportError``); this
  module imports them in the working order.
- ENAS: NNI's RL controller imports ``gym``, which is unmaintained; tianshou 0.5 (the last release
  with the API NNI 3.0 calls) brings ``gymnasium``, whose ``Env`` and ``spaces`` are what NNI uses,
  so ``gym`` is aliased to it when ``gym`` itself is absent. And pytorch-lightning >= 2.1 hands
  ``training_step`` the bare batch of NNI's concatenated train/val loader, so
  ``EnasLightningModule`` cannot tell training from validation batches: its loaders are tagged
  ``(batch, 'train' | 'val')``, the form its ``training_step`` reads.

Modules that build supernets import this first; the frozen model and the data code do not need NNI.
"""
import importlib.util
import sys
import warnings

if importlib.util.find_spec('gym') is None and importlib.util.find_spec('gymnasium') is not None:
    import gymnasium
    sys.modules.setdefault('gym', gymnasium)
    sys.modules.setdefault('gym.spaces', gymnasium.spaces)

with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='.*is found to be not a nn.Module', category=RuntimeWarning)
    import nni.nas.nn.pytorch  # noqa: F401
    import nni.nas.strategy  # noqa: F401  (before the one-shot strategies, see above)
    from nni.nas.oneshot.pytorch import strategy as _oneshot


class _TaggedLoader:
    """Yields ``(batch, tag)``; ``EnasLightningModule.training_step`` reads it as ``(batch, mode)``."""

    def __init__(self, loader, tag: str):
        self.loader, self.tag = loader, tag

    def __iter__(self):
        return ((batch, self.tag) for batch in self.loader)

    def __len__(self):
        return len(self.loader)


def _patch_enas_loaders() -> None:
    import pytorch_lightning
    major, minor = (int(part) for part in pytorch_lightning.__version__.split('.')[:2])
    if (major, minor) < (2, 1) or getattr(_oneshot.ENAS, '_biglittle_tagged', False):
        return
    original = _oneshot.ENAS.train_dataloader

    def train_dataloader(self, train_dataloader_fn, val_dataloader_fn):
        return original(self, lambda: _TaggedLoader(train_dataloader_fn(), 'train'),
                        lambda: _TaggedLoader(val_dataloader_fn(), 'val'))

    _oneshot.ENAS.train_dataloader = train_dataloader
    _oneshot.ENAS._biglittle_tagged = True


_patch_enas_loaders()
