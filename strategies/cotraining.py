"""Co-training the big/little supernet: ``SandwichCoTraining`` and ``ProgressiveShrinking``.

Both are NNI one-shot strategies (subclasses of NNI's ``RandomOneShot``, so the space keeps its
path-sampling supernet modules) used as ``NasExperiment(space, evaluator, strategy)`` with an
evaluator ``Lightning(CoTrainingModule(...), Trainer(...), train_dataloaders=..., val_dataloaders=...)``.
The evaluator's :class:`CoTrainingModule` holds the recipe (the joint loss of
:mod:`nni_bigLittle.nn.losses`, SGD with warm-up and cosine decay); the strategy decides which
subnets are trained on each batch:

- **SandwichCoTraining** (Yu & Huang, US-Nets 2019; Yu et al., BigNAS 2020): per batch the
  largest big network (with a random valid little branch), the smallest pair and ``num_random``
  random valid pairs; their gradients are
  summed into one optimizer step. The largest pair learns from the labels (its little head
  distils from its own big head); every other pair's little *and* big heads distil from the
  largest big network's detached predictions (in-place distillation). Every pair draws its fork
  point, so each fork's little branch is trained.
- **ProgressiveShrinking** (Cai et al., Once-for-All 2020): phases ``full`` -> ``kernel`` ->
  ``depth`` -> ``expand`` -> ``width`` -> ``branches``, each unlocking one more elastic dimension
  of the trunk (labels not yet unlocked stay at their largest value); ``branches`` unlocks the
  little branches' own width/depth/kernel/expansion (until then they are at their largest, valid
  pair, at a random fork). After ``full``, a frozen copy of the full network is the teacher of
  every sampled pair.

Shared by both (:class:`CoTrainingLightningModule`):

- the router: every pair draws its policy and threshold; the learned router's MLP is trained by
  the routing loss on every pair (it reads detached little features), the consistency term uses
  the drawn threshold;
- validation: each probe pair (largest and smallest at the middle fork) is frozen, its batch
  norms are re-calibrated on recent training batches (BN re-calibration of sampled subnets,
  Once-for-All), and its little, big and dynamic accuracy (max-softmax router at 30 %
  escalation) are measured on the validation split;
- resume: a seeded ``random.Random`` drives all sampling; its state, the torch RNG state and the
  position in the epoch (:class:`ResumableLoader`) are saved in every checkpoint, so a killed run
  re-run with the same command continues at the batch after the last checkpoint, with the same
  data order and the same sequence of sampled pairs.
"""
from __future__ import annotations

import copy
import math
import random
import time
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

import nni
import nni_bigLittle._nni_compat  # noqa: F401  (quiet NNI import)
from nni.nas.evaluator.pytorch import LightningModule
from nni.nas.oneshot.pytorch.base_lightning import BaseOneShotLightningModule
from nni.nas.oneshot.pytorch.strategy import RandomOneShot

from nni_bigLittle.nn.losses import JointLoss, LossWeights, active_threshold
from nni_bigLittle.nn.model import recalibrate_batchnorm
from nni_bigLittle.nn.router import calibrate_threshold, dynamic_accuracy, escalation_mask, router_confidence
from nni_bigLittle.search_spaces.spec import SpaceSpec
from nni_bigLittle.search_spaces.spec import make_valid
from nni_bigLittle.registry import Registry
from nni_bigLittle.training.recipe import Recipe, configure_sgd

__all__ = [
    'ResumableBatchSampler', 'ResumableLoader', 'CoTrainingModule', 'CoTrainingLightningModule',
    'SandwichCoTraining', 'ProgressiveShrinking', 'PHASES', 'max_pair', 'min_pair', 'draw_pair', 'phase_choices',
]

PHASES = ('full', 'kernel', 'depth', 'expand', 'width', 'branches')
PROBE_ESCALATION = 0.3


