"""Kernel detection: split a CNN into the units a device actually runs, with shape features.

nn-Meter's observation is that an inference runtime fuses conv + batch norm + activation (and
often whole inverted-residual blocks) into one kernel, so latency is predicted per *fused kernel*,
not per PyTorch module. Detection works in two steps:

1. a front end turns the model into a flat list of :class:`OpNode` (one per tensor operation,
   with input/output shapes): :func:`graph_from_torch` via ``torch.fx`` (shape propagation on a
   real input), :func:`graph_from_onnx` via ONNX shape inference (weights may be absent, as in the
   ``export_params=False`` graphs NNI's ``NnMeterProfiler`` hands over);
2. one fusion pass, shared by both front ends (so PyTorch and ONNX agree), groups nodes into
   :class:`Kernel` records: ``conv-bn-act``, ``dwconv-bn-act``, ``se``, ``mbconv`` (expand 1x1 →
   depthwise → optional SE → project 1x1 → optional residual add), ``pool``, ``global-pool``,
   ``fc``, ``add``, ``concat``, ``act``, ``eltwise``. An ``mbconv`` or ``se`` kernel keeps its parts,
   so a predictor without a block-level regressor can sum the parts instead.

Batch norm may be present (PyTorch) or folded into the conv (ONNX export); either way the kernel is
``conv-bn-act``. Reshapes, flattens, dropout and identities cost nothing and are dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence
from nni_bigLittle.errors import BigLittleError
from nni_bigLittle.nn.costs import conv_macs, conv_params, linear_macs, linear_params

__all__ = [
    'KERNEL_TYPES', 'FEATURE_NAMES', 'ACT_CODES', 'OpNode', 'Kernel', 'KernelDetectionError',
    'graph_from_torch', 'graph_from_onnx', 'fuse_kernels', 'detect_kernels', 'parse_input_shape', 'summarize',
]

KERNEL_TYPES = ('conv-bn-act', 'dwconv-bn-act', 'mbconv', 'se', 'pool', 'global-pool', 'fc', 'add', 'concat',
                'act', 'eltwise')
# One fixed feature vector for every kernel type; regressors ignore what is constant for their type.
FEATURE_NAMES = ('hw', 'cin', 'cout', 'kernel', 'stride', 'groups', 'expansion', 'act', 'se', 'residual',
                 'out_hw', 'flops', 'params', 'bytes_in', 'bytes_out')
# Activation codes used as a (categorical) feature.
ACT_CODES = {'none': 0, 'relu': 1, 'relu6': 1, 'hswish': 2, 'hsigmoid': 3, 'sigmoid': 4, 'silu': 5, 'gelu': 6,
             'leaky_relu': 1, 'tanh': 4}
BYTES_PER_ELEMENT = 4  # fp32 activations and weights

# Node kinds of the intermediate graph.
_PASS = 'pass'  # reshape, flatten, dropout, identity, shape arithmetic: free, dropped by fusion


class KernelDetectionError(BigLittleError, ValueError):
    """The model could not be traced or its graph could not be read."""


@dataclass
class OpNode:
    """One tensor operation of the intermediate graph, front-end independent.

    ``op`` is one of conv, bn, act, add, mul, gap, pool, linear, concat, pass, other.
    ``inputs`` / ``outputs`` are tensor ids; ``in_shape`` / ``out_shape`` the main (first) tensor shapes.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Kernel:
    """A fused unit of execution with its shape features (batch included in flops and bytes)."""

    type: str
    name: str
    hw: int
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    expansion: float = 1.0
    act: str = 'none'
    se: bool = False
    residual: bool = False
    out_hw: int = 1
    flops: float = 0.0      # multiply-accumulates (element operations for pool / eltwise)
    params: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    batch: int = 1
    parts: tuple['Kernel', ...] = ()

    def features(self) -> list[float]:
        values = {'act': float(ACT_CODES.get(self.act, 0)), 'se': float(self.se), 'residual': float(self.residual)}
        return [values[n] if n in values else float(getattr(self, n)) for n in FEATURE_NAMES]

    @property
    def bytes(self) -> float:
        return self.bytes_in + self.bytes_out + self.params * BYTES_PER_ELEMENT

    def describe(self) -> str:
        shape = f'{self.hw}x{self.hw}x{self.cin}->{self.out_hw}x{self.out_hw}x{self.cout}'
        extra = f' k{self.kernel} s{self.stride}'
        if self.type == 'mbconv':
            extra += f' e{self.expansion:g}' + (' se' if self.se else '') + (' res' if self.residual else '')
        if self.groups > 1 and self.type != 'dwconv-bn-act':
            extra += f' g{self.groups}'
        return f'{self.type:<13} {shape}{extra} {self.act} {self.flops / 1e6:.3f} MMACs'

    def to_dict(self) -> dict[str, Any]:
        d = {n: getattr(self, n) for n in ('type', 'name', 'hw', 'cin', 'cout', 'kernel', 'stride', 'groups',
                                            'expansion', 'act', 'se', 'residual', 'out_hw', 'flops', 'params',
                                            'bytes_in', 'bytes_out', 'batch')}
        if self.parts:
            d['parts'] = [p.to_dict() for p in self.parts]
        return d


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape)) if shape else 1


