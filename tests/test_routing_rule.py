"""One routing rule: nni_bigLittle.nn.router.escalation_mask. Every place that routes either calls it or, the
stand-alone bundle runner, mirrors it; here they all answer the same on the rule's edges (ties at the
threshold, 0, 1 and above, -inf) and on random confidences."""
import math

import numpy as np
import pytest
import torch

from nni_bigLittle.deploy import run_bundle
from nni_bigLittle.evaluation import PairOutputs, operating_point
from nni_bigLittle.nn.router import ALWAYS, NEVER, RouterSetting, dynamic_accuracy, escalation_mask

THRESHOLDS = [NEVER, -1.0, 0.0, 0.25, 0.5, 0.7, 0.999, ALWAYS, 1.5]


def _confidences():
    rng = np.random.default_rng(0)
    edges = np.array([0.0, 0.25, 0.5, 0.7, 0.999, 1.0])  # exactly at the thresholds: ties keep the little answer
    return np.concatenate([edges, rng.random(200)]).astype(np.float32)


def _rule(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The documented rule, written out: escalate below the threshold, compared at the confidence's precision
    (float32 confidences meet a float32 threshold, as in torch, numpy and the ONNX graph); a threshold >= 1
    escalates all."""
    kind = confidence.dtype.type
    return np.array([threshold >= 1.0 or kind(c) < kind(threshold) for c in confidence.tolist()])


@pytest.mark.parametrize('threshold', THRESHOLDS)
def test_every_implementation_agrees_with_the_documented_rule(threshold):
    confidence = _confidences()
    expected = _rule(confidence, threshold)
    assert 0 < expected.sum() < len(expected) or threshold <= 0.0 or threshold >= 1.0
    torch_mask = escalation_mask(torch.from_numpy(confidence), threshold)
    assert torch_mask.dtype == torch.bool and torch_mask.numpy().tolist() == expected.tolist()
    numpy_mask = escalation_mask(confidence, threshold)
    assert isinstance(numpy_mask, np.ndarray) and numpy_mask.tolist() == expected.tolist()
    assert run_bundle.escalation(confidence, threshold).tolist() == expected.tolist()  # the bundle's batch path
    assert [run_bundle.escalates(c, threshold) for c in confidence.tolist()] == expected.tolist()  # batch of one


@pytest.mark.parametrize('threshold', [0.0, 0.5, 0.7, ALWAYS])
def test_evaluation_routes_with_the_rule(threshold):
    """The operating point's escalation rate and dynamic accuracy follow the same rule."""
    rng = np.random.default_rng(1)
    n = 64
    little = torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32)) * 3
    big = torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32)) * 3
    targets = torch.from_numpy(rng.integers(0, 4, n))
    outputs = PairOutputs(little, None, big, targets)
    confidence = outputs.confidence('max_softmax')
    expected = _rule(confidence, threshold)
    point = operating_point(outputs, 'max_softmax', threshold=threshold)
    assert point.escalation_rate == pytest.approx(expected.mean())
    dynamic = np.where(expected, outputs.big_correct, outputs.little_correct).mean()
    assert point.accuracy == pytest.approx(dynamic)
    assert dynamic_accuracy(confidence, outputs.little_correct, outputs.big_correct, threshold) == pytest.approx(dynamic)


def test_nan_threshold_is_refused_rather_than_never_escalating():
    with pytest.raises(ValueError, match='NaN'):
        escalation_mask(np.array([0.5]), math.nan)
    with pytest.raises(ValueError, match='must be a number'):
        RouterSetting('max_softmax', math.nan)


def test_router_setting_round_trips_and_checks_its_values():
    setting = RouterSetting('entropy', 0.42, target_escalation=0.3, calibrated_on='validation')
    assert RouterSetting.from_dict(setting.to_dict()) == setting
    assert RouterSetting('max_softmax', NEVER).threshold == -math.inf
    with pytest.raises(ValueError, match='Unknown router policy'):
        RouterSetting('coin_flip', 0.5)
    with pytest.raises(ValueError, match='not both'):
        RouterSetting('margin', 0.5, target_escalation=0.3, target_accuracy=0.9)
    with pytest.raises(ValueError, match='needs policy and threshold'):
        RouterSetting.from_dict({'policy': 'margin', 'tau': 0.5})