# ---------------------------------------------------------------------------------------------------------
# data order that survives a kill
# ---------------------------------------------------------------------------------------------------------
class ResumableBatchSampler(Sampler):
    """Seeded per-epoch permutation in batches that can restart in the middle of an epoch.

    The trainer tells it when a batch has been *trained on* (:meth:`mark_done`), so prefetching
    does not confuse the position; :meth:`state_dict` is ``{epoch, done}`` and after
    :meth:`load_state_dict` the next iteration skips the ``done`` batches of that epoch.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, drop_last: bool = True):
        if num_items < 1 or batch_size < 1:
            raise ValueError(f'Need at least one item and batch_size >= 1, got {num_items} items, batch {batch_size}.')
        if drop_last and num_items < batch_size:
            raise ValueError(f'batch_size {batch_size} is larger than the {num_items} training items; lower it.')
        self.num_items, self.batch_size, self.seed, self.drop_last = num_items, batch_size, seed, drop_last
        self.epoch = 0
        self.done = 0
        self.sampler = self  # Lightning calls ``batch_sampler.sampler.set_epoch(epoch)`` each epoch

    def __len__(self) -> int:
        return self.num_items // self.batch_size if self.drop_last else math.ceil(self.num_items / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.done = epoch, 0

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch).tolist()
        for b in range(self.done, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def mark_done(self) -> None:
        self.done += 1

    def state_dict(self) -> dict[str, int]:
        return {'epoch': self.epoch, 'done': self.done, 'seed': self.seed, 'num_items': self.num_items}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if state.get('num_items', self.num_items) != self.num_items or state.get('seed', self.seed) != self.seed:
            raise ValueError(f'The checkpoint was written for a loader over {state.get("num_items")} items with seed '
                             f'{state.get("seed")}, this one has {self.num_items} items and seed {self.seed}; the '
                             'data or its split changed since the run started.')
        self.epoch, self.done = int(state['epoch']), int(state['done'])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over ``dataset`` whose epoch position the co-training strategies save in
    their checkpoints (Lightning's own loader-state restore is skipped when ``configure_optimizers``
    asks for ``estimated_stepping_batches``, which sets the loader up before the checkpoint is read)."""

    def __init__(self, dataset, batch_size: int, seed: int = 0, num_workers: int = 0, drop_last: bool = True):
        super().__init__(dataset, batch_sampler=ResumableBatchSampler(len(dataset), batch_size, seed, drop_last),
                         num_workers=num_workers, persistent_workers=num_workers > 0)