def _hw(shape: Sequence[int]) -> int:
    return int(shape[2]) if len(shape) >= 4 else 1


# --------------------------------------------------------------------------------------------- front ends


def parse_input_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """``'1x3x224x224'`` (or ``1,3,224,224``, or a sequence) -> ``(1, 3, 224, 224)``."""
    if not isinstance(text, str):
        shape = tuple(int(s) for s in text)
    else:
        try:
            shape = tuple(int(s) for s in text.replace(',', 'x').lower().split('x') if s.strip())
        except ValueError:
            raise KernelDetectionError(f'Input shape {text!r} is not of the form NxCxHxW, e.g. 1x3x224x224.') from None
    if len(shape) != 4 or min(shape) <= 0:
        raise KernelDetectionError(f'Input shape {text!r} must have four positive sizes NxCxHxW, e.g. 1x3x32x32.')
    return shape


_TORCH_ACTS = {
    'ReLU': 'relu', 'ReLU6': 'relu6', 'Hardswish': 'hswish', 'Hardsigmoid': 'hsigmoid', 'Sigmoid': 'sigmoid',
    'SiLU': 'silu', 'GELU': 'gelu', 'LeakyReLU': 'leaky_relu', 'Tanh': 'tanh', 'Mish': 'silu',
}
_TORCH_FUNC_ACTS = {'relu': 'relu', 'relu6': 'relu6', 'hardswish': 'hswish', 'hardsigmoid': 'hsigmoid',
                    'sigmoid': 'sigmoid', 'silu': 'silu', 'gelu': 'gelu', 'leaky_relu': 'leaky_relu',
                    'tanh': 'tanh', 'relu_': 'relu', 'sigmoid_': 'sigmoid', 'hardtanh': 'relu6'}
_TORCH_PASS_MODULES = ('Identity', 'Dropout', 'Dropout2d', 'Flatten', 'Unflatten', 'DropPath', 'StochasticDepth')
_TORCH_PASS_FUNCS = ('flatten', 'reshape', 'view', 'squeeze', 'unsqueeze', 'size', 'dropout', 'contiguous',
                     'permute', 'transpose', 'getitem', 'getattr', 'to', 'clone', 'detach', 'float', 'type_as',
                     'expand_as', 'chunk', 'split', 'dim', 'numel', 'floordiv', 'is_scripting', '_assert',
                     'stochastic_depth')


