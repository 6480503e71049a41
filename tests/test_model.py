"""BigLittleModel.infer: routing semantics, and the big tail only runs on escalated inputs."""
import pytest
import torch

from nni_bigLittle.nn.model import recalibrate_batchnorm
from nni_bigLittle.nn.router import router_confidence


@pytest.fixture(scope='module')
def model_and_input(cifar_space):
    sample = cifar_space.random(random_state=21, memo={'little/fork': 2, 'router/policy': 'max_softmax'})
    model = cifar_space.freeze(sample)
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    # untrained weights with BN statistics of these inputs: outputs (and confidences) differ per input
    recalibrate_batchnorm(model, [x]).eval()
    return model, x


def _tail_batches(model):
    """Record the batch size of every call into the big tail (first stage after the fork and the big head)."""
    calls = []
    handles = [model.trunk[model.fork].register_forward_hook(lambda m, i, o: calls.append(('tail', i[0].shape[0]))),
               model.big_head.register_forward_hook(lambda m, i, o: calls.append(('head', i[0].shape[0])))]
    return calls, handles


def test_infer_routes_each_input_to_the_right_network(model_and_input):
    model, x = model_and_input
    with torch.no_grad():
        little_logits, big_logits = model(x)
        confidence = router_confidence('max_softmax', little_logits)
    threshold = float(confidence.median())  # about half escalated
    calls, handles = _tail_batches(model)
    try:
        pred, escalated = model.infer(x, threshold=threshold)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(escalated, confidence < threshold)
    n_escalated = int(escalated.sum())
    assert 0 < n_escalated < len(x)
    assert torch.equal(pred[~escalated], little_logits.argmax(1)[~escalated])
    assert torch.equal(pred[escalated], big_logits.argmax(1)[escalated])
    # the big tail saw exactly the escalated inputs, once
    assert calls == [('tail', n_escalated), ('head', n_escalated)]


def test_threshold_edges(model_and_input):
    model, x = model_and_input
    with torch.no_grad():
        little_logits, big_logits = model(x)
    calls, handles = _tail_batches(model)
    try:
        pred, escalated = model.infer(x, threshold=0.0)
        assert not escalated.any() and torch.equal(pred, little_logits.argmax(1))
        assert calls == []  # never escalated: the big tail never ran
        pred, escalated = model.infer(x, threshold=1.0)
        assert escalated.all() and torch.equal(pred, big_logits.argmax(1))
        assert calls == [('tail', len(x)), ('head', len(x))]
    finally:
        for h in handles:
            h.remove()


def test_infer_uses_the_router_threshold_by_default(model_and_input):
    model, x = model_and_input
    model.router.threshold = 0.0
    try:
        assert not model.infer(x)[1].any()
        model.router.threshold = 1.0
        assert model.infer(x)[1].all()
    finally:
        model.router.threshold = model.arch.router.threshold


def test_infer_at_batch_one(model_and_input):
    model, x = model_and_input
    for threshold in (0.0, 1.0):
        pred, escalated = model.infer(x[:1], threshold=threshold)
        assert pred.shape == (1,) and escalated.shape == (1,)


def test_infer_refuses_training_mode(model_and_input):
    model, x = model_and_input
    model.train()
    try:
        with pytest.raises(RuntimeError, match='eval'):
            model.infer(x)
    finally:
        model.eval()


def test_learned_router_in_frozen_model(cifar_space):
    sample = cifar_space.random(random_state=4, memo={'router/policy': 'learned'})
    x = torch.randn(8, 3, 32, 32)
    model = recalibrate_batchnorm(cifar_space.freeze(sample), [x]).eval()
    assert model.router.mlp is not None
    for a, b in zip(model.router.mlp.state_dict().values(), cifar_space.router.mlp.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        out = model.forward_all(x)
    assert out.confidence.shape == (8,) and bool(((out.confidence >= 0) & (out.confidence <= 1)).all())
    pred, escalated = model.infer(x, threshold=float(out.confidence.median()))
    assert torch.equal(escalated, out.confidence < out.confidence.median())
