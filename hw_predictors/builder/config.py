"""Settings of a build (:class:`BuildConfig`, the kernel regressors by name), its error and default folders."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nni_bigLittle.hw_predictors.builder.kernel_configs import weight_mb
from nni_bigLittle.errors import BigLittleError

PREDICTOR_NAME = 'local_cpu_ort'
DATA_SOURCE = 'profiled on this machine by nni-biglittle predictor build-local'


class BuildError(BigLittleError, ValueError):
    """The build cannot go on (the message says why and what to do)."""


def default_predictor_dir() -> Path:
    """Where user predictors live: ``$NNI_BIGLITTLE_PREDICTORS`` or ``~/.cache/nni_bigLittle/predictors``."""
    env = os.environ.get('NNI_BIGLITTLE_PREDICTORS')
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'nni_bigLittle' / 'predictors'


def default_work_dir() -> Path:
    """The measurement cache of ``build-local`` (beside the predictors)."""
    return default_predictor_dir() / f'{PREDICTOR_NAME}.work'


def _gradient_boosting():
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(n_estimators=400, max_depth=5, learning_rate=0.05, subsample=0.8, random_state=0)


def _extra_trees():
    from sklearn.ensemble import ExtraTreesRegressor
    return ExtraTreesRegressor(n_estimators=100, min_samples_leaf=1, random_state=0, n_jobs=1)


def _random_forest():
    from nni_bigLittle.hw_predictors.predictor import random_forest
    return random_forest()


#: Kernel regressors by name (all storable in the predictor file format).
REGRESSORS: dict[str, Callable[[], Any]] = {'random-forest': _random_forest, 'extra-trees': _extra_trees,
                                            'gradient-boosting': _gradient_boosting}


@dataclass
class BuildConfig:
    """Settings of :func:`build_local_predictor` (defaults: the documented build on a 2-core machine)."""

    threads: int = 1
    seed: int = 0
    budget_minutes: float = 20.0
    out: str | Path | None = None              # predictor file (default: user dir / local_cpu_ort.npz)
    work_dir: str | Path | None = None          # measurement cache (default: default_work_dir())
    report_dir: str | Path | None = None        # validation report (Markdown + CSV); None: none
    validate: int = 20                           # validation seeds (each gives a little path and a big network)
    calibrate: int = 30                          # calibration seeds (likewise), disjoint from validation
    cifar_archs: int = 300                       # random cifar samples the prior is drawn from
    imagenet_archs: int = 3                      # random imagenet samples (224x224) for the prior
    timm_models: tuple[str, ...] = ()            # e.g. ('mobilenetv3_large_100', 'efficientnet_b0')
    n_perturbed: dict[str, int] | None = None    # perturbed configurations per type (DEFAULT_PERTURBED)
    part_caps: dict[str, int] | None = None      # observed MBConv parts kept per type (DEFAULT_PART_CAPS)
    holdout: float = 0.12                        # share of the prior kept for refinement and for test (each)
    rounds: int = 5                              # adaptive refinement rounds
    refine_top: int = 40                         # worst configurations per round
    refine_neighbors: int = 4                    # new configurations sampled around each
    kernel_warmup: int = 10
    kernel_repeats: int = 30
    kernel_min_time_s: float = 0.04
    network_warmup: int = 20
    network_repeats: int = 200
    network_min_time_s: float = 0.12
    network_passes: int = 5                      # passes over the networks spread over the build; their median
    regressor: str = 'random-forest'             # or 'extra-trees', 'gradient-boosting' (see REGRESSORS)
    regressor_factory: Callable[[], Any] | None = None  # an unfitted scikit-learn tree ensemble; overrides regressor
    progress: bool = True

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError(f'threads must be >= 1, got {self.threads}.')
        if self.budget_minutes <= 0:
            raise ValueError(f'budget_minutes must be > 0, got {self.budget_minutes}.')
        if self.validate < 0 or self.calibrate < 0:
            raise ValueError('validate and calibrate must be >= 0.')
        if not 0 < self.holdout < 0.4:
            raise ValueError(f'holdout must be in (0, 0.4), got {self.holdout}.')
        if self.regressor not in REGRESSORS:
            raise ValueError(f'Unknown regressor {self.regressor!r}; choose one of {sorted(REGRESSORS)} or pass '
                             'regressor_factory.')

    def make_regressor(self):
        return self.regressor_factory() if self.regressor_factory is not None else REGRESSORS[self.regressor]()

    # disjoint seed ranges: prior archs are drawn from a seeded generator and never equal these
    def calibration_seeds(self) -> list[int]:
        """Half random, half spread evenly over the big network's weight size (the network-level cache
        term needs calibration networks on both sides of the L2 limit, random ones leave gaps)."""
        from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels
        from nni_bigLittle.search_spaces.presets import get_preset
        base = 1_000_000 + 1000 * self.seed
        n_random = (self.calibrate + 1) // 2
        chosen = list(range(base, base + n_random))
        n_spread = self.calibrate - n_random
        if n_spread <= 0:
            return chosen
        spec = get_preset('cifar')
        candidates = range(base + n_random, base + n_random + max(60, 10 * n_spread))
        sizes = {seed: weight_mb(arch_kernels(spec.decode(spec.random_sample(random.Random(seed)))).big)
                 for seed in candidates}
        lo, hi = np.percentile(list(sizes.values()), [1, 99])
        for target in np.linspace(lo, hi, n_spread):
            seed = min((s for s in sizes if s not in chosen), key=lambda s: abs(sizes[s] - target))
            chosen.append(seed)
        return chosen

    def validation_seeds(self) -> list[int]:
        return [2_000_000 + 1000 * self.seed + i for i in range(self.validate)]