def graph_from_torch(model, input_shape: Sequence[int]) -> list[OpNode]:
    """Trace ``model`` with ``torch.fx`` and propagate shapes on a random input of ``input_shape``.

    Modules fx cannot trace (data-dependent control flow) raise :class:`KernelDetectionError`;
    :func:`detect_kernels` then falls back to the model's ONNX export.
    """
    import operator

    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp
    from torch import nn

    was_training = model.training
    model.eval()
    try:
        try:
            traced = torch.fx.symbolic_trace(model)
            traced.graph.eliminate_dead_code()  # outputs nobody uses are not run after export either
            traced.recompile()
        except Exception as exc:  # noqa: BLE001 - any tracing failure means "use the ONNX route"
            raise KernelDetectionError(f'torch.fx cannot trace {type(model).__name__}: {exc}') from exc
        example = torch.randn(*input_shape)
        with torch.no_grad():
            ShapeProp(traced).propagate(example)
    finally:
        model.train(was_training)

    modules = dict(traced.named_modules())

    def shape_of(arg) -> tuple[int, ...]:
        meta = getattr(arg, 'meta', {}).get('tensor_meta') if isinstance(arg, torch.fx.Node) else None
        if meta is None or not hasattr(meta, 'shape'):
            return ()
        return tuple(int(s) for s in meta.shape)

    def tensor_inputs(node) -> list[str]:
        found = []
        for arg in _flatten_args(node.args, node.kwargs):
            if isinstance(arg, torch.fx.Node) and shape_of(arg):
                found.append(arg.name)
        return found

    nodes: list[OpNode] = []
    for node in traced.graph.nodes:
        if node.op in ('placeholder', 'output', 'get_attr'):
            continue
        out_shape = shape_of(node)
        ins = tensor_inputs(node)
        in_shape = shape_of(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) else ()
        op, attrs = 'other', {}
        if node.op == 'call_module':
            mod = modules[node.target]
            kind = type(mod).__name__
            if isinstance(mod, nn.Conv2d):
                op = 'conv'
                attrs = {'kernel': int(mod.kernel_size[0]), 'stride': int(mod.stride[0]), 'groups': int(mod.groups),
                         'cin': int(mod.in_channels), 'cout': int(mod.out_channels), 'bias': mod.bias is not None}
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                op = 'bn'
            elif kind in _TORCH_ACTS:
                op, attrs = 'act', {'act': _TORCH_ACTS[kind]}
            elif isinstance(mod, nn.Linear):
                op, attrs = 'linear', {'cin': int(mod.in_features), 'cout': int(mod.out_features),
                                       'bias': mod.bias is not None}
            elif isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and _hw(out_shape) == 1:
                op = 'gap'
            elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
                k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
                s = mod.stride if isinstance(mod.stride, int) else mod.stride[0]
                op, attrs = 'pool', {'kernel': int(k), 'stride': int(s or k)}
            elif kind in _TORCH_PASS_MODULES or isinstance(mod, nn.Flatten):
                op = _PASS
        elif node.op in ('call_function', 'call_method'):
            fname = node.target if isinstance(node.target, str) else getattr(node.target, '__name__', str(node.target))
            if node.target in (operator.add, torch.add) or fname in ('add', 'add_', 'iadd'):
                op = 'add' if len(ins) >= 2 else _PASS  # x + constant is not a kernel of its own
            elif node.target in (operator.mul, torch.mul) or fname in ('mul', 'mul_', 'imul'):
                op = 'mul' if len(ins) >= 2 else 'scale'
            elif fname in ('cat', 'concat'):
                op = 'concat'
            elif fname in _TORCH_FUNC_ACTS:
                op, attrs = 'act', {'act': _TORCH_FUNC_ACTS[fname]}
            elif fname == 'batch_norm':
                op = 'bn'
            elif fname in ('mean', 'adaptive_avg_pool2d', 'adaptive_max_pool2d', 'amax') and _hw(out_shape) <= 1 \
                    and len(in_shape) == 4 and in_shape[2] * in_shape[3] > 1:
                op = 'gap'
            elif fname in ('max_pool2d', 'avg_pool2d'):
                k = node.args[1] if len(node.args) > 1 else node.kwargs.get('kernel_size', 2)
                k = k if isinstance(k, int) else k[0]
                op, attrs = 'pool', {'kernel': int(k), 'stride': int(k)}
            elif fname == 'linear' and len(node.args) > 1 and len(shape_of(node.args[1])) == 2:
                w = shape_of(node.args[1])
                bias = len(node.args) > 2 and node.args[2] is not None or node.kwargs.get('bias') is not None
                op, attrs = 'linear', {'cin': w[1], 'cout': w[0], 'bias': bias}
            elif fname == 'conv2d' and len(node.args) > 1 and len(shape_of(node.args[1])) == 4:
                w = shape_of(node.args[1])
                stride = node.args[3] if len(node.args) > 3 else node.kwargs.get('stride', 1)
                groups = node.args[6] if len(node.args) > 6 else node.kwargs.get('groups', 1)
                stride = stride if isinstance(stride, int) else stride[0]
                bias = len(node.args) > 2 and node.args[2] is not None or node.kwargs.get('bias') is not None
                op, attrs = 'conv', {'kernel': w[2], 'stride': int(stride), 'groups': int(groups),
                                     'cin': w[1] * int(groups), 'cout': w[0], 'bias': bias}
            elif fname in _TORCH_PASS_FUNCS:
                op = _PASS
        if op == 'scale':
            op = _PASS
        if op == 'other' and not out_shape:
            op = _PASS  # non-tensor arithmetic (shape bookkeeping)
        nodes.append(OpNode(str(node.name), op, ins, [node.name], in_shape, out_shape, attrs))
    return nodes


