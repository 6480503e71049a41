"""Evaluating big/little pairs: outputs, operating points, NNI metrics and the multi-trial evaluator.

The pieces, from the bottom up:

- :func:`collect_outputs` runs a frozen :class:`~nni_bigLittle.nn.model.BigLittleModel` once over a
  loader and keeps what every routing decision needs (:class:`PairOutputs`): both heads' logits,
  the little head features (input of the learned router) and the targets. One forward pass serves
  every router policy and threshold.
- :func:`subnet_outputs` does the same for a sample of a trained supernet: freeze, re-estimate the
  batch-norm statistics on given training batches (Once-for-All's BN re-calibration), collect.
- :func:`operating_point`: accuracy of the *dynamic* model (little answer for kept inputs, big
  answer for escalated ones), little/big accuracy and escalation rate for a router policy at a
  threshold, or at a threshold calibrated for a target escalation rate or target accuracy
  (:func:`~nni_bigLittle.nn.router.calibrate_threshold`).
- :func:`pair_metrics`: the flat dict of plain floats a trial reports to NNI.
- :func:`evaluate_pair`: the function for NNI's ``FunctionalEvaluator``.

The NNI metric's ``default`` (what NNI's single-objective strategies maximise) is the dynamic
validation accuracy, or with a latency target ``T`` MnasNet's soft-constrained reward
(Tan et al., 2019)::

    default = accuracy * (latency / T) ** w,   w = -0.07

where ``latency`` is the expected latency on the first requested device at the measured escalation
rate. Torch and numpy only at import; NNI is imported when a trial reports.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nni_bigLittle.nn.arch import ROUTER_POLICIES
from nni_bigLittle.nn.model import BigLittleModel, recalibrate_batchnorm
from nni_bigLittle.nn.router import calibrate_threshold, escalation_mask, router_confidence

__all__ = [
    'PairOutputs', 'OperatingPoint', 'collect_outputs', 'subnet_outputs', 'operating_point', 'pair_metrics',
    'evaluate_pair', 'mnasnet_reward', 'MNASNET_EXPONENT', 'load_supernet', 'energy_devices',
]

MNASNET_EXPONENT = -0.07  # soft latency constraint of MnasNet (Tan et al., 2019)


# ============================================================================================ outputs


@dataclass
class PairOutputs:
    """What a big/little pair answered on an evaluation set (CPU tensors).

    ``little_features`` may be ``None`` once :meth:`compact` has turned them into the learned
    router's confidence (``learned_confidence``). ``router_mlp`` is the learned router's MLP (a CPU
    copy), ``None`` when the pair has none.
    """
    little_logits: torch.Tensor
    little_features: torch.Tensor | None
    big_logits: torch.Tensor
    targets: torch.Tensor
    router_mlp: nn.Module | None = None
    learned_confidence: torch.Tensor | None = None

    def __post_init__(self):
        n = len(self.targets)
        for name in ('little_logits', 'big_logits', 'little_features', 'learned_confidence'):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f'PairOutputs.{name} has {len(value)} rows but there are {n} targets.')
        if n == 0:
            raise ValueError('PairOutputs needs at least one evaluated input.')

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def little_correct(self) -> np.ndarray:
        return (self.little_logits.argmax(1) == self.targets).numpy()

    @property
    def big_correct(self) -> np.ndarray:
        return (self.big_logits.argmax(1) == self.targets).numpy()

    @torch.no_grad()
    def confidence(self, policy: str, mlp: nn.Module | None = None) -> np.ndarray:
        """Router confidence per input for ``policy`` (``mlp`` overrides the stored learned router)."""
        if policy not in ROUTER_POLICIES:
            raise ValueError(f'Unknown router policy {policy!r}; choose one of {ROUTER_POLICIES}.')
        if policy == 'learned':
            if mlp is None and self.learned_confidence is not None:
                return self.learned_confidence.double().numpy()
            mlp = mlp if mlp is not None else self.router_mlp
            if mlp is None or self.little_features is None:
                raise ValueError('The learned router needs its MLP and the little head features; these outputs have '
                                 'neither (collect them from a pair whose router policy is "learned", or from a '
                                 'supernet with subnet_outputs).')
        return router_confidence(policy, self.little_logits, self.little_features, mlp).double().numpy()

    def compact(self) -> 'PairOutputs':
        """A lighter copy for caching: the learned router's confidence precomputed, features and MLP dropped."""
        learned = self.learned_confidence
        if learned is None and self.router_mlp is not None and self.little_features is not None:
            learned = torch.from_numpy(self.confidence('learned')).float()
        return PairOutputs(self.little_logits, None, self.big_logits, self.targets, None, learned)


