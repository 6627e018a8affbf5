"""Faster lowerings of PyTorch's image ops than torchax's defaults, for exported programs.

torchax lowers every op of an exported graph in PyTorch's NCHW layout. On the CPU backend XLA
then runs each convolution between two transposes to and from its preferred channels-last
layout, and depthwise (grouped) and 1x1 convolutions are slow at that. Here the graph of an
exported program runs channels-last from its first convolution to the first op that needs the
NCHW order back (a ``view``, a ``permute`` other than to NHWC, any op not listed below):

* ``convolution`` runs NHWC: a 1x1 convolution as a matmul over channels, a depthwise one as
  our Flax port's shifted multiply-adds on CPU
  (:func:`jaxfool.models.efficientnet_lite.depthwise_shifted`), every other one as XLA's
  convolution with NHWC dimension numbers;
* the weights are prepared once, at load (:class:`Plan`): kernels in the form they run, an
  inference batch norm right after a convolution folded into it, a zero padding right before
  one done by it;
* padding, inference batch norm, pointwise ops (``torch.Tag.pointwise``: activations, adds,
  multiplies by per-channel vectors), means and sums over H and W, max and average pooling and
  ``permute`` to NHWC (ConvNeXt) work on the channels-last array as it is.

A value held channels-last is a :class:`_Last`; the interpreter turns it back to NCHW exactly
where an op outside that list reads it, so every result equals torchax's own lowering (the
bridge's parity tests compare with torch eager). Measured on EfficientNet-Lite0 at batch 32 on
2 CPU cores, the fused step through the bridge over the step through our Flax port: 0.19 with
torchax's lowering, 0.63 with NCHW convolution overrides, 0.98 with this interpreter.

:func:`convolution` alone (NCHW in and out) serves modules that ``torch.export`` cannot export
and that therefore run through torchax's tensor environment.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxfool.models.efficientnet_lite import depthwise_shifted, resolve_depthwise

_TO_LAST, _TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


class _Last:
    """An NCHW tensor held as NHWC: ``array`` is ``[N, H, W, C]``."""

    __slots__ = ("array",)

    def __init__(self, array: jax.Array):
        self.array = array


def channels_last(images: jax.Array) -> _Last:
    """Images ``[N, H, W, C]`` handed to the interpreter as the NCHW input they stand for."""
    return _Last(images)


def _first(value):
    """NCHW array of a value (``_Last`` transposed back; anything else as it is)."""
    return jnp.transpose(value.array, _TO_FIRST) if isinstance(value, _Last) else value


def _last(value) -> jax.Array:
    """NHWC array of a 4-d value."""
    return value.array if isinstance(value, _Last) else jnp.transpose(value, _TO_LAST)


def conv_kind(channels: int, weight_shape, stride, padding, dilation, groups) -> str:
    """How :func:`conv_nhwc` runs a 2-d convolution: ``"matmul"`` (1x1, stride 1, no padding),
    ``"depthwise"`` (shifted multiply-adds, on CPU) or ``"xla"`` (XLA's convolution)."""
    out, per_group, kh, kw = weight_shape
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    if groups == 1 and (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return "matmul"
    if (groups == channels > 1 and per_group == 1 and out == channels and kh == kw and stride[0] == stride[1]
            and dilation == (1, 1) and resolve_depthwise(None) == "shifted"):
        return "depthwise"
    return "xla"


def conv_kernel(weight: jax.Array, kind: str) -> jax.Array:
    """PyTorch's ``weight [O, C/groups, kh, kw]`` in the form ``kind`` reads: ``[C, O]``,
    ``[k, k, C]`` or HWIO."""
    if kind == "matmul":
        return weight[:, :, 0, 0].T
    if kind == "depthwise":
        return jnp.transpose(weight[:, 0], (1, 2, 0))
    return jnp.transpose(weight, (2, 3, 1, 0))


def conv_nhwc(x, kernel, kind, stride, pads, dilation, groups) -> jax.Array:
    """A 2-d convolution of ``x [N, H, W, C]`` by a :func:`conv_kernel`, zero ``pads``
    ``((top, bottom), (left, right))``; returns ``[N, H', W', O]`` (no bias)."""
    kernel = kernel.astype(x.dtype)
    if kind == "matmul":
        return x @ kernel
    if kind == "depthwise":
        return depthwise_shifted(x, kernel, stride[0], pads)
    return lax.conv_general_dilated(x, kernel, tuple(stride), pads, rhs_dilation=tuple(dilation),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups, fallback):
    """``aten.convolution`` on jax arrays (NCHW input, OIHW weight) through :func:`conv_nhwc`;
    ``fallback`` (torchax's own lowering) takes transposed and non-2-d convolutions."""
    if transposed or input.ndim != 4:
        return fallback(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    kind = conv_kind(input.shape[1], weight.shape, stride, padding, dilation, groups)
    pads = tuple((p, p) for p in padding)
    out = jnp.transpose(conv_nhwc(_last(input), conv_kernel(weight, kind), kind, stride, pads, dilation, groups), _TO_FIRST)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


@functools.cache
def environment():
    """A torchax environment with :func:`convolution` on the CPU backend (``None`` elsewhere:
    torchax's default environment)."""
    if jax.default_backend() != "cpu":
        return None
    import torch
    from torchax import tensor
    from torchax.ops import jaten, ops_registry

    env = tensor.Environment()
    op = torch.ops.aten.convolution.default  # looked up before torchax's packet-wide lowering
    env._ops[op] = ops_registry.Operator(op, functools.partial(convolution, fallback=jaten._aten_convolution), is_jax_function=True,
                                         is_user_defined=True, needs_env=False, is_view_op=False)
    return env


def _spatial(dims, ndim: int = 4) -> bool:
    return sorted(d % ndim for d in dims) == [2, 3]


def _pool_padding(padding):
    padding = tuple(padding) or (0, 0)
    return padding * 2 if len(padding) == 1 else padding


def _handlers(aten):
    """``{op: handler(ip, node, *args, **kwargs) -> result or NotImplemented}``: the
    channels-last cases (``ip``: the interpreter, with its :class:`Plan` and the prepared
    weights of this call); ``NotImplemented`` sends the op to torchax's lowering on NCHW arrays."""

    def conv(ip, node, input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        if node.name in ip.prepared:
            kind, (kernel, bias) = ip.plan.convs[node.name][0], ip.prepared[node.name]
        elif transposed or weight.ndim != 4 or (not isinstance(input, _Last) and input.ndim != 4):
            return NotImplemented
        else:
            channels = input.array.shape[-1] if isinstance(input, _Last) else input.shape[1]
            kind = conv_kind(channels, weight.shape, stride, padding, dilation, groups)
            kernel = conv_kernel(weight, kind)
        pads = ip.plan.pads.get(node.name, tuple((p, p) for p in padding))
        out = conv_nhwc(_last(input), kernel, kind, stride, pads, dilation, groups)
        return _Last(out if bias is None else out + bias.astype(out.dtype))

    def pad(ip, node, x, pads, value=0.0):
        if node.name in ip.plan.lazy_pads:  # the convolution after it pads
            return x
        if not isinstance(x, _Last) or len(pads) not in (2, 4) or min(pads) < 0:
            return NotImplemented
        left, right, top, bottom = (*pads, 0, 0)[:4]
        return _Last(jnp.pad(x.array, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value))

    def batch_norm(ip, node, x, weight, bias, mean, var, momentum, eps):
        if node.name in ip.plan.folded:  # folded into the convolution before it
            return x, None, None
        if not isinstance(x, _Last):
            return NotImplemented
        scale = lax.rsqrt(var + eps) * (1.0 if weight is None else weight)
        shift = (0.0 if bias is None else bias) - mean * scale
        empty = jnp.zeros((0,), x.array.dtype)
        return _Last(x.array * scale.astype(x.array.dtype) + shift.astype(x.array.dtype)), empty, empty

    def reduce(fn):
        def handler(ip, node, x, dims, keepdim=False, dtype=None):
            if not isinstance(x, _Last) or dtype is not None or not _spatial(dims):
                return NotImplemented
            out = fn(x.array, axis=(1, 2), keepdims=keepdim)
            return _Last(out) if keepdim else out
        return handler

    def permute(ip, node, x, dims):
        dims = tuple(d % 4 for d in dims)
        if isinstance(x, _Last) and dims == _TO_LAST:
            return x.array
        if not isinstance(x, _Last) and x.ndim == 4 and dims == _TO_FIRST:
            return _Last(x)
        return NotImplemented

    def window(x, init, op, kernel, stride, padding):
        kernel = tuple(kernel) * (2 // len(kernel))
        stride = tuple(stride or kernel) * (2 // len(stride or kernel))
        (ph, pw) = _pool_padding(padding)
        return lax.reduce_window(x, init, op, (1, *kernel, 1), (1, *stride, 1), ((0, 0), (ph, ph), (pw, pw), (0, 0)))

    def max_pool(ip, node, x, kernel, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
        only_values = all(u.target is operator.getitem and u.args[1] == 0 for u in node.users)
        if not isinstance(x, _Last) or ceil_mode or set(dilation) != {1} or not only_values:
            return NotImplemented
        values = window(x.array, np.array(-np.inf, x.array.dtype), lax.max, kernel, stride, padding)  # numpy: a known identity, differentiable
        return _Last(values), None

    def avg_pool(ip, node, x, kernel, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True, divisor_override=None):
        if not isinstance(x, _Last) or ceil_mode or divisor_override is not None:
            return NotImplemented
        zero = np.array(0, x.array.dtype)
        total = window(x.array, zero, lax.add, kernel, stride, padding)
        if count_include_pad:
            return _Last(total / (kernel[0] * kernel[-1]))
        counts = window(jnp.ones((1, *x.array.shape[1:3], 1), x.array.dtype), zero, lax.add, kernel, stride, padding)
        return _Last(total / counts)

    def adaptive_avg(ip, node, x, size):
        if not isinstance(x, _Last) or tuple(size) != (1, 1):
            return NotImplemented
        return _Last(jnp.mean(x.array, axis=(1, 2), keepdims=True))

    def same(ip, node, x, *rest, **kwargs):
        return _Last(x.array) if isinstance(x, _Last) and not rest and not kwargs else NotImplemented

    return {
        aten.convolution.default: conv,
        aten.constant_pad_nd.default: pad,
        aten._native_batch_norm_legit_no_training.default: batch_norm,
        aten.mean.dim: reduce(jnp.mean),
        aten.sum.dim_IntList: reduce(jnp.sum),
        aten.permute.default: permute,
        aten.max_pool2d_with_indices.default: max_pool,
        aten.avg_pool2d.default: avg_pool,
        aten._adaptive_avg_pool2d.default: adaptive_avg,
        aten.clone.default: same,
        aten.alias.default: same,
    }


def _broadcast_last(value):
    """A pointwise op's operand beside channels-last ones: NCHW-broadcastable arrays become
    NHWC-broadcastable (``[C, 1, 1]`` -> ``[1, 1, 1, C]``); scalars stay."""
    if isinstance(value, _Last):
        return value.array
    if isinstance(value, (jax.Array, np.ndarray)) and 1 <= value.ndim <= 4:
        return jnp.transpose(value.reshape((1,) * (4 - value.ndim) + value.shape), _TO_LAST)
    return value


class Plan:
    """What is computed once from an exported graph's weights, when it is loaded: each 2-d
    convolution whose weight (and bias) are parameters gets its kernel in the form it runs
    (:func:`conv_kernel`), with an inference batch norm right after it folded in
    (``w * s``, ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``). Parameters read
    only there are dropped from the params the engine passes around.

    ``states``: the graph's leading placeholders (parameters, buffers, constants), in order.
    """

    def __init__(self, graph, n_states: int):
        import torch

        aten = torch.ops.aten
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        self.state_index = {n: i for i, n in enumerate(placeholders[:n_states])}
        self.convs: dict[str, tuple] = {}  # conv name -> (kind, weight, bias, batch-norm node or None)
        self.pads: dict[str, tuple] = {}  # conv name -> ((top, bottom), (left, right)) with the pad before it
        self.lazy_pads: set[str] = set()  # pads left to the convolution after them
        for node in graph.nodes:
            if node.target is not aten.convolution.default:
                continue
            x, weight, bias, stride, padding, dilation, transposed, _, groups = node.args
            shape = getattr(weight, "meta", {}).get("val")
            if (transposed or weight not in self.state_index or (bias is not None and bias not in self.state_index)
                    or shape is None or len(shape.shape) != 4 or len(x.meta["val"].shape) != 4):
                continue
            kind = conv_kind(int(x.meta["val"].shape[1]), tuple(shape.shape), stride, padding, dilation, groups)
            users = list(node.users)
            bn = users[0] if len(users) == 1 else None
            if bn is None or bn.target is not aten._native_batch_norm_legit_no_training.default or bn.args[0] is not node \
                    or not all(a is None or a in self.state_index for a in bn.args[1:5]):
                bn = None
            self.convs[node.name] = (kind, weight, bias, bn)
            padded = x.args[1] if x.target is aten.constant_pad_nd.default else ()
            if (len(padded) == 4 and min(padded) >= 0 and (x.args[2:] or [0])[0] == 0 and list(x.users) == [node]
                    and kind != "matmul"):
                left, right, top, bottom = padded
                self.pads[node.name] = ((top + padding[0], bottom + padding[0]), (left + padding[1], right + padding[1]))
                self.lazy_pads.add(x.name)
        self.folded = {bn.name for *_, bn in self.convs.values() if bn is not None}  # batch norms done by their convolution
        read = set(self.convs) | self.folded
        self.dropped = {i for n, i in self.state_index.items() if n.users and all(u.name in read for u in n.users)}

    def prepare(self, states: list) -> dict:
        """``{"states": [array or None], "prepared": {conv name: (kernel, bias)}}`` from the
        graph's state arrays."""
        value = lambda n: None if n is None else states[self.state_index[n]]  # noqa: E731
        prepared = {}
        for name, (kind, weight, bias, bn) in self.convs.items():
            w, b = value(weight), value(bias)
            if bn is not None:
                gamma, beta, mean, var = (value(a) for a in bn.args[1:5])
                scale = lax.rsqrt(var + bn.args[6]) * (1.0 if gamma is None else gamma)
                w = w * scale[:, None, None, None]
                b = ((0.0 if b is None else b) - mean) * scale + (0.0 if beta is None else beta)
            prepared[name] = (conv_kernel(w, kind), b)
        return {"states": [None if i in self.dropped else a for i, a in enumerate(states)], "prepared": prepared}


def interpreter(graph_module, n_states: int):
    """An interpreter of an exported program's graph (torchax's, run channels-last as the module
    docstring says): ``ip.call(params, inputs)`` with ``params`` from ``ip.plan.prepare``."""
    import torch
    from torch.utils import _pytree as pytree
    from torchax.export import JaxInterpreter

    handlers = _handlers(torch.ops.aten)
    always = {torch.ops.aten.convolution.default, torch.ops.aten.constant_pad_nd.default}  # even on NCHW input
    is_last = lambda v: isinstance(v, _Last)  # noqa: E731

    def to_first(tree):
        return pytree.tree_map(_first, tree, is_leaf=is_last)

    class Interpreter(JaxInterpreter):
        plan: Plan
        prepared: dict  # this call's prepared weights (set by call)

        def call(self, params: dict, inputs) -> list:
            """The graph's outputs (NCHW) for ``inputs`` (a tuple of arrays)."""
            self.prepared = params["prepared"]
            return self.run(*params["states"], *inputs, enable_io_processing=False)

        def run_node(self, node):
            self._node = node
            return super().run_node(node)

        def call_function(self, target, args, kwargs):
            if target is operator.getitem:
                return target(*args)
            leaves = pytree.tree_leaves((args, kwargs), is_leaf=is_last)
            held = any(map(is_last, leaves))
            handler = handlers.get(target)
            if handler is not None and (held or target in always):
                out = handler(self, self._node, *args, **kwargs)
                if out is not NotImplemented:
                    return out
            if held:
                pointwise = isinstance(target, torch._ops.OpOverload) and torch.Tag.pointwise in target.tags
                if pointwise and all(not isinstance(v, (jax.Array, np.ndarray)) or v.ndim <= 4 for v in leaves):
                    args, kwargs = pytree.tree_map(_broadcast_last, (args, kwargs), is_leaf=is_last)
                    return _Last(super().call_function(target, args, kwargs))
                args, kwargs = to_first((args, kwargs))
            return super().call_function(target, args, kwargs)

        def output(self, target, args, kwargs):
            return to_first(super().output(target, args, kwargs))

    ip = Interpreter(graph_module)
    ip.plan = Plan(graph_module.graph, n_states)
    return ip
