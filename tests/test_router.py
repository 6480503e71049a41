"""Router policies and threshold calibration (no network needed)."""
import math

import numpy as np
import pytest
import torch

from nni_bigLittle.nn.arch import ROUTER_POLICIES, RouterConfig
from nni_bigLittle.nn.router import (CalibrationError, Router, calibrate_threshold, dynamic_accuracy, escalation_mask,
                                  router_confidence)


def test_policies_give_confidence_in_unit_interval():
    logits = torch.randn(32, 10) * 3
    features = torch.randn(32, 16)
    router = Router(RouterConfig('learned', 0.5, 16 + 10, 8))
    for policy in ROUTER_POLICIES:
        conf = router_confidence(policy, logits, features, router.mlp)
        assert conf.shape == (32,)
        assert bool(((conf >= 0) & (conf <= 1)).all()), policy


def test_policy_values_on_known_inputs():
    uniform = torch.zeros(1, 4)
    certain = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert router_confidence('max_softmax', uniform).item() == pytest.approx(0.25)
    assert router_confidence('entropy', uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert router_confidence('margin', uniform).item() == pytest.approx(0.0)
    for policy in ('max_softmax', 'entropy', 'margin'):
        assert router_confidence(policy, certain).item() == pytest.approx(1.0, abs=1e-6)
    two_way = torch.tensor([[math.log(3.0), 0.0]])  # p = (0.75, 0.25)
    assert router_confidence('margin', two_way).item() == pytest.approx(0.5)


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match='Unknown router policy'):
        router_confidence('oracle', torch.zeros(1, 3))
    with pytest.raises(ValueError, match='Unknown router policy'):
        Router(RouterConfig('oracle', 0.5, 4, 2))


def test_escalation_mask_edges():
    conf = torch.tensor([0.0, 0.3, 1.0])
    assert escalation_mask(conf, 0.0).tolist() == [False, False, False]
    assert escalation_mask(conf, 1.0).tolist() == [True, True, True]
    assert escalation_mask(conf, 0.3).tolist() == [True, False, False]


def test_calibrate_to_escalation_rate():
    rng = np.random.default_rng(0)
    conf = rng.random(1000)
    for rate in (0.0, 0.1, 0.37, 0.5, 1.0):
        result = calibrate_threshold(conf, target_escalation=rate)
        measured = escalation_mask(torch.as_tensor(conf), result.threshold).double().mean().item()
        assert measured == pytest.approx(rate, abs=1e-9)
        assert result.escalation_rate == pytest.approx(rate)


def test_calibrate_with_ties_never_overshoots():
    conf = np.array([0.2, 0.5, 0.5, 0.5, 0.9])
    result = calibrate_threshold(conf, target_escalation=0.4)  # 2 wanted, but three tie at 0.5
    assert result.escalation_rate == pytest.approx(0.2)


def test_calibrate_to_accuracy():
    rng = np.random.default_rng(1)
    n = 2000
    conf = rng.random(n)
    little_correct = rng.random(n) < conf          # confident inputs are more often right
    big_correct = rng.random(n) < 0.9
    result = calibrate_threshold(conf, target_accuracy=0.85, little_correct=little_correct, big_correct=big_correct)
    assert result.accuracy >= 0.85
    assert dynamic_accuracy(conf, little_correct, big_correct, result.threshold) == pytest.approx(result.accuracy)
    # the smallest escalation rate reaching the target: one input fewer falls short
    k = int(round(result.escalation_rate * n))
    order = np.argsort(conf)
    fewer = np.where(np.isin(np.arange(n), order[:k - 1]), big_correct, little_correct).mean()
    assert fewer < 0.85


def test_unreachable_accuracy_says_what_is_reachable():
    conf = np.linspace(0, 1, 100)
    with pytest.raises(CalibrationError, match='best dynamic accuracy is'):
        calibrate_threshold(conf, target_accuracy=0.99, little_correct=np.zeros(100, bool),
                            big_correct=np.arange(100) % 2 == 0)


def test_calibration_input_errors():
    with pytest.raises(ValueError, match='exactly one'):
        calibrate_threshold([0.5], target_escalation=0.1, target_accuracy=0.9)
    with pytest.raises(ValueError, match='needs little_correct'):
        calibrate_threshold([0.5], target_accuracy=0.9)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        calibrate_threshold([0.5], target_escalation=1.5)
    with pytest.raises(ValueError, match='NaN'):
        calibrate_threshold([float('nan')], target_escalation=0.5)