# ---------------------------------------------------------------------------------------------------------
# which pairs to train
# ---------------------------------------------------------------------------------------------------------
def _extreme_pair(spec: SpaceSpec, fork: int, pick) -> dict[str, Any]:
    sample = {label: pick(allowed) for label, allowed in spec.choices().items()}
    sample['little/fork'] = fork
    sample['router/policy'] = spec.policy_choices[0]
    sample['router/threshold'] = spec.threshold_choices[len(spec.threshold_choices) // 2]
    return sample if spec.check(sample) is None else make_valid(spec, sample)


def max_pair(spec: SpaceSpec, fork: int) -> dict[str, Any]:
    """Every trunk and little choice at its largest at ``fork`` (the little network shrunk if that is invalid)."""
    return _extreme_pair(spec, fork, max)


def min_pair(spec: SpaceSpec, fork: int) -> dict[str, Any]:
    """Every trunk and little choice at its smallest at ``fork``."""
    return _extreme_pair(spec, fork, min)


def _dimension(label: str) -> str:
    if label.startswith('router/'):
        return 'router'
    if label == 'little/fork' or label.startswith('little/'):
        return 'branches'
    return {'kernel': 'kernel', 'depth': 'depth', 'expand': 'expand', 'width': 'width'}[label.rsplit('/', 1)[1]]


def phase_choices(spec: SpaceSpec, phase: str) -> dict[str, tuple[Any, ...]]:
    """Allowed values per label in a progressive-shrinking phase (locked labels: their largest value).

    The fork and the router are always drawn; little-branch choices unlock in ``branches``.
    """
    if phase not in PHASES:
        raise ValueError(f'Unknown phase {phase!r}; phases are {PHASES}.')
    unlocked = set(PHASES[1:PHASES.index(phase) + 1]) | {'router'}
    out = {}
    for label, allowed in spec.choices().items():
        if label == 'little/fork' or _dimension(label) in unlocked:
            out[label] = tuple(allowed)
        else:
            out[label] = (max(allowed),)
    return out


def draw_pair(spec: SpaceSpec, rng: random.Random, allowed: Mapping[str, Sequence[Any]] | None = None,
              tries: int = 50) -> dict[str, Any]:
    """A valid pair drawn uniformly per label from ``allowed`` (default: every choice).

    Rejection sampling; if ``tries`` draws all give a little network not cheaper than the big one, the
    last draw is repaired by shrinking the little network (:func:`make_valid`).
    """
    allowed = allowed or spec.choices()
    sample = None
    for _ in range(tries):
        sample = {label: rng.choice(tuple(values)) for label, values in allowed.items()}
        if spec.check(sample) is None:
            return sample
    return make_valid(spec, sample)


# ---------------------------------------------------------------------------------------------------------
# the evaluator's recipe
# ---------------------------------------------------------------------------------------------------------
@nni.trace
class CoTrainingModule(LightningModule):
    """The training recipe of a co-training evaluator: joint loss, SGD (Nesterov) with linear
    warm-up then cosine decay per step, weight decay on conv/linear weights only.

    Used alone (no NAS strategy) it trains a frozen ``BigLittleModel`` with the joint loss.
    """

    def __init__(self, learning_rate: float = 0.1, momentum: float = 0.9, weight_decay: float = 4e-5,
                 nesterov: bool = True, warmup_epochs: float = 1.0, loss: Mapping[str, Any] | None = None,
                 channels_last: bool = True):
        super().__init__()
        self.recipe = Recipe(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
                             nesterov=nesterov, warmup_epochs=warmup_epochs)
        self.channels_last = channels_last
        self.loss_weights = LossWeights.from_dict(loss)
        self.joint_loss = JointLoss(self.loss_weights)

    def forward(self, x):
        return self.model(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def on_fit_start(self) -> None:
        if self.channels_last:  # about 2.6x faster training steps on CPU (benchmarks/train_step.py)
            self.model.to(memory_format=torch.channels_last)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, parts = self.joint_loss(self.model.forward_all(self.prepare(x)), y, router=self.model.router)
        self.log_dict({f'train/{k}': v for k, v in parts.items()}, prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx):
        """Logs ``default``: the dynamic accuracy at the active router threshold (the reward NNI's
        ENAS reads), and the little and big accuracy."""
        x, y = batch
        out = self.model.forward_all(self.prepare(x))
        little_ok, big_ok = out.little_logits.argmax(1) == y, out.big_logits.argmax(1) == y
        threshold = active_threshold(self.model.router)
        escalated = escalation_mask(out.confidence, threshold) if threshold is not None else torch.ones_like(big_ok)
        self.log('default', torch.where(escalated, big_ok, little_ok).float().mean(), on_step=True, on_epoch=False,
                 prog_bar=True)
        self.log_dict({'val/little_acc': little_ok.float().mean(), 'val/big_acc': big_ok.float().mean()})

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches)
        return configure_sgd(self.model.parameters(), self.recipe, total,
                             max(1, total // max(1, self.trainer.max_epochs or 1)))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)


# ---------------------------------------------------------------------------------------------------------
# the one-shot modules
# ---------------------------------------------------------------------------------------------------------
class CoTrainingLightningModule(BaseOneShotLightningModule):
    """Shared machinery of the co-training strategies (see the module docstring).

    Subclasses implement :meth:`pairs_for_step` -> ``(teacher_mode, samples)``.
    """

    def __init__(self, training_module: LightningModule, seed: int = 0, calibration_batches: int = 8,
                 probe_fork: int | None = None, metrics_callback=None, trace_file: str | None = None):
        super().__init__(training_module)
        self.seed = seed
        self.rng = random.Random(seed)
        self.calibration_batches = calibration_batches
        self.probe_fork = probe_fork
        self.metrics_callback = metrics_callback
        self.trace_file = trace_file  # CSV: epoch, batch, global step, labels digest, samples digest
        self._recent: list[torch.Tensor] = []
        self._sums: dict[str, float] = {}
        self._count = 0
        self._epoch_start = time.time()
        self._probe_results: dict[str, dict[str, Any]] = {}
        self._loader_state: dict[str, int] | None = None

    # ----- helpers -----
    @property
    def spec(self) -> SpaceSpec:
        return self.model.spec

    def activate(self, sample: Mapping[str, Any]) -> None:
        self.model.activate(sample, validate=False)  # samples are valid by construction

    def pairs_for_step(self, batch_idx: int) -> tuple[str, list[dict[str, Any]]]:
        raise NotImplementedError

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """Logits of an external teacher (progressive shrinking's frozen full network)."""
        return None

    def _resumable_sampler(self) -> ResumableBatchSampler | None:
        sampler = getattr(getattr(self.trainer, 'train_dataloader', None), 'batch_sampler', None)
        return sampler if isinstance(sampler, ResumableBatchSampler) else None

    def _mark_batch_done(self) -> None:
        sampler = self._resumable_sampler()
        if sampler is not None:
            sampler.mark_done()

    def on_train_start(self) -> None:
        # the checkpoint was read before the loader existed; the first batch is drawn after this hook
        sampler = self._resumable_sampler()
        if sampler is not None and self._loader_state is not None:
            sampler.load_state_dict(self._loader_state)
        elif self._loader_state is not None:
            warnings.warn('Resuming without a ResumableLoader: the interrupted epoch restarts from its first batch.')
        self._loader_state = None
        self.training_module.on_train_start()

    # ----- training -----
    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self.training_module.prepare(x)
        if len(self._recent) >= self.calibration_batches:
            self._recent.pop(0)
        self._recent.append(x.detach())
        mode, samples = self.pairs_for_step(batch_idx)
        optimizer = self.optimizers()
        self.training_module.optimizer_zero_grad(self.trainer.current_epoch, batch_idx, optimizer)
        teacher = self.teacher_logits(x)
        for i, sample in enumerate(samples):
            self.activate(sample)
            out = self.model.forward_all(x)
            loss, parts = self.training_module.joint_loss(out, y, teacher_logits=teacher, router=self.model.router)
            if teacher is not None and (mode == 'teacher' or i > 0):
                # the big head distils too (BigNAS, Once-for-All): every pair but the teacher learns from it
                big_kd = F.kl_div(F.log_softmax(out.big_logits, 1), F.softmax(teacher, 1), reduction='batchmean')
                loss = loss + self.training_module.loss_weights.alpha * big_kd
            self.manual_backward(loss / len(samples))
            if mode == 'inplace' and i == 0:
                teacher = out.big_logits.detach()
            for key, value in parts.items():
                self._sums[key] = self._sums.get(key, 0.0) + value / len(samples)
        if self.training_module.recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.training_module.recipe.grad_clip)
        self.training_module.optimizer_step(self.trainer.current_epoch, batch_idx, optimizer)
        self.advance_lr_schedulers(batch_idx)
        self._count += 1
        self._mark_batch_done()
        if self.trace_file:
            with open(self.trace_file, 'a') as f:
                f.write(f'{self.trainer.current_epoch},{batch_idx},{self.trainer.global_step},{_digest(y.tolist())},'
                        f'{_digest(samples)}\n')
        self.log('loss', parts['loss'], prog_bar=True)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.time()

    # ----- validation: probes, frozen and BN re-calibrated -----
    def probes(self) -> dict[str, dict[str, Any]]:
        fork = self.probe_fork if self.probe_fork is not None else len(self.spec.trunk) // 2
        return {'largest': max_pair(self.spec, fork), 'smallest': min_pair(self.spec, fork)}

    def on_validation_epoch_start(self) -> None:
        self._probe_models = {}
        calibration = self._recent or [self.training_module.prepare(b[0]) for b, _ in
                                       zip(self.trainer.val_dataloaders, range(self.calibration_batches))]
        for name, sample in self.probes().items():
            model = self.model.freeze(sample)
            recalibrate_batchnorm(model, calibration)
            self._probe_models[name] = model.eval()
        self._probe_outputs = {name: [] for name in self._probe_models}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        x = self.training_module.prepare(x)
        with torch.no_grad():
            for name, model in self._probe_models.items():
                out = model.forward_all(x)
                conf = router_confidence('max_softmax', out.little_logits)  # probes: max-softmax for every pair
                self._probe_outputs[name].append(((out.little_logits.argmax(1) == y).numpy(),
                                                  (out.big_logits.argmax(1) == y).numpy(), conf.numpy()))

    def on_validation_epoch_end(self) -> None:
        results = {}
        for name, chunks in self._probe_outputs.items():
            little_ok = np.concatenate([c[0] for c in chunks])
            big_ok = np.concatenate([c[1] for c in chunks])
            conf = np.concatenate([c[2] for c in chunks])
            cal = calibrate_threshold(conf, target_escalation=PROBE_ESCALATION)
            results[name] = {'little_acc': float(little_ok.mean()), 'big_acc': float(big_ok.mean()),
                             'dynamic_acc': dynamic_accuracy(conf, little_ok, big_ok, cal.threshold),
                             'escalation_rate': cal.escalation_rate}
        self._probe_results = results
        self._probe_models = {}
        flat = {f'val/{name}/{k}': v for name, r in results.items() for k, v in r.items()}
        if self.trainer.sanity_checking:
            return
        self.log_dict(flat)
        for name, r in results.items():
            self.log(f'{name}_big', r['big_acc'], prog_bar=True)
        row = {'epoch': self.trainer.current_epoch, 'step': self.trainer.global_step,
               'lr': self.optimizers().param_groups[0]['lr'],
               **{f'train_{k}': v / max(1, self._count) for k, v in sorted(self._sums.items())},
               **flat, 'epoch_time_s': round(time.time() - self._epoch_start, 1)}
        if self.metrics_callback is not None:
            self.metrics_callback(row)
        self._sums, self._count = {}, 0

    # ----- checkpoint: RNG and running sums -----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        import dataclasses
        name, keys, pos, has_gauss, cached = np.random.get_state()
        # plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True)
        checkpoint['biglittle_rng'] = {'python': self.rng.getstate(), 'torch': torch.get_rng_state(),
                                       'numpy': (name, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                 int(has_gauss), float(cached))}
        checkpoint['biglittle_progress'] = {'sums': dict(self._sums), 'count': self._count,
                                            'epoch_elapsed_s': time.time() - self._epoch_start,
                                            'recent': [t.clone() for t in self._recent]}
        checkpoint['biglittle_spec'] = dataclasses.asdict(self.spec)
        sampler = self._resumable_sampler()
        if sampler is not None:
            checkpoint['biglittle_loader'] = sampler.state_dict()
        self.training_module.on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get('biglittle_rng')
        if state is not None:
            self.rng.setstate(state['python'])
            torch.set_rng_state(state['torch'])
            name, keys, pos, has_gauss, cached = state['numpy']
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        progress = checkpoint.get('biglittle_progress', {})
        self._sums, self._count = dict(progress.get('sums', {})), int(progress.get('count', 0))
        # epoch time keeps counting across a resume (Lightning skips on_train_epoch_start mid-epoch)
        self._epoch_start = time.time() - float(progress.get('epoch_elapsed_s', 0.0))
        self._recent = list(progress.get('recent', []))
        self._loader_state = checkpoint.get('biglittle_loader')
        if self._loader_state is None:  # a checkpoint whose loader state Lightning kept
            states = checkpoint.get('loops', {}).get('fit_loop', {}).get('state_dict', {}).get('combined_loader')
            self._loader_state = states[0] if states else None
        self.training_module.on_load_checkpoint(checkpoint)

    def export(self) -> dict[str, Any]:
        """The largest pair: co-training trains a supernet; searching it is a separate step (evolution)."""
        return self.probes()['largest']


def _digest(value: Any) -> str:
    import hashlib
    import json
    return hashlib.md5(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


class SandwichLightningModule(CoTrainingLightningModule):
    def __init__(self, training_module: LightningModule, num_random: int = 2, **kwargs: Any):
        super().__init__(training_module, **kwargs)
        if num_random < 0:
            raise ValueError(f'num_random must be >= 0, got {num_random}.')
        self.num_random = num_random

    def pairs_for_step(self, batch_idx: int) -> tuple[str, list[dict[str, Any]]]:
        spec, rng = self.spec, self.rng
        # the largest big network with a random little branch (a largest little branch too would make the
        # teacher step ~1.5x dearer; random pairs cover the little branches), and the smallest pair
        trunk_max = {label: value for label, value in max_pair(spec, 0).items() if label.startswith('trunk/')}
        largest = draw_pair(spec, rng, {**spec.choices(), **{k: (v,) for k, v in trunk_max.items()}})
        smallest = min_pair(spec, rng.choice(spec.forks))
        smallest['router/policy'] = rng.choice(spec.policy_choices)
        smallest['router/threshold'] = rng.choice(spec.threshold_choices)
        return 'inplace', [largest, smallest] + [draw_pair(spec, rng) for _ in range(self.num_random)]


class ProgressiveShrinkingLightningModule(CoTrainingLightningModule):
    def __init__(self, training_module: LightningModule, phase_epochs: Sequence[int], samples_per_step: int = 2,
                 **kwargs: Any):
        super().__init__(training_module, **kwargs)
        if len(phase_epochs) != len(PHASES) or any(int(e) < 0 for e in phase_epochs) or int(phase_epochs[0]) < 1:
            raise ValueError(f'phase_epochs needs {len(PHASES)} non-negative epoch counts for {PHASES} '
                             f'(at least 1 for full), got {list(phase_epochs)}.')
        self.phase_epochs = [int(e) for e in phase_epochs]
        self.samples_per_step = samples_per_step
        self._teacher = None

    def phase(self, epoch: int | None = None) -> str:
        epoch = self.trainer.current_epoch if epoch is None else epoch
        bounds = np.cumsum(self.phase_epochs)
        index = int(np.searchsorted(bounds, epoch, side='right'))
        return PHASES[min(index, len(PHASES) - 1)]

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        phase = self.phase()
        if phase != 'full' and self._teacher is None:
            self._make_teacher()
        self.log('phase', float(PHASES.index(phase)))

    def _make_teacher(self) -> None:
        """A frozen copy of the full network (Once-for-All distils every phase after the first from it)."""
        self._teacher = copy.deepcopy(self.model.freeze(max_pair(self.spec, max(self.spec.forks)))).eval()
        for p in self._teacher.parameters():
            p.requires_grad_(False)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        if self._teacher is None:
            return None
        with torch.no_grad():
            return self._teacher.big_path()(x)

    def pairs_for_step(self, batch_idx: int) -> tuple[str, list[dict[str, Any]]]:
        phase = self.phase()
        if phase == 'full':
            sample = max_pair(self.spec, self.rng.choice(self.spec.forks))
            sample['router/policy'] = self.rng.choice(self.spec.policy_choices)
            sample['router/threshold'] = self.rng.choice(self.spec.threshold_choices)
            return 'own', [sample]
        allowed = phase_choices(self.spec, phase)
        return 'teacher', [draw_pair(self.spec, self.rng, allowed) for _ in range(self.samples_per_step)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._teacher is not None:
            checkpoint['biglittle_teacher'] = self._teacher.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if 'biglittle_teacher' in checkpoint:
            self._make_teacher()
            self._teacher.load_state_dict(checkpoint['biglittle_teacher'])


# ---------------------------------------------------------------------------------------------------------
# the strategies
# ---------------------------------------------------------------------------------------------------------
class _CoTrainingStrategy(RandomOneShot):
    """Base of the co-training strategies: a ``RandomOneShot`` (path-sampling supernet) whose
    one-shot module trains several pairs per batch; ``resume_from`` restarts from a Lightning checkpoint."""

    def __init__(self, *, seed: int = 0, resume_from: str | None = None, metrics_callback=None,
                 calibration_batches: int = 8, probe_fork: int | None = None, trace_file: str | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.seed, self.resume_from = seed, resume_from
        self._module_kwargs = dict(seed=seed, metrics_callback=metrics_callback,
                                   calibration_batches=calibration_batches, probe_fork=probe_fork,
                                   trace_file=trace_file)

    def _initialize(self, model_space, engine):
        mutated = super()._initialize(model_space, engine)
        if self.resume_from:
            mutated.evaluator.fit_kwargs['ckpt_path'] = str(self.resume_from)
        return mutated

    def _run(self) -> None:
        with warnings.catch_warnings():
            # Preloaded tensors need no loader workers; and the strategies restore the epoch position
            # themselves (ResumableLoader, on_train_start), so Lightning's mid-epoch resume warning does not apply.
            warnings.filterwarnings('ignore', message='.*does not have many workers.*')
            warnings.filterwarnings('ignore', message='.*resuming from a checkpoint that ended before the epoch ended.*')
            super()._run()

    def list_models(self, sort: bool = True, limit: int | None = 1):
        """The largest pair of the trained supernet; search it with ``strategies.evolution``."""
        self.oneshot_module.set_model(self.supernet)
        yield self.supernet.freeze(self.oneshot_module.export())


class SandwichCoTraining(_CoTrainingStrategy):
    """Sandwich-rule co-training (see the module docstring). ``num_random``: random pairs per batch
    besides the largest and the smallest (BigNAS uses 2)."""
    OPTIONS = ('num_random',)  # what a config's strategy_options may set

    def __init__(self, num_random: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_random = num_random

    def configure_oneshot_module(self, training_module: LightningModule) -> BaseOneShotLightningModule:
        _check_module(training_module)
        return SandwichLightningModule(training_module, num_random=self.num_random, **self._module_kwargs)


class ProgressiveShrinking(_CoTrainingStrategy):
    """Once-for-All progressive shrinking (see the module docstring). ``phase_epochs``: epochs of
    ``full, kernel, depth, expand, width, branches``; the Trainer's ``max_epochs`` should be their sum
    (later epochs stay in ``branches``)."""
    OPTIONS = ('phase_epochs', 'samples_per_step')

    def __init__(self, phase_epochs: Sequence[int] = (2, 1, 1, 1, 1, 2), samples_per_step: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.phase_epochs, self.samples_per_step = list(phase_epochs), samples_per_step

    def configure_oneshot_module(self, training_module: LightningModule) -> BaseOneShotLightningModule:
        _check_module(training_module)
        return ProgressiveShrinkingLightningModule(training_module, self.phase_epochs, self.samples_per_step,
                                                   **self._module_kwargs)


# the co-training strategies a config names (``strategy: sandwich``)
COTRAINING_STRATEGIES: Registry[type[_CoTrainingStrategy]] = Registry('co-training strategy')
COTRAINING_STRATEGIES.register('sandwich', SandwichCoTraining)
COTRAINING_STRATEGIES.register('progressive', ProgressiveShrinking)


def _check_module(training_module: LightningModule) -> None:
    if not isinstance(training_module, CoTrainingModule):
        raise TypeError(f'The co-training strategies need the evaluator module to be a CoTrainingModule (it holds the '
                        f'joint loss and the optimizer recipe), got {type(training_module).__name__}.')
    if not training_module.automatic_optimization:
        raise ValueError('CoTrainingModule must keep automatic optimization on; the strategy steps it.')

