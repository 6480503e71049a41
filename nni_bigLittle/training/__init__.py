"""The one training recipe, shared by supernet co-training, baselines, ablations, fine-tuning and nnictl trials.

- ``recipe``: :class:`Recipe` (SGD with Nesterov momentum, weight decay on conv/linear weights only,
  linear warm-up then cosine decay per step, gradient clipping) and the optimizer it builds;
- ``module``: :class:`ClassifierModule`, the LightningModule that trains one network with that recipe;
- ``trainer``: :func:`make_trainer` (progress bar, atomic ``last.ckpt``, CSV log of per-epoch metrics) and
  :func:`fit`, which trains a network and resumes from its folder's checkpoint.

Nobody writes an epoch loop by hand: the loop, checkpoints and progress bars are Lightning's.
"""
from nni_bigLittle.training.recipe import Recipe, configure_sgd
from nni_bigLittle.training.module import ClassifierModule
from nni_bigLittle.training.trainer import AtomicCheckpoint, FitResult, fit, make_trainer

__all__ = ['Recipe', 'configure_sgd', 'ClassifierModule', 'AtomicCheckpoint', 'FitResult', 'fit', 'make_trainer']
