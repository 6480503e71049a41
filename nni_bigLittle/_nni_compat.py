"""Import NNI's PyTorch NAS layer quietly, and make NNI 3.0's ENAS run with today's libraries.

Importing this module only imports NNI (nothing of NNI or of the process is changed):

- NNI 3.0 warns once for every ``torch.nn`` class newer than itself ("is found to be not a
  nn.Module"); the warning is harmless, so the import is wrapped to keep it from every user.
- Import order: importing ``nni.nas.oneshot.pytorch.strategy`` before ``nni.nas.strategy`` makes the
  latter export placeholder strategies (a circular import NNI catches as ``ImportError``); this
  module imports them in the working order.

:func:`prepare_enas` is called for one ENAS strategy when it mutates a ``BigLittleSpace``
(``BigLittleSpace.extra_oneshot_hooks``), the one place that needs it:

- NNI's RL controller imports ``gym``, which is unmaintained; tianshou 0.5 (the last release with the
  API NNI 3.0 calls) brings ``gymnasium``, whose ``Env`` and ``spaces`` are what NNI uses, so ``gym``
  is made an alias of it when ``gym`` itself is absent.
- pytorch-lightning >= 2.1 hands ``training_step`` the bare batch of NNI's concatenated train/val
  loader, so ``EnasLightningModule`` cannot tell training from validation batches: that strategy's
  loaders are tagged ``(batch, 'train' | 'val')``, the form its ``training_step`` reads.
"""
import importlib.util
import sys
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='.*is found to be not a nn.Module', category=RuntimeWarning)
    import nni.nas.nn.pytorch  # noqa: F401
    import nni.nas.strategy  # noqa: F401  (before the one-shot strategies, see above)
    from nni.nas.oneshot.pytorch import strategy as _oneshot  # noqa: F401


class _TaggedLoader:
    """Yields ``(batch, tag)``; ``EnasLightningModule.training_step`` reads it as ``(batch, mode)``."""

    def __init__(self, loader, tag: str):
        self.loader, self.tag = loader, tag

    def __iter__(self):
        return ((batch, self.tag) for batch in self.loader)

    def __len__(self):
        return len(self.loader)


def prepare_enas(strategy) -> None:
    """Make this ENAS strategy instance work with gymnasium and pytorch-lightning >= 2.1 (see above)."""
    if importlib.util.find_spec('gym') is None and importlib.util.find_spec('gymnasium') is not None:
        import gymnasium
        sys.modules.setdefault('gym', gymnasium)
        sys.modules.setdefault('gym.spaces', gymnasium.spaces)
    import pytorch_lightning
    major, minor = (int(part) for part in pytorch_lightning.__version__.split('.')[:2])
    if (major, minor) < (2, 1) or getattr(strategy, '_biglittle_tagged', False):
        return
    original = strategy.train_dataloader  # bound to this instance: other ENAS strategies are left alone

    def train_dataloader(train_dataloader_fn, val_dataloader_fn):
        return original(lambda: _TaggedLoader(train_dataloader_fn(), 'train'),
                        lambda: _TaggedLoader(val_dataloader_fn(), 'val'))

    strategy.train_dataloader = train_dataloader
    strategy._biglittle_tagged = True