def _as_input(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


@torch.no_grad()
def collect_outputs(model: BigLittleModel, loader: Iterable) -> PairOutputs:
    """Run ``model`` (a frozen :class:`BigLittleModel`) in eval mode over ``loader`` of ``(x, y)`` batches.

    The model's train/eval mode is restored afterwards.
    """
    if not hasattr(model, 'forward_all'):
        raise TypeError(f'collect_outputs needs a BigLittleModel (with forward_all), got {type(model).__name__}.')
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {'little': [], 'features': [], 'big': [], 'y': []}
    try:
        for batch in loader:
            x, y = _as_input(batch)
            if y is None:
                raise ValueError('collect_outputs needs (input, target) batches.')
            out = model.forward_all(x.to(device))
            parts['little'].append(out.little_logits.float().cpu())
            parts['features'].append(out.little_features.float().cpu())
            parts['big'].append(out.big_logits.float().cpu())
            parts['y'].append(torch.as_tensor(y).long().cpu())
    finally:
        model.train(was_training)
    if not parts['y']:
        raise ValueError('The evaluation loader yielded no batch.')
    mlp = getattr(getattr(model, 'router', None), 'mlp', None)
    mlp = copy.deepcopy(mlp).cpu().eval() if mlp is not None else None
    return PairOutputs(torch.cat(parts['little']), torch.cat(parts['features']), torch.cat(parts['big']),
                       torch.cat(parts['y']), mlp)


def subnet_outputs(supernet, sample: Mapping[str, Any], calib_batches: Iterable, eval_loader: Iterable) -> PairOutputs:
    """Outputs of ``sample`` cut out of a trained ``supernet`` (a ``BigLittleSpace``).

    The frozen pair's batch-norm statistics are re-estimated on ``calib_batches`` (training batches,
    ``x`` or ``(x, y)``; Once-for-All's BN re-calibration), then it is evaluated on ``eval_loader``.
    Deterministic given the batches. The supernet's learned-router MLP comes along whatever the
    sample's policy, so the outputs serve every policy.
    """
    model = supernet.freeze(dict(sample))
    recalibrate_batchnorm(model, calib_batches)
    outputs = collect_outputs(model, eval_loader)
    if outputs.router_mlp is None and 'learned' in supernet.spec.policy_choices:
        outputs.router_mlp = copy.deepcopy(supernet.router.mlp).cpu().eval()
    return outputs


# ============================================================================================ operating points


@dataclass(frozen=True)
class OperatingPoint:
    """A router policy at one threshold, measured on evaluation outputs (accuracies in [0, 1])."""
    policy: str
    threshold: float
    escalation_rate: float  # share of inputs escalated at ``threshold``
    accuracy: float         # dynamic model
    little_acc: float
    big_acc: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def operating_point(outputs: PairOutputs, router: Any, *, threshold: float | None = None,
                    target_escalation: float | None = None, target_accuracy: float | None = None) -> OperatingPoint:
    """The dynamic model's operating point for ``router`` on ``outputs``.

    ``router`` is a policy name (``'max_softmax'``, ``'entropy'``, ``'margin'``, ``'learned'``: the MLP
    stored in ``outputs``) or a frozen :class:`~nni_bigLittle.nn.router.Router` (its policy and MLP; its
    own threshold when no other is asked for). Give at most one of ``threshold`` (used as is),
    ``target_escalation`` or ``target_accuracy`` (calibrated on ``outputs`` by
    :func:`~nni_bigLittle.nn.router.calibrate_threshold`; an unreachable accuracy raises its
    ``CalibrationError``).
    """
    asked = [name for name, value in (('threshold', threshold), ('target_escalation', target_escalation),
                                      ('target_accuracy', target_accuracy)) if value is not None]
    if len(asked) > 1:
        raise ValueError(f'Give at most one of threshold, target_escalation, target_accuracy (got {asked}).')
    if isinstance(router, str):
        policy, mlp, own = router, None, None
    elif hasattr(router, 'policy'):
        policy, mlp, own = router.policy, getattr(router, 'mlp', None), getattr(router, 'threshold', None)
    else:
        raise TypeError(f'router must be a policy name {ROUTER_POLICIES} or a Router, got {type(router).__name__}.')
    confidence = outputs.confidence(policy, mlp)
    little_ok, big_ok = outputs.little_correct, outputs.big_correct
    if target_escalation is not None or target_accuracy is not None:
        threshold = calibrate_threshold(confidence, target_escalation=target_escalation,
                                        target_accuracy=target_accuracy, little_correct=little_ok,
                                        big_correct=big_ok).threshold
    elif threshold is None:
        if own is None:
            raise ValueError('Give threshold, target_escalation or target_accuracy (a policy name has no threshold '
                             'of its own).')
        threshold = own
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f'threshold must be a finite number, got {threshold}.')
    escalated = escalation_mask(confidence, threshold)
    return OperatingPoint(policy=policy, threshold=threshold, escalation_rate=float(escalated.mean()),
                          accuracy=float(np.where(escalated, big_ok, little_ok).mean()),
                          little_acc=float(little_ok.mean()), big_acc=float(big_ok.mean()), n=len(outputs))


