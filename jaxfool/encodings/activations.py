"""CPPN node functions, elementwise on float32 arrays.

``sine`` (and ``cosine``) are a range reduction plus a polynomial rather than ``jnp.sin``: XLA
CPU's ``sin`` costs ~10 ns an element against ~0.5 ns for this (and for ``tanh`` or ``exp``),
and a CPPN computes every function of every node at every pixel. Within 1.4e-7 of the true
sine for ``|x| < 1e4`` (pre-activations of [-10, 10] weights stay far below that), and the same
on every backend, so a genome renders the same picture on a CPU and a GPU.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxfool.config import ACTIVATIONS as NAMES

# pi split in three (Cody-Waite): k * _PI_A is exact for |k| < 2**15, so x - k*pi keeps its bits.
_PI_A, _PI_B, _PI_C = np.float32(3.140625), np.float32(9.67502593994140625e-4), np.float32(1.509957990978376432e-7)
# sin(r) / r as a polynomial in r^2 on |r| <= pi/2 (least squares over Chebyshev nodes).
_SIN = tuple(np.float32(c) for c in (1.0, -1.66666666e-01, 8.33333072e-03, -1.98408324e-04, 2.75239507e-06, -2.38680189e-08))


def _sin_of_rest(x: jax.Array, m: jax.Array) -> jax.Array:
    """sin(x - m pi) for a float32 ``m`` (an integer, or one plus a half, below 2**15) with
    |x - m pi| <= pi/2."""
    r = ((x - m * _PI_A) - m * _PI_B) - m * _PI_C
    r2 = r * r
    p = _SIN[-1]
    for c in _SIN[-2::-1]:
        p = p * r2 + c
    return p * r


def _odd(k: jax.Array) -> jax.Array:
    return jnp.mod(k, 2.0) == 1.0


def sine(x: jax.Array) -> jax.Array:
    """sin(x) = (-1)^k sin(x - k pi), k = round(x / pi).

    >>> import numpy as np
    >>> x = np.linspace(-50, 50, 10001, dtype=np.float32)
    >>> float(np.abs(np.asarray(sine(x)) - np.sin(x.astype(np.float64))).max()) < 2e-7
    True
    """
    k = jnp.round(x * np.float32(1 / np.pi))
    s = _sin_of_rest(x, k)
    return jnp.where(_odd(k), -s, s)


def cosine(x: jax.Array) -> jax.Array:
    """cos(x) = -(-1)^k sin(x - (k + 1/2) pi), k = floor(x / pi)."""
    k = jnp.floor(x * np.float32(1 / np.pi))
    s = _sin_of_rest(x, k + 0.5)
    return jnp.where(_odd(k), s, -s)


FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # The paper's set (Sferes2 nn::cppn).
    "sine": sine,
    "sigmoid": lambda p: jnp.tanh(0.5 * p),  # = 2 (sigmoid(p) - 0.5), in one op
    "gaussian": lambda p: jnp.exp(-p * p),
    "linear": lambda p: jnp.clip(p, -3.0, 3.0) / 3.0,
    # Extras (off by default): Picbreeder-style functions.
    "cosine": cosine,
    "tanh": jnp.tanh,
    "abs": lambda p: jnp.clip(jnp.abs(p), 0.0, 3.0) / 3.0,
    "square": lambda p: jnp.clip(p * p, 0.0, 3.0) / 3.0,
}
assert tuple(FUNCTIONS) == NAMES, "the config lists the activation names"


def apply(names: tuple[str, ...], index: jax.Array, pre: jax.Array) -> jax.Array:
    """``FUNCTIONS[names[index]](pre)`` elementwise, ``index`` int32 broadcasting against ``pre``.
    Every function is computed and one selected (under ``vmap`` a branch would run all anyway)."""
    fns = [FUNCTIONS[n] for n in names]
    if len(fns) == 1:
        return fns[0](pre)
    return jnp.select([index == i for i in range(len(fns))], [f(pre) for f in fns])
