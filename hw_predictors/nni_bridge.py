"""NNI bridge: the expected dynamic latency (or energy) of a ``BigLittleSpace`` sample as an NNI profiler.

For a sample with fork ``F``, escalation rate ``p`` (the share of inputs the router sends on):

    E[cost] = overhead + stem + Σ_{trunk stage i} cost_i · (1 if i < F else p)
              + little branch(F) + little head + router + p · big head

(the big tail resumes from the cached fork features, so an escalated input pays only for the
trunk after the fork and the big head). Kernel costs come from a :class:`KernelLatencyPredictor`;
the overhead (per-inference constant of the device predictor: launch, copies) is paid by the
little path, and by the big tail again with probability ``p`` (a second invocation; scale it with
``tail_overhead``, e.g. 0 when little and tail run inside one graph).

:class:`BigLittleCostProfiler` is an NNI ``ExpressionProfiler``:

- ``profile(sample)`` — exact, from the sample's kernels (what ``RandomOneShot(filter=...)``, NNI's
  ``RangeProfilerFilter`` and the multi-trial ``Filter`` middleware call);
- ``expression`` — an NNI ``MutableExpression`` over the space's labels that evaluates to the same
  number (NNI's generic ``ExpectationProfilerPenalty`` works on it); it and ``expectation`` are sums
  of kernel costs, so a predictor's whole-network term (``local_cpu_ort``'s weight-streaming term)
  is only in ``profile``;
- ``expectation(probs)`` — the exact expectation under independent per-label distributions, as a
  differentiable torch scalar, computed by dynamic programming over the few (channels, size) states
  a little stage can start from; :class:`ExpectedCostPenalty` feeds it to DARTS / GumbelDARTS /
  Proxyless (NNI's generic expectation enumerates every label combination of each term, which is
  correct but slow on the full space).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping

from nni_bigLittle.nn.arch import ArchConfig, BlockConfig, HeadConfig, RouterConfig, block_hidden_channels, se_channels, \
    stage_channels
from nni_bigLittle.nn.costs import conv_output_size
from nni_bigLittle.hw_predictors.arch_kernels import arch_kernels, block_kernel, head_kernels, router_kernels, \
    stem_kernel
from nni_bigLittle.hw_predictors.kernels import Kernel
from nni_bigLittle.hw_predictors.predictor import KernelLatencyPredictor
from nni_bigLittle.search_spaces.spec import SpaceSpec, little_stage_specs

try:  # the bridge is an NNI ExpressionProfiler when NNI is importable (it always is with this package)
    from nni.mutable import MutableExpression
    from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
    from nni.nas.profiler import ExpressionProfiler
except ImportError:  # pragma: no cover - NNI is a hard dependency; keeps the module importable for docs
    ExpressionProfiler = object  # type: ignore
    ExpectationProfilerPenalty = object  # type: ignore
    MutableExpression = None  # type: ignore

__all__ = ['BigLittleCostProfiler', 'ExpectedCostPenalty', 'cost_filter', 'CostBreakdown', 'nn_meter_profiler']


class _Lookup:
    """A picklable table function for NNI expressions: ``_Lookup(table)(*key) -> table[key]``."""

    def __init__(self, fn: Callable[..., float], name: str):
        self.fn = fn
        self.name = name

    def __call__(self, *key):
        return self.fn(*key)

    def __repr__(self) -> str:
        return self.name


class CostBreakdown(dict):
    """``little`` (input -> little logits), ``router``, ``big_tail``, ``big`` (static big network) and
    ``expected`` (= little + router + p · big_tail), all in the predictor's unit."""


