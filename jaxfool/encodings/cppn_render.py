"""Evaluating a population of CPPNs at every pixel, shaped for each backend.

Both paths first turn each padded genome into small dense tables (:func:`tables`): the input
and hidden nodes in topological order with a strictly upper-triangular weight matrix, and the
outputs' weights from them (outputs are sinks: nothing connects out of them). Then:

* ``grouped`` (CPU): genomes sorted by their number of hidden nodes and evaluated in groups, a
  ``fori_loop`` over the group's own largest network, activations ``[group, nodes, pixels]``
  kept in cache (16 genomes at 28x28, 2 at 224x224). Sorting puts small nets together, so
  few groups loop over empty slots.
* ``unrolled`` (GPU, TPU): one straight-line program over every hidden slot, elementwise over
  ``[genomes, pixels]``: no loop at all while the batch fits the memory budget, else a
  ``lax.map`` over as few chunks as the budget allows (never a fixed group size).

``auto`` picks ``grouped`` on CPU and ``unrolled`` elsewhere (measured in
``benchmarks/throughput.py`` and ``benchmarks/gpu_suite.py``). The paths sum in different
orders, so they agree to float rounding, not bit for bit; within one path a genome's picture
does not depend on the batch it is rendered in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxfool.config import RENDERERS
from jaxfool.encodings.activations import apply

NUM_INPUTS = 4  # x, y, d, bias
INACTIVE = 2.0  # position of unused node slots: after every real node
GROUP = 16  # at most this many genomes per group on CPU
GROUP_BYTES = 8 << 20  # and their activations within this (so 2 genomes at 224x224): in cache


@struct.dataclass
class Tables:
    """One CPPN as dense tables (leaves gain a leading ``[P]`` axis for a population).
    S = inputs + hidden slots, O = outputs.

    Attributes:
      weights: float32 ``[S, S]``: weights[j, k] from node j to node k, topological order
        (inputs first, then live hidden nodes by position, then unused slots), so only j < k.
      bias, activation: ``[S]`` float32 / int32 of those nodes.
      out_weights: float32 ``[S, O]``; out_bias, out_activation: ``[O]``.
      hidden: int32 scalar: live hidden nodes (the rest of the slots do nothing).
    """

    weights: jax.Array
    bias: jax.Array
    activation: jax.Array
    out_weights: jax.Array
    out_bias: jax.Array
    out_activation: jax.Array
    hidden: jax.Array


def tables(g, num_outputs: int) -> Tables:
    """The :class:`Tables` of one genome (a ``CPPNGenome`` without the population axis)."""
    n = g.activation.shape[0]
    live = g.conn_on & g.node_on[g.source] & g.node_on[g.target]
    dense = jnp.zeros((n, n), jnp.float32).at[g.source, g.target].add(jnp.where(live, g.weight, 0.0))
    hidden = jnp.arange(NUM_INPUTS + num_outputs, n)
    key = jnp.where(g.node_on[hidden], g.position[hidden], INACTIVE)
    order = jnp.concatenate([jnp.arange(NUM_INPUTS), hidden[jnp.argsort(key, stable=True)]])
    outs = jnp.arange(NUM_INPUTS, NUM_INPUTS + num_outputs)
    return Tables(
        weights=dense[order][:, order],
        bias=g.bias[order],
        activation=g.activation[order],
        out_weights=dense[order][:, outs],
        out_bias=g.bias[outs],
        out_activation=g.activation[outs],
        hidden=jnp.sum(g.node_on[hidden]).astype(jnp.int32),
    )


def choose(renderer: str, backend: str) -> str:
    """The path ``renderer`` means on ``backend`` (``jax.default_backend()``)."""
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
    if renderer != "auto":
        return renderer
    return "grouped" if backend == "cpu" else "unrolled"


def _in_chunks(fn, t: Tables, size: int) -> jax.Array:
    """``fn`` over the population in chunks of ``size`` genomes (a ``lax.map``, the last chunk
    padded with copies of the first genome), or in one call when it fits; rows in order."""
    p = t.hidden.shape[0]
    if size >= p:
        return fn(t)
    pad = -p % size
    padded = jax.tree.map(lambda a: jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))]), t)
    out = jax.lax.map(fn, jax.tree.map(lambda a: a.reshape(-1, size, *a.shape[1:]), padded))
    return out.reshape(-1, *out.shape[2:])[:p]


def grouped(t: Tables, coords: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """Outputs float32 ``[P, O, pixels]`` (before any colour conversion) at ``coords [pixels, 4]``."""
    p, s = t.hidden.shape[0], t.weights.shape[-1]
    size = max(1, min(GROUP, p, GROUP_BYTES // (4 * s * coords.shape[0])))
    order = jnp.argsort(t.hidden, stable=True)  # small networks together

    def one_group(tg: Tables) -> jax.Array:
        values = jnp.zeros((size, s, coords.shape[0]), jnp.float32).at[:, :NUM_INPUTS].set(coords.T)

        def node(k, values):
            pre = jnp.einsum("gs,gsp->gp", tg.weights[:, :, k], values) + tg.bias[:, k, None]
            return values.at[:, k].set(apply(names, tg.activation[:, k, None], pre))

        values = jax.lax.fori_loop(NUM_INPUTS, NUM_INPUTS + jnp.max(tg.hidden), node, values)
        pre = jnp.einsum("gso,gsp->gop", tg.out_weights, values) + tg.out_bias[..., None]
        return apply(names, tg.out_activation[..., None], pre)

    out = _in_chunks(one_group, jax.tree.map(lambda a: a[order], t), size)
    return out[jnp.argsort(order, stable=True)]  # back to the population's order


def bytes_per_genome(num_slots: int, num_outputs: int, pixels: int, functions: int) -> int:
    """Live float32 values the unrolled program holds per genome: every node's values, the
    outputs, and each function's result before the selection."""
    return 4 * pixels * (num_slots + num_outputs + functions)


def unrolled(t: Tables, coords: jax.Array, names: tuple[str, ...], memory_bytes: int) -> jax.Array:
    """Outputs float32 ``[P, O, pixels]``; every hidden slot evaluated in straight-line code.
    Chunks of the population bound memory by ``memory_bytes``; one chunk: no loop."""
    p, s = t.hidden.shape[0], t.weights.shape[-1]
    num_outputs = t.out_bias.shape[-1]
    per_genome = bytes_per_genome(s, num_outputs, coords.shape[0], len(names))
    chunk = max(1, min(p, memory_bytes // per_genome))
    inputs = [coords[None, :, i] for i in range(NUM_INPUTS)]  # [1, pixels], shared by all genomes

    def evaluate(tc: Tables) -> jax.Array:
        values = list(inputs)
        for k in range(NUM_INPUTS, s):
            pre = tc.bias[:, k, None] + sum(tc.weights[:, j, k, None] * values[j] for j in range(k))
            values.append(apply(names, tc.activation[:, k, None], pre))
        outs = [
            apply(names, tc.out_activation[:, o, None], tc.out_bias[:, o, None] + sum(tc.out_weights[:, j, o, None] * values[j] for j in range(s)))
            for o in range(num_outputs)
        ]
        return jnp.stack(outs, axis=1)

    return _in_chunks(evaluate, t, chunk)