def _flatten_args(args, kwargs) -> list:
    flat: list = []

    def walk(x):
        if isinstance(x, (list, tuple)):
            for item in x:
                walk(item)
        elif isinstance(x, dict):
            for item in x.values():
                walk(item)
        else:
            flat.append(x)
    walk(args)
    walk(kwargs)
    return flat


_ONNX_ACTS = {'Relu': 'relu', 'HardSwish': 'hswish', 'HardSigmoid': 'hsigmoid', 'Sigmoid': 'sigmoid',
              'Gelu': 'gelu', 'LeakyRelu': 'leaky_relu', 'Tanh': 'tanh', 'Clip': 'relu6', 'Mish': 'silu'}
_ONNX_PASS = ('Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity', 'Dropout', 'Shape', 'Gather', 'Constant',
              'ConstantOfShape', 'Cast', 'Transpose', 'Slice', 'Concat_shape', 'Range', 'Expand')


def graph_from_onnx(model, input_shape: Sequence[int] | None = None) -> list[OpNode]:
    """Read an ONNX graph (path, bytes or ``onnx.ModelProto``) into :class:`OpNode` records.

    Shapes come from ONNX shape inference; ``input_shape`` fixes a dynamic input. Weight shapes are
    read from initializers or, when weights were not exported, from the graph inputs.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    if isinstance(model, (str, bytes)) or hasattr(model, '__fspath__'):
        try:
            model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
        except Exception as exc:  # noqa: BLE001
            raise KernelDetectionError(f'Cannot read ONNX model {model!r:.80}: {exc}') from exc
    graph_in = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if input_shape is not None and graph_in:
        model = _with_fixed_input(model, graph_in[0].name, tuple(input_shape))
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001
        raise KernelDetectionError(f'ONNX shape inference failed: {exc}') from exc

    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField('dim_value') for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    constants: dict[str, Any] = {}
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
        if _numel(init.dims) <= 16:
            constants[init.name] = numpy_helper.to_array(init)
    for node in inferred.graph.node:
        if node.op_type == 'Constant':
            for a in node.attribute:
                if a.name == 'value':
                    arr = numpy_helper.to_array(a.t)
                    shapes[node.output[0]] = tuple(arr.shape)
                    if arr.size <= 16:
                        constants[node.output[0]] = arr
    if graph_in and graph_in[0].name not in shapes:
        raise KernelDetectionError(f'The ONNX input {graph_in[0].name!r} has a dynamic shape; give the input shape '
                                   '(e.g. --input 1x3x224x224).')
    weights = {init.name for init in inferred.graph.initializer} | {
        i.name for i in inferred.graph.input if i.name not in {g.name for g in graph_in[:1]}}

    def attr(node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    nodes: list[OpNode] = []
    for idx, node in enumerate(inferred.graph.node):
        name = node.name or f'{node.op_type}_{idx}'
        # Activations (graph tensors that are not weights or constants) feed the data-flow edges.
        ins = [i for i in node.input if i and i not in weights and i not in constants and i in shapes
               and len(shapes[i]) >= 2]
        in_shape = shapes.get(ins[0], ()) if ins else ()
        out_shape = shapes.get(node.output[0], ()) if node.output else ()
        op, attrs = 'other', {}
        t = node.op_type
        if t == 'Conv':
            w = shapes.get(node.input[1], ())
            groups = int(attr(node, 'group', 1))
            ks = attr(node, 'kernel_shape') or (list(w[2:]) if len(w) == 4 else [1])
            strides = attr(node, 'strides') or [1]
            cout = int(w[0]) if w else int(out_shape[1])
            cin = int(w[1]) * groups if w else int(in_shape[1])
            op = 'conv'
            attrs = {'kernel': int(ks[0]), 'stride': int(strides[0]), 'groups': groups, 'cin': cin, 'cout': cout,
                     'bias': len(node.input) > 2 and bool(node.input[2])}
        elif t == 'BatchNormalization':
            op = 'bn'
        elif t in _ONNX_ACTS:
            op, attrs = 'act', {'act': _ONNX_ACTS[t]}
            if t == 'Clip':
                bounds = [constants.get(i) for i in node.input[1:3]]
                if len(bounds) == 2 and bounds[1] is not None and float(bounds[1]) != 6.0:
                    attrs['act'] = 'relu'
        elif t in ('Add', 'Sum'):
            op = 'add' if len(ins) >= 2 else _PASS
        elif t == 'Mul':
            op = 'mul' if len(ins) >= 2 else _PASS
        elif t == 'Div' or t == 'Sub':
            op = 'eltwise' if len(ins) >= 2 else _PASS
        elif t in ('GlobalAveragePool', 'GlobalMaxPool'):
            op = 'gap'
        elif t in ('ReduceMean', 'ReduceMax') and len(in_shape) == 4 and _hw(out_shape) <= 1 and \
                in_shape[2] * in_shape[3] > 1:
            op = 'gap'
        elif t in ('MaxPool', 'AveragePool'):
            ks = attr(node, 'kernel_shape') or [2]
            strides = attr(node, 'strides') or ks
            op, attrs = 'pool', {'kernel': int(ks[0]), 'stride': int(strides[0])}
        elif t in ('Gemm', 'MatMul'):
            w = shapes.get(node.input[1], ())
            trans_b = int(attr(node, 'transB', 0))
            if len(w) == 2:
                cin, cout = (int(w[1]), int(w[0])) if trans_b else (int(w[0]), int(w[1]))
            else:
                cin, cout = int(in_shape[-1]) if in_shape else 0, int(out_shape[-1]) if out_shape else 0
            op, attrs = 'linear', {'cin': cin, 'cout': cout, 'bias': t == 'Gemm' and len(node.input) > 2}
        elif t == 'Concat':
            op = 'concat' if len(ins) >= 2 and len(out_shape) == 4 else _PASS
        elif t in _ONNX_PASS:
            op = _PASS
        if op == 'other' and len(out_shape) < 2:
            op = _PASS
        nodes.append(OpNode(name, op, ins, [o for o in node.output if o], in_shape, out_shape, attrs))
    return nodes


def _with_fixed_input(model, name: str, shape: tuple[int, ...]):
    import onnx
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for inp in model.graph.input:
        if inp.name == name:
            dims = inp.type.tensor_type.shape.dim
            if len(dims) != len(shape):
                raise KernelDetectionError(f'Input shape {"x".join(map(str, shape))} does not match the ONNX input '
                                           f'{name!r} of rank {len(dims)}.')
            for d, size in zip(dims, shape):
                if d.HasField('dim_value') and d.dim_value != size:
                    raise KernelDetectionError(f'The ONNX input {name!r} is fixed at {[x.dim_value for x in dims]}, '
                                               f'not {list(shape)}.')
                d.dim_value = size
    return model


# --------------------------------------------------------------------------------------------- fusion


def fuse_kernels(nodes: list[OpNode]) -> list[Kernel]:
    """Group graph nodes into kernels (see the module docstring). Order follows the graph."""
    producer = {out: n for n in nodes for out in n.outputs}
    consumers: dict[str, list[OpNode]] = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)

    # Pass-through nodes are transparent: resolve tensor ids through them.
    alias: dict[str, str] = {}
    for n in nodes:
        if n.op == _PASS and n.inputs:
            for out in n.outputs:
                alias[out] = _resolve(alias, n.inputs[0])

    def src(tensor: str) -> str:
        return _resolve(alias, tensor)

    real = [n for n in nodes if n.op != _PASS]
    users: dict[str, list[OpNode]] = {}
    for n in real:
        for i in n.inputs:
            users.setdefault(src(i), []).append(n)

    def sole_user(n: OpNode, op: str | tuple[str, ...]) -> OpNode | None:
        out = users.get(n.outputs[0], [])
        ops = (op,) if isinstance(op, str) else op
        return out[0] if len(out) == 1 and out[0].op in ops else None

    used: set[int] = set()
    out_of: dict[str, Kernel] = {}  # output tensor of a kernel -> kernel

    def act_after(n: OpNode) -> tuple[str, list[OpNode]]:
        """The activation fused after ``n``: a plain act, or SiLU written as x * sigmoid(x)."""
        nxt = users.get(n.outputs[0], [])
        if len(nxt) == 1 and nxt[0].op == 'act':
            return nxt[0].attrs['act'], [nxt[0]]
        if len(nxt) == 2:
            sig = [u for u in nxt if u.op == 'act' and u.attrs['act'] == 'sigmoid']
            mul = [u for u in nxt if u.op == 'mul']
            if sig and mul and src(sig[0].outputs[0]) in {src(i) for i in mul[0].inputs}:
                return 'silu', [sig[0], mul[0]]
        if len(nxt) == 1 and nxt[0].op == 'mul':  # hswish as x * hsigmoid(x) is caught by the same rule
            return 'none', []
        return 'none', []

    kernels_in_order: list[tuple[int, Kernel, list[OpNode]]] = []
    position = {id(n): k for k, n in enumerate(real)}

    # 1. conv (+bn) (+act) and linear (+act)
    for n in real:
        if id(n) in used or n.op not in ('conv', 'linear'):
            continue
        group = [n]
        last = n
        bn = sole_user(last, 'bn') if n.op == 'conv' else None
        if bn is not None:
            group.append(bn)
            last = bn
        act, act_nodes = act_after(last)
        group += act_nodes
        last = act_nodes[-1] if act_nodes else last
        if n.op == 'conv':
            kernel = _conv_kernel(n, act, last.out_shape or n.out_shape, with_bn=bn is not None)
        else:
            kernel = _fc_kernel(n, act)
        for g in group:
            used.add(id(g))
        kernels_in_order.append((position[id(n)], kernel, group))
        for out in last.outputs:
            out_of[src(out)] = kernel

    # 2. everything else is a kernel of its own
    for n in real:
        if id(n) in used:
            continue
        kernel = _single_kernel(n)
        if kernel is None:
            continue
        used.add(id(n))
        kernels_in_order.append((position[id(n)], kernel, [n]))
        for out in n.outputs:
            out_of[src(out)] = kernel
    kernels_in_order.sort(key=lambda item: item[0])

    # Map every tensor to the kernel producing it and each kernel to its input tensors.
    node_kernel: dict[int, int] = {}
    for idx, (_, kernel, group) in enumerate(kernels_in_order):
        for g in group:
            node_kernel[id(g)] = idx
    k_inputs: list[list[int | None]] = []
    for _, kernel, group in kernels_in_order:
        ids = {id(g) for g in group}
        srcs = []
        for g in group:
            for i in g.inputs:
                p = producer.get(src(i))
                if p is None:
                    srcs.append(None)  # graph input
                elif id(p) not in ids:
                    srcs.append(node_kernel.get(id(p)))
        k_inputs.append(srcs)
    k_users: dict[int, list[int]] = {}
    for idx, srcs in enumerate(k_inputs):
        for s in srcs:
            if s is not None:
                k_users.setdefault(s, []).append(idx)

    kernels = [k for _, k, _ in kernels_in_order]
    merged: dict[int, Kernel] = {}
    absorbed: set[int] = set()

    # 3. squeeze-excite: gap -> conv/fc (act) -> conv/fc (gate) -> mul with the gap's input
    for idx, k in enumerate(kernels):
        if k.type != 'global-pool' or idx in absorbed:
            continue
        chain = [idx]
        cur = idx
        for _ in range(2):
            nxt = k_users.get(cur, [])
            if len(nxt) != 1 or kernels[nxt[0]].type not in ('conv-bn-act', 'fc'):
                break
            cur = nxt[0]
            chain.append(cur)
        if len(chain) != 3:
            continue
        gate_users = k_users.get(cur, [])
        gate = kernels[cur]
        mul = None
        tail = []
        if gate.act in ('sigmoid', 'hsigmoid'):
            if len(gate_users) == 1 and kernels[gate_users[0]].type == 'eltwise':
                mul = gate_users[0]
        elif len(gate_users) == 1 and kernels[gate_users[0]].type == 'act' and \
                kernels[gate_users[0]].act in ('sigmoid', 'hsigmoid'):
            tail = [gate_users[0]]
            nxt = k_users.get(gate_users[0], [])
            if len(nxt) == 1 and kernels[nxt[0]].type == 'eltwise':
                mul = nxt[0]
        if mul is None or k_inputs[idx][0] not in k_inputs[mul]:
            continue
        members = chain + tail + [mul]
        pool = kernels[idx]
        squeeze = kernels[chain[1]].cout
        parts = tuple(kernels[m] for m in members)
        se = Kernel('se', pool.name, hw=pool.hw, cin=pool.cin, cout=pool.cin, expansion=squeeze / max(pool.cin, 1),
                    act=kernels[chain[1]].act, out_hw=pool.hw, flops=sum(p.flops for p in parts),
                    params=sum(p.params for p in parts), bytes_in=pool.bytes_in, bytes_out=kernels[mul].bytes_out,
                    batch=pool.batch, parts=parts)
        merged[idx] = se
        absorbed.update(members[1:])
        source = k_inputs[idx][0]
        if source is not None:  # the block input now feeds the SE kernel once, not the pool and the mul
            k_users[source] = [u for u in k_users.get(source, []) if u != mul]
        # The SE kernel stands where its pool stood; its output is the mul's output.
        for u in k_users.get(mul, []):
            k_inputs[u] = [idx if s == mul else s for s in k_inputs[u]]
        k_users[idx] = k_users.get(mul, [])

    def current(i: int) -> Kernel:
        return merged.get(i, kernels[i])

    # 4. inverted residual: expand 1x1 -> dwconv -> [se] -> project 1x1 (no act) -> [add with block input]
    for idx, k in enumerate(kernels):
        if idx in absorbed or current(idx).type != 'conv-bn-act' or k.kernel != 1:
            continue
        seq = [idx]
        nxt = k_users.get(idx, [])
        if len(nxt) != 1 or current(nxt[0]).type != 'dwconv-bn-act':
            continue
        dw = nxt[0]
        seq.append(dw)
        cur = dw
        nxt = k_users.get(cur, [])
        has_se = len(nxt) == 1 and current(nxt[0]).type == 'se'
        if has_se:
            cur = nxt[0]
            seq.append(cur)
            nxt = k_users.get(cur, [])
        if len(nxt) != 1 or current(nxt[0]).type != 'conv-bn-act' or current(nxt[0]).kernel != 1 \
                or current(nxt[0]).act != 'none':
            continue
        proj = nxt[0]
        seq.append(proj)
        residual = False
        after = k_users.get(proj, [])
        if len(after) == 1 and current(after[0]).type == 'add' and k_inputs[idx][0] in k_inputs[after[0]]:
            seq.append(after[0])
            residual = True
        parts = tuple(current(m) for m in seq)
        expand, dwk, project = current(idx), current(dw), current(proj)
        block = Kernel(
            'mbconv', expand.name, hw=expand.hw, cin=expand.cin, cout=project.cout, kernel=dwk.kernel,
            stride=dwk.stride, groups=expand.groups, expansion=expand.cout / max(expand.cin, 1), act=expand.act,
            se=has_se, residual=residual, out_hw=project.out_hw, flops=sum(p.flops for p in parts),
            params=sum(p.params for p in parts), bytes_in=expand.bytes_in, bytes_out=parts[-1].bytes_out,
            batch=expand.batch, parts=parts)
        merged[idx] = block
        absorbed.update(seq[1:])

    return [current(i) for i in range(len(kernels)) if i not in absorbed]


def _resolve(alias: dict[str, str], tensor: str) -> str:
    seen = 0
    while tensor in alias and seen < 10_000:
        tensor = alias[tensor]
        seen += 1
    return tensor


def _conv_kernel(n: OpNode, act: str, out_shape: tuple[int, ...], with_bn: bool = False) -> Kernel:
    a = n.attrs
    cin, cout, groups, k = a['cin'], a['cout'], a['groups'], a['kernel']
    batch = int(n.in_shape[0]) if n.in_shape else 1
    out_hw = _hw(out_shape)
    out_h = int(out_shape[2]) if len(out_shape) == 4 else 1
    out_w = int(out_shape[3]) if len(out_shape) == 4 else 1
    flops = conv_macs(out_h, out_w, cin, cout, k, groups, batch)
    # Deployment view: batch norm folds into the conv as a bias (what an ONNX export holds).
    params = conv_params(cin, cout, k, groups, bias=bool(a.get('bias') or with_bn))
    depthwise = groups > 1 and groups == cin and cout % cin == 0
    return Kernel('dwconv-bn-act' if depthwise else 'conv-bn-act', n.name, hw=_hw(n.in_shape), cin=cin, cout=cout,
                  kernel=k, stride=a['stride'], groups=groups, act=act, out_hw=out_hw, flops=float(flops),
                  params=float(params), bytes_in=float(_numel(n.in_shape) * BYTES_PER_ELEMENT),
                  bytes_out=float(_numel(out_shape) * BYTES_PER_ELEMENT), batch=batch)


def _fc_kernel(n: OpNode, act: str) -> Kernel:
    a = n.attrs
    batch = _numel(n.in_shape[:-1]) if n.in_shape else 1
    flops = linear_macs(a['cin'], a['cout'], batch)
    return Kernel('fc', n.name, hw=1, cin=a['cin'], cout=a['cout'], act=act, out_hw=1, flops=float(flops),
                  params=float(linear_params(a['cin'], a['cout'], bias=bool(a.get('bias')))),
                  bytes_in=float(_numel(n.in_shape) * BYTES_PER_ELEMENT),
                  bytes_out=float(_numel(n.out_shape) * BYTES_PER_ELEMENT), batch=max(batch, 1))


def _single_kernel(n: OpNode) -> Kernel | None:
    ins, outs = n.in_shape, n.out_shape
    if not outs:
        return None
    batch = int(ins[0]) if ins else 1
    channels = int(ins[1]) if len(ins) >= 2 else 1
    common = dict(name=n.name, hw=_hw(ins), cin=channels, out_hw=_hw(outs), batch=batch,
                  bytes_in=float(_numel(ins) * BYTES_PER_ELEMENT * max(len(n.inputs), 1)),
                  bytes_out=float(_numel(outs) * BYTES_PER_ELEMENT))
    if n.op == 'bn':  # a batch norm with no conv before it
        return Kernel('eltwise', cout=channels, flops=float(_numel(outs)), params=2.0 * channels, **common)
    if n.op == 'act':
        return Kernel('act', cout=channels, act=n.attrs['act'], flops=float(_numel(outs)), **common)
    if n.op == 'add':
        return Kernel('add', cout=channels, flops=float(_numel(outs)), **common)
    if n.op in ('mul', 'eltwise', 'other'):
        return Kernel('eltwise', cout=int(outs[1]) if len(outs) >= 2 else channels, flops=float(_numel(outs)),
                      **common)
    if n.op == 'concat':
        return Kernel('concat', cout=int(outs[1]), flops=0.0, **common)
    if n.op == 'gap':
        return Kernel('global-pool', cout=channels, flops=float(_numel(ins)), **common)
    if n.op == 'pool':
        k = n.attrs['kernel']
        return Kernel('pool', cout=channels, kernel=k, stride=n.attrs['stride'], flops=float(_numel(outs) * k * k),
                      **common)
    return None


# --------------------------------------------------------------------------------------------- entry point


def detect_kernels(model, model_type: str = 'torch', input_shape: Sequence[int] | str | None = None) -> list[Kernel]:
    """Kernels of ``model``: a ``torch.nn.Module`` (``model_type='torch'``, ``input_shape`` required) or
    an ONNX model (``'onnx'``: path, bytes or ModelProto; ``input_shape`` only for dynamic inputs).

    A PyTorch model that ``torch.fx`` cannot trace is exported to ONNX and read from there.
    """
    if model_type == 'torch':
        if input_shape is None:
            raise KernelDetectionError('A PyTorch model needs an input shape, e.g. input_shape=(1, 3, 224, 224).')
        shape = parse_input_shape(input_shape)
        try:
            return fuse_kernels(graph_from_torch(model, shape))
        except KernelDetectionError:
            return fuse_kernels(graph_from_onnx(torch_to_onnx(model, shape)))
    if model_type == 'onnx':
        shape = parse_input_shape(input_shape) if input_shape is not None else None
        return fuse_kernels(graph_from_onnx(model, shape))
    raise KernelDetectionError(f"Unknown model_type {model_type!r}; use 'torch' or 'onnx'.")


def torch_to_onnx(model, input_shape: Sequence[int], opset: int = 17) -> bytes:
    """Export ``model`` (eval mode) to ONNX bytes with a fixed input shape (batch norm folded)."""
    import io
    import warnings

    import torch
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(model, (torch.randn(*input_shape),), buffer, opset_version=opset,
                              input_names=['input'], do_constant_folding=True, dynamo=False)
    finally:
        model.train(was_training)
    return buffer.getvalue()


def summarize(kernels: Iterable[Kernel]) -> dict[str, dict[str, float]]:
    """Count and MACs per kernel type."""
    table: dict[str, dict[str, float]] = {}
    for k in kernels:
        row = table.setdefault(k.type, {'count': 0, 'flops': 0.0})
        row['count'] += 1
        row['flops'] += k.flops
    return table


def with_batch(kernel: Kernel, batch: int) -> Kernel:
    """The same kernel at another batch size (flops and bytes scale, shapes do not)."""
    scale = batch / max(kernel.batch, 1)
    return replace(kernel, batch=batch, flops=kernel.flops * scale, bytes_in=kernel.bytes_in * scale,
                   bytes_out=kernel.bytes_out * scale, parts=tuple(with_batch(p, batch) for p in kernel.parts))