class BigLittleCostProfiler(ExpressionProfiler):
    """Expected dynamic cost of ``BigLittleSpace`` samples on one device (see the module docstring).

    ``space`` is a ``BigLittleSpace`` or its ``SpaceSpec``; ``predictor`` a
    :class:`KernelLatencyPredictor` or a predictor name (``'raspberry_pi_4'``, ``'local_cpu_ort'``, ...).
    """

    def __init__(self, space, predictor: KernelLatencyPredictor | str, escalation_rate: float = 0.3,
                 batch: int = 1, metric: str = 'latency', build_expression: bool = True,
                 tail_overhead: float = 1.0):
        if not 0.0 <= float(escalation_rate) <= 1.0:
            raise ValueError(f'escalation_rate must be in [0, 1], got {escalation_rate}.')
        if isinstance(predictor, str):
            from nni_bigLittle.hw_predictors.devices import load_predictor
            predictor = load_predictor(predictor, metric=metric)
        self.spec: SpaceSpec = space.spec if hasattr(space, 'spec') else space
        self.predictor = predictor
        self.escalation_rate = float(escalation_rate)
        # share of the predictor's per-inference overhead the big tail pays again (it is a second
        # invocation on the device: 1.0; 0.0 when both run in one graph, e.g. dynamic.onnx)
        self.tail_overhead = float(tail_overhead)
        self.batch = int(batch)
        self._cache: dict[Kernel, float] = {}
        self._mutables = space.simplify() if hasattr(space, 'simplify') else None
        self.expression = self._build_expression() if build_expression and MutableExpression is not None else None

    @property
    def unit(self) -> str:
        return self.predictor.unit

    # ------------------------------------------------------------------ kernel costs
    def _costs(self, kernels: list[Kernel]) -> list[float]:
        missing = [k for k in dict.fromkeys(kernels) if k not in self._cache]
        if missing:
            for k, v in zip(missing, self.predictor.cost_many(missing)):
                self._cache[k] = float(v)
        return [self._cache[k] for k in kernels]

    def _cost(self, kernels: list[Kernel]) -> float:
        return float(sum(self._costs(kernels)))

    # ------------------------------------------------------------------ exact profile
    def breakdown(self, sample: Mapping[str, Any] | ArchConfig, escalation_rate: float | None = None) -> CostBreakdown:
        """Costs of the parts of ``sample`` (validated; an invalid sample raises ``InvalidSampleError``),
        or of an already decoded ``ArchConfig`` (e.g. ``model.arch`` of a frozen pair)."""
        p = self.escalation_rate if escalation_rate is None else float(escalation_rate)
        arch = sample if isinstance(sample, ArchConfig) else self.spec.decode(dict(sample))
        parts = arch_kernels(arch, self.batch)
        overhead = self.predictor.overhead
        net = self.predictor.network_term  # whole-network term of predictors that have one (0 otherwise)
        little = self._cost(parts.little_path) + overhead + net(parts.little_path)
        tail = self._cost(parts.big_tail) + overhead * self.tail_overhead + net(parts.big_tail)
        router = self._cost(list(parts.router))
        return CostBreakdown(little=little, router=router, big_tail=tail,
                             big=self._cost(parts.big) + overhead + net(parts.big), expected=little + router + p * tail,
                             escalation_rate=p)

    def profile(self, sample: Mapping[str, Any]) -> float:
        return self.breakdown(sample)['expected']

    # ------------------------------------------------------------------ building blocks for both forms
    def _stem(self) -> float:
        s = self.spec
        from nni_bigLittle.nn.arch import ConvConfig
        return self._cost([stem_kernel(ConvConfig(3, s.stem_channels, 3, s.stem_stride, s.stem_act),
                                       s.resolution, self.batch)])

    def _stem_hw(self) -> int:
        return conv_output_size(self.spec.resolution, 3, self.spec.stem_stride)

    def _trunk_channels(self, i: int, width: float) -> int:
        return stage_channels(self.spec.trunk[i].base_channels, width)

    def _trunk_hw(self) -> list[int]:
        """Spatial size entering trunk stage i (index i) and after the last stage (index S)."""
        sizes = [self._stem_hw()]
        for stage in self.spec.trunk:
            sizes.append(conv_output_size(sizes[-1], 3, stage.stride))
        return sizes

    def _block(self, cin: int, cout: int, hw: int, kernel: int, expand: int, stride: int, act: str, se: bool,
               residual: bool) -> float:
        hidden = block_hidden_channels(cin, expand)
        cfg = BlockConfig(cin, cout, hidden, int(kernel), int(expand), stride, act, se_channels(hidden) if se else 0,
                          residual)
        return self._cost([block_kernel(cfg, hw, 'block', self.batch)[0]])

    def _head(self, cin: int, hw: int, channels: int) -> float:
        s = self.spec
        return self._cost(head_kernels(HeadConfig(cin, channels, s.num_classes, s.head_act, s.dropout), hw, 'head',
                                       self.batch))

    def _router(self, policy: str) -> float:
        s = self.spec
        cfg = RouterConfig(policy, 0.5, s.little_head_channels + s.num_classes, s.router_hidden)
        return self._cost(router_kernels(cfg, s.num_classes, self.batch))

    def _fork_state(self, fork: int, trunk_width: float | None) -> tuple[int, int]:
        """(channels, size) of the fork features at fork ``fork`` given the width of trunk stage fork-1."""
        if fork == 0:
            return self.spec.stem_channels, self._stem_hw()
        return self._trunk_channels(fork - 1, trunk_width), self._trunk_hw()[fork]

    def _little_block(self, fork: int, stage: int, block: int, cin: int, hw: int, width: float, kernel: int,
                      expand: int) -> float:
        st = little_stage_specs(self.spec, fork)[stage]
        cout = stage_channels(st.base_channels, width)
        if block == 0:
            return self._block(cin, cout, hw, kernel, expand, st.stride, st.act, st.se, False)
        hw_out = conv_output_size(hw, 3, st.stride)
        return self._block(cout, cout, hw_out, kernel, expand, 1, st.act, st.se, True)

    def _little_next(self, fork: int, stage: int, cin: int, hw: int, depth: int, width: float) -> tuple[int, int]:
        if depth == 0:
            return cin, hw
        st = little_stage_specs(self.spec, fork)[stage]
        return stage_channels(st.base_channels, width), conv_output_size(hw, 3, st.stride)

    def _trunk_block(self, i: int, j: int, width_in: float | None, width: float, kernel: int, expand: int) -> float:
        st = self.spec.trunk[i]
        hw = self._trunk_hw()[i]
        cout = self._trunk_channels(i, width)
        if j == 0:
            cin = self.spec.stem_channels if i == 0 else self._trunk_channels(i - 1, width_in)
            return self._block(cin, cout, hw, kernel, expand, st.stride, st.act, st.se, False)
        return self._block(cout, cout, conv_output_size(hw, 3, st.stride), kernel, expand, 1, st.act, st.se, True)

    # ------------------------------------------------------------------ NNI expression
    def _build_expression(self):
        """An NNI expression over the space's labels equal to :meth:`profile` on every valid sample."""
        m = self._mutables
        if m is None:
            from nni.mutable import Categorical
            m = {label: Categorical(list(values), label=label) for label, values in self.spec.choices().items()}
        s, p = self.spec, self.escalation_rate
        overhead = self.predictor.overhead
        fork = m['little/fork']
        total = self._stem() + overhead * (1 + p * self.tail_overhead)
        for i in range(len(s.trunk)):
            in_trunk_little = MutableExpression.condition(fork > i, 1.0, p)
            for j in range(max(s.depth_choices)):
                width_in = m[f'trunk/s{i - 1}/width'] if (i > 0 and j == 0) else None
                fn = _Lookup(lambda wi, w, k, e, i=i, j=j: self._trunk_block(i, j, wi, w, k, e), f'trunk_s{i}_b{j}')
                cost = MutableExpression(fn, f'{fn!r}({{}}, {{}}, {{}}, {{}})',
                                         [width_in, m[f'trunk/s{i}/width'], m[f'trunk/s{i}/b{j}/kernel'],
                                          m[f'trunk/s{i}/b{j}/expand']])
                total = total + cost * (m[f'trunk/s{i}/depth'] > j) * in_trunk_little
        # little branch: channels and size entering each little stage are expressions of earlier choices
        fork_state = _Lookup(lambda f, *widths: self._fork_state(f, widths[f - 1] if f > 0 else None), 'fork_state')
        widths = [m[f'trunk/s{i}/width'] for i in range(len(s.trunk))]
        state = MutableExpression(fork_state, 'fork_state({})', [fork] + widths)
        for i in range(s.little_stages):
            depth, width = m[f'little/s{i}/depth'], m[f'little/s{i}/width']
            for j in range(s.max_little_depth):
                fn = _Lookup(lambda f, st, w, k, e, i=i, j=j: self._little_block(f, i, j, st[0], st[1], w, k, e),
                             f'little_s{i}_b{j}')
                cost = MutableExpression(fn, f'{fn!r}({{}}, {{}}, {{}}, {{}}, {{}})',
                                         [fork, state, width, m[f'little/s{i}/b{j}/kernel'],
                                          m[f'little/s{i}/b{j}/expand']])
                total = total + cost * (depth > j)
            nxt = _Lookup(lambda f, st, d, w, i=i: self._little_next(f, i, st[0], st[1], d, w), f'little_next_s{i}')
            state = MutableExpression(nxt, f'{nxt!r}({{}}, {{}}, {{}}, {{}})', [fork, state, depth, width])
        head = _Lookup(lambda st: self._head(st[0], st[1], s.little_head_channels), 'little_head')
        total = total + MutableExpression(head, 'little_head({})', [state])
        last = len(s.trunk) - 1
        big_head = _Lookup(lambda w: self._head(self._trunk_channels(last, w), self._trunk_hw()[-1],
                                                s.big_head_channels), 'big_head')
        total = total + p * MutableExpression(big_head, 'big_head({})', [m[f'trunk/s{last}/width']])
        router = _Lookup(lambda pol: self._router(pol), 'router')
        return total + MutableExpression(router, 'router({})', [m['router/policy']])

    # ------------------------------------------------------------------ exact expectation (DP)
    def expectation(self, probs: Mapping[str, Any]):
        """``E[cost]`` when each label is drawn independently from ``probs[label]`` (a dict
        {value: probability}, probabilities may be torch tensors with gradients)."""
        import torch
        s, p = self.spec, self.escalation_rate

        def dist(label: str) -> list[tuple[Any, Any]]:
            if label not in probs:
                raise KeyError(f'No probabilities for label {label!r}; the penalty needs every label of the space.')
            d = probs[label]
            return [(v, d[v]) for v in self.spec.choices()[label] if v in d]

        def p_greater(label: str, j: int):
            return sum(prob for v, prob in dist(label) if v > j)

        total = torch.as_tensor(self._stem() + self.predictor.overhead * (1 + p * self.tail_overhead),
                                dtype=torch.float64)
        forks = dist('little/fork')
        for i in range(len(s.trunk)):
            share = sum(prob * (1.0 if f > i else p) for f, prob in forks)
            for j in range(max(s.depth_choices)):
                width_in = dist(f'trunk/s{i - 1}/width') if (i > 0 and j == 0) else [(None, 1.0)]
                term = 0.0
                for (wi, pwi), (w, pw), (k, pk), (e, pe) in itertools.product(
                        width_in, dist(f'trunk/s{i}/width'), dist(f'trunk/s{i}/b{j}/kernel'),
                        dist(f'trunk/s{i}/b{j}/expand')):
                    term = term + pwi * pw * pk * pe * self._trunk_block(i, j, wi, w, k, e)
                total = total + term * p_greater(f'trunk/s{i}/depth', j) * share
        for f, pf in forks:
            # distribution over the (channels, size) state entering little stage 0
            states: dict[tuple[int, int], Any] = {}
            for w, pw in (dist(f'trunk/s{f - 1}/width') if f > 0 else [(None, 1.0)]):
                key = self._fork_state(f, w)
                states[key] = states.get(key, 0.0) + pw
            branch = 0.0
            for i in range(s.little_stages):
                depth, width = f'little/s{i}/depth', f'little/s{i}/width'
                for j in range(s.max_little_depth):
                    gate = p_greater(depth, j)
                    for (cin, hw), ps in states.items():
                        for (w, pw), (k, pk), (e, pe) in itertools.product(
                                dist(width), dist(f'little/s{i}/b{j}/kernel'), dist(f'little/s{i}/b{j}/expand')):
                            branch = branch + gate * ps * pw * pk * pe * self._little_block(f, i, j, cin, hw, w, k, e)
                nxt: dict[tuple[int, int], Any] = {}
                for (cin, hw), ps in states.items():
                    for (d, pd), (w, pw) in itertools.product(dist(depth), dist(width)):
                        key = self._little_next(f, i, cin, hw, d, w)
                        nxt[key] = nxt.get(key, 0.0) + ps * pd * pw
                states = nxt
            for (cin, hw), ps in states.items():
                branch = branch + ps * self._head(cin, hw, s.little_head_channels)
            total = total + pf * branch
        last = len(s.trunk) - 1
        for w, pw in dist(f'trunk/s{last}/width'):
            total = total + p * pw * self._head(self._trunk_channels(last, w), self._trunk_hw()[-1],
                                                s.big_head_channels)
        for pol, pp in dist('router/policy'):
            total = total + pp * self._router(pol)
        return total