# ============================================================================================ metrics


def mnasnet_reward(accuracy: float, latency: float, target: float, exponent: float = MNASNET_EXPONENT) -> float:
    """MnasNet's soft-constrained reward ``accuracy * (latency / target) ** exponent`` (Tan et al., 2019)."""
    if not target > 0 or not latency > 0:
        raise ValueError(f'latency and target must be > 0, got latency={latency}, target={target}.')
    return float(accuracy * (latency / target) ** exponent)


@functools.lru_cache(maxsize=32)
def _predictor(device: str, metric: str):
    from nni_bigLittle.hw_predictors.devices import load_predictor
    return load_predictor(device, metric=metric)


@functools.lru_cache(maxsize=64)
def _profiler(device: str, metric: str):
    """One cost profiler per (device, metric), fed decoded pairs: its kernel-cost cache serves every pair."""
    from nni_bigLittle.hw_predictors.nni_bridge import BigLittleCostProfiler
    return BigLittleCostProfiler(None, _predictor(device, metric), metric=metric, build_expression=False)


@functools.lru_cache(maxsize=64)
def _has_energy_predictor(device: str) -> bool:
    from nni_bigLittle.hw_predictors.predictor import PredictorError
    try:
        _predictor(device, 'energy')
    except PredictorError:
        return False
    return True


def energy_devices(devices: Iterable[str]) -> list[str]:
    """The devices among ``devices`` that have an energy predictor (bundled or in the user folder)."""
    return [d for d in devices if _has_energy_predictor(d)]


def _devices(devices: str | Sequence[str] | None) -> tuple[str, ...]:
    if devices is None:
        return ()
    if isinstance(devices, str):
        return (devices,)
    out = tuple(devices)
    if not all(isinstance(d, str) for d in out):
        raise TypeError(f'devices must be predictor names (str), got {devices!r}.')
    return out