class ExpectedCostPenalty(ExpectationProfilerPenalty):
    """NNI's ``ExpectationProfilerPenalty`` with the exact fast expectation of :class:`BigLittleCostProfiler`.

    Pass it as ``DARTS(penalty=...)``, ``GumbelDARTS(penalty=...)`` or ``Proxyless(penalty=...)``:
    ``loss + scale · nonlinear(E[cost] / baseline − 1)`` as NNI's ``ProfilerPenalty`` documents.
    """

    def __init__(self, profiler: BigLittleCostProfiler, baseline: float, scale: float = 1.0, *,
                 nonlinear: str = 'positive', aggregate: str = 'add'):
        super().__init__(profiler, baseline, scale, nonlinear=nonlinear, aggregate=aggregate)

    def profile(self, sample):
        import torch
        value = self.profiler.expectation(sample)
        return value.float() if isinstance(value, torch.Tensor) else value


def cost_filter(profiler: BigLittleCostProfiler, max_value: float | None = None, min_value: float | None = None):
    """A filter for ``RandomOneShot(filter=...)`` and NNI's multi-trial ``Filter`` middleware.

    Accepts a sample dict or an NNI ``ExecutableModelSpace`` (its ``.sample``); invalid samples
    (e.g. a little network not cheaper than its big one) are rejected, never passed on.
    """
    if max_value is None and min_value is None:
        raise ValueError('cost_filter needs max_value and/or min_value.')
    from nni_bigLittle.search_spaces.spec import InvalidSampleError

    def accept(candidate) -> bool:
        sample = getattr(candidate, 'sample', candidate)
        try:
            value = profiler.profile(sample)
        except InvalidSampleError:
            return False
        return (max_value is None or value <= max_value) and (min_value is None or value >= min_value)

    accept.profiler = profiler  # type: ignore[attr-defined]
    return accept