def pair_metrics(outputs: PairOutputs, pair: Any, spec=None, *, policy: str | None = None,
                 threshold: float | None = None, target_escalation: float | None = None,
                 target_accuracy: float | None = None, devices: str | Sequence[str] = ('raspberry_pi_4',),
                 energy: bool = False, latency_target: float | None = None, latency_device: str | None = None,
                 reward_exponent: float = MNASNET_EXPONENT) -> dict[str, float]:
    """The NNI dict metric of a pair evaluated as ``outputs``.

    ``pair`` is a sample ``{label: value}`` of ``spec`` (a ``SpaceSpec``; validated), or the frozen
    pair's :class:`~nni_bigLittle.nn.arch.ArchConfig` (``model.arch``; then ``spec`` may be omitted).
    The router is ``policy`` (default: the pair's ``router/policy``) at ``threshold``, or at the
    threshold calibrated for ``target_escalation`` / ``target_accuracy``; with none of the three,
    the pair's own ``router/threshold``. Keys (plain floats):

    - ``default``: ``accuracy``, or with ``latency_target`` (ms) MnasNet's reward
      ``accuracy * (latency / latency_target) ** reward_exponent`` on ``latency_device``
      (default: the first of ``devices``);
    - ``accuracy`` (dynamic), ``little_acc``, ``big_acc``, ``escalation_rate`` (measured), ``threshold``;
    - ``expected_macs``, ``little_macs``, ``big_macs`` in millions (``E = little + router + p * big_tail``);
    - ``latency_ms_<device>``: expected latency at the measured escalation rate, for each device;
    - ``energy_mj_<device>`` with ``energy=True``, for the devices that have an energy predictor.
    """
    from nni_bigLittle.nn.arch import ArchConfig
    from nni_bigLittle.nn.costs import arch_costs
    devices = _devices(devices)
    if isinstance(pair, ArchConfig):
        arch = pair
    elif isinstance(pair, Mapping):
        if spec is None:
            raise ValueError('pair_metrics needs the space\'s spec with a sample (or pass the ArchConfig, model.arch).')
        arch = spec.decode(dict(pair))  # validates the pair
    else:
        raise TypeError(f'pair must be a sample dict or an ArchConfig, got {type(pair).__name__}.')
    policy = policy if policy is not None else arch.router.policy
    if threshold is None and target_escalation is None and target_accuracy is None:
        threshold = arch.router.threshold
    point = operating_point(outputs, policy, threshold=threshold, target_escalation=target_escalation,
                            target_accuracy=target_accuracy)
    p = point.escalation_rate
    costs = arch_costs(arch)
    metrics: dict[str, float] = {
        'default': point.accuracy, 'accuracy': point.accuracy, 'little_acc': point.little_acc,
        'big_acc': point.big_acc, 'escalation_rate': p, 'threshold': point.threshold,
        'expected_macs': costs.expected_macs(p) / 1e6, 'little_macs': costs.little_macs / 1e6,
        'big_macs': costs.big_macs / 1e6,
    }
    for device in devices:
        metrics[f'latency_ms_{device}'] = float(_profiler(device, 'latency').breakdown(arch, p)['expected'])
    if energy:
        for device in energy_devices(devices):
            metrics[f'energy_mj_{device}'] = float(_profiler(device, 'energy').breakdown(arch, p)['expected'])
    if latency_target is not None:
        device = latency_device or (devices[0] if devices else None)
        if device is None or device not in devices:
            raise ValueError(f'latency_target needs its device among devices={list(devices)} '
                             f'(latency_device={latency_device!r}).')
        metrics['default'] = mnasnet_reward(point.accuracy, metrics[f'latency_ms_{device}'], float(latency_target),
                                            reward_exponent)
    return {key: float(value) for key, value in metrics.items()}


# ============================================================================================ the NNI evaluator

_SUPERNETS: dict[tuple[str, int], Any] = {}


def load_supernet(path: str | os.PathLike):
    """``BigLittleSpace.load(path)``, cached per file (path and modification time) within the process."""
    from nni_bigLittle.search_spaces import BigLittleSpace
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f'No supernet file at {path}; write one with BigLittleSpace.save(path) '
                                '(or pass the co-training checkpoint).')
    key = (str(resolved), resolved.stat().st_mtime_ns)
    if key not in _SUPERNETS:
        for old in [k for k in _SUPERNETS if k[0] == key[0]]:
            del _SUPERNETS[old]
        _SUPERNETS[key] = BigLittleSpace.load(resolved)
    return _SUPERNETS[key]


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, root: str | None, seed: int, augment: str, val_size: Any, resolution: int):
    from nni_bigLittle.data import load_dataset
    return load_dataset(dataset, root=root, resolution=resolution, val_size=val_size, seed=seed, augment=augment)


@functools.lru_cache(maxsize=4)
def _calibration_batches(key: tuple, batch_size: int, count: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The first ``count`` training batches of a seeded loader (train-time augmentation), materialised."""
    splits = _splits(*key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(splits.train, batch_size=batch_size, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(seed))
        return tuple(x for x, _ in itertools.islice(loader, count))


def _limited(loader: Iterable, limit: int | None) -> Iterable:
    return loader if limit is None else itertools.islice(loader, limit)


def _positive_int_or_none(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f'{name} must be a positive int or None, got {value!r}.')


def evaluate_pair(model: BigLittleModel, dataset: str = 'digits', data_root: str | None = None,
                  supernet: str | os.PathLike | None = None, epochs: int = 0,
                  devices: str | Sequence[str] = ('raspberry_pi_4',), target_escalation: float | None = 0.3,
                  target_accuracy: float | None = None, latency_target: float | None = None, energy: bool = False,
                  batch_size: int = 64, lr: float = 0.05, weight_decay: float = 4e-5,
                  loss_weights: Mapping[str, float] | None = None, calib_batches: int = 8,
                  limit_train_batches: int | None = None, limit_val_batches: int | None = None,
                  augment: str = 'standard', val_size: int | float | None = None, seed: int = 0,
                  report: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None
                  ) -> dict[str, float]:
    """Evaluate one big/little pair for NNI's ``FunctionalEvaluator`` (multi-trial strategies).

    ``FunctionalEvaluator(evaluate_pair, dataset='digits', supernet='supernet.pt')`` with a
    ``NasExperimentConfig(..., 'raw', ...)``: NNI passes ``model``, the frozen ``BigLittleModel`` of the
    trial's sample.

    - With ``supernet`` (a file written by ``BigLittleSpace.save``; loaded once per process) the
      pair inherits the supernet's weights: frozen from the supernet, batch norm re-calibrated on
      ``calib_batches`` seeded training batches, evaluated.
    - Otherwise the model NNI passes in (fresh weights sliced from the experiment's space) is trained
      from scratch for ``epochs`` epochs with :class:`~nni_bigLittle.nn.losses.JointLoss`
      (``loss_weights``), SGD with Nesterov momentum and a cosine schedule, reporting
      ``nni.report_intermediate_result(metrics)`` after each epoch; ``epochs=0`` evaluates it as it is.

    Metrics (:func:`pair_metrics`) are computed on the seeded validation split of ``dataset``; the
    test split is never touched. The router threshold is calibrated for ``target_escalation``
    (default 0.3) or ``target_accuracy``; with both ``None`` the sample's ``router/threshold`` is used
    (then the threshold is an ordinary searched label). ``limit_*_batches`` cap the batches per
    epoch / of validation (quick runs). Reports ``nni.report_final_result(metrics)`` (``report=False``
    skips NNI) and returns the metrics; ``on_epoch(metrics)`` is called after every training epoch
    (besides NNI's intermediate report).
    """
    if not isinstance(model, BigLittleModel):
        raise TypeError(f'evaluate_pair needs the frozen BigLittleModel NNI passes with the "raw" model format '
                        f'(NasExperimentConfig(..., "raw", ...)), got {type(model).__name__}.')
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f'epochs must be an int >= 0, got {epochs!r}.')
    if supernet is not None and epochs > 0:
        raise ValueError('Give either supernet (inherit its weights) or epochs > 0 (train from scratch), not both.')
    if target_escalation is not None and target_accuracy is not None:
        raise ValueError('Give at most one of target_escalation and target_accuracy.')
    if target_escalation is not None and not 0.0 <= float(target_escalation) <= 1.0:
        raise ValueError(f'target_escalation must be in [0, 1], got {target_escalation}.')
    if latency_target is not None and not float(latency_target) > 0:
        raise ValueError(f'latency_target must be > 0 (ms), got {latency_target}.')
    for name, value in (('batch_size', batch_size), ('calib_batches', calib_batches),
                        ('limit_train_batches', limit_train_batches), ('limit_val_batches', limit_val_batches)):
        _positive_int_or_none(name, value)
    devices = _devices(devices)
    if latency_target is not None and not devices:
        raise ValueError('latency_target needs at least one device for the latency.')

    sample = model.sample
    arch = model.arch
    source = load_supernet(supernet) if supernet is not None else None
    spec = source.spec if source is not None else None
    if spec is not None:
        error = spec.check(sample)
        if error is not None:
            raise ValueError(f'The trial\'s sample is not a valid pair of the supernet\'s space: {error}') from error
        if spec.decode(sample) != arch:
            raise ValueError('The experiment\'s space and the supernet\'s space differ (same labels, other shapes); '
                             'build the experiment on BigLittleSpace.load(supernet) or a space with the same spec.')
    for device in devices:  # fail before training on an unknown device
        _predictor(device, 'latency')

    key = (dataset, None if data_root is None else str(data_root), int(seed), augment, val_size, arch.resolution)
    splits = _splits(*key)
    if splits.num_classes != arch.num_classes:
        raise ValueError(f'{dataset} has {splits.num_classes} classes but the pair has {arch.num_classes}; build the '
                         f'space with num_classes={splits.num_classes}.')
    from nni_bigLittle.data import make_loaders
    train_loader, val_loader, _ = make_loaders(splits, batch_size=batch_size, seed=seed)

    def metrics_of(pair: BigLittleModel) -> dict[str, float]:
        outputs = collect_outputs(pair, _limited(val_loader, limit_val_batches))
        return pair_metrics(outputs, arch, target_escalation=target_escalation,
                            target_accuracy=target_accuracy, devices=devices, energy=energy,
                            latency_target=latency_target)

    nni = None
    if report:
        import nni
    if source is not None:
        batches = _calibration_batches(key, batch_size, calib_batches, seed)
        outputs = subnet_outputs(source, sample, batches, _limited(val_loader, limit_val_batches))
        metrics = pair_metrics(outputs, sample, spec, target_escalation=target_escalation,
                               target_accuracy=target_accuracy, devices=devices, energy=energy,
                               latency_target=latency_target)
    elif epochs == 0:
        metrics = metrics_of(model)
    else:
        with torch.random.fork_rng(devices=[]):  # seeded augmentation, global RNG left as it was
            torch.manual_seed(seed)
            callbacks = [c for c in (nni.report_intermediate_result if nni else None, on_epoch) if c is not None]
            metrics = _train(model, train_loader, epochs, lr, weight_decay, loss_weights, limit_train_batches,
                             metrics_of, callbacks)
    if nni is not None:
        nni.report_final_result(metrics)
    return metrics


def _train(model: BigLittleModel, train_loader, epochs: int, lr: float, weight_decay: float,
           loss_weights, limit: int | None, metrics_of, callbacks) -> dict[str, float]:
    """Train the pair with the package's recipe (:mod:`nni_bigLittle.training`) and the joint loss; after each
    epoch its validation metrics go to every callback (NNI's intermediate result)."""
    import pytorch_lightning as pl
    from nni_bigLittle.nn.losses import JointLoss
    from nni_bigLittle.training import Recipe, fit
    loss = JointLoss(loss_weights)
    if (len(train_loader) if limit is None else min(limit, len(train_loader))) == 0:
        raise ValueError('The training loader is empty (batch_size larger than the training split?).')
    metrics: dict[str, float] = {}

    class ReportEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            nonlocal metrics
            metrics = metrics_of(model)
            metrics['epoch'] = float(trainer.current_epoch + 1)
            metrics['train_loss'] = pl_module.train_loss
            for callback in callbacks:
                callback(dict(metrics))

    fit(model, train_loader, epochs=epochs, recipe=Recipe(learning_rate=lr, weight_decay=weight_decay),
        loss_fn=lambda m, x, y: loss(m.forward_all(x), y, router=m.router)[0], progress=False,
        limit_train_batches=limit, callbacks=[ReportEpoch()])
    return metrics