def nn_meter_profiler(model_space, args, predictor: KernelLatencyPredictor, **kwargs):
    """NNI's ``NnMeterProfiler`` driven by one of our predictors (the ``nnmeter`` extra must be installed).

    NNI 3.0 exports each leaf module with ``torch.onnx.export(model, args, tempfile)`` and reads it
    back with ``onnx.load(tempfile)``. With torch >= 2.9 the export defaults to the dynamo exporter
    (needs ``onnxscript`` and a path) and with onnx >= 1.16 ``load`` guesses the format from the
    file's name (an int for a temporary file); both fail inside NNI. The profiler is built while the
    two calls default to what NNI was written for: the TorchScript exporter and protobuf.
    The per-inference overhead is dropped (NNI adds one prediction per leaf module).
    """
    import functools

    import onnx
    import torch
    from nni.nas.profiler.pytorch.nn_meter import NnMeterProfiler

    original_export, original_load = torch.onnx.export, onnx.load

    @functools.wraps(original_export)
    def torchscript_export(*a, **kw):
        kw.setdefault('dynamo', False)
        return original_export(*a, **kw)

    @functools.wraps(original_load)
    def protobuf_load(f, *a, **kw):
        if hasattr(f, 'read'):
            kw.setdefault('format', 'protobuf')
        return original_load(f, *a, **kw)

    torch.onnx.export, onnx.load = torchscript_export, protobuf_load
    try:
        return NnMeterProfiler(model_space, args, predictor=predictor.without_overhead(), **kwargs)
    finally:
        torch.onnx.export, onnx.load = original_export, original_load
