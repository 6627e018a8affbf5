"""Real-valued variation operators of the paper's code (Sferes2 ``evo_float``).

Genes live in [0, 1]. Operators are pure functions of ``(key, ...)`` over whole arrays, so
they apply to one genome or to a batch alike and never loop in Python.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def _fmix32(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection that avalanches every input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def hash_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 uniforms on [0, 1) with 24-bit resolution, cheap enough for every pixel.

    Element i is ``fmix32(fmix32(i * phi + s0) ^ s1)`` where ``(s0, s1)`` are two threefry
    words drawn from ``key``: a counter-based generator (like SplitMix) that costs ~10 integer
    operations per number against threefry's ~100, so mutating whole images is no longer
    dominated by random bits (8x faster on CPU). Values depend only on the key and the
    element's position, so they do not change with batching or sharding. Not for
    cryptography; the tests check uniformity and independence at the level mutation needs.
    """
    s0, s1 = jax.random.bits(key, (2,), jnp.uint32)
    n = math.prod(shape)
    counter = lax.iota(jnp.uint32, n) * jnp.uint32(0x9E3779B9)
    bits = _fmix32(_fmix32(counter + s0) ^ s1)
    return ((bits >> 8).astype(jnp.float32) * (1.0 / 16777216.0)).reshape(shape)


def polynomial_delta(key: jax.Array, shape: tuple[int, ...], rate: jax.Array, eta: jax.Array) -> jax.Array:
    """The moves of Deb's polynomial mutation (Sferes2's ``evo_float``): float32 ``shape``.

    Each gene mutates with probability ``rate``; a mutated gene moves by
    ``delta = (2r)^(1/(eta+1)) - 1`` if ``r < 0.5`` else ``1 - (2(1-r))^(1/(eta+1))`` for
    ``r ~ U(0, 1)`` (0 for the others). Larger ``eta`` means smaller steps (eta 15: mean
    |delta| ~ 0.06). One uniform draw ``u`` (from :func:`hash_uniform`) serves both decisions:
    given ``u < rate``, ``u / rate`` is again uniform on [0, 1).
    """
    u = hash_uniform(key, shape)
    r = u / jnp.maximum(rate, jnp.finfo(jnp.float32).tiny)
    low = r < 0.5
    # One exp(log) for both branches: pow is ~4x dearer on CPU and runs on every gene.
    magnitude = jnp.exp(jnp.log(jnp.where(low, 2.0 * r, 2.0 - 2.0 * r)) / (eta + 1.0))
    return jnp.where(u < rate, jnp.where(low, magnitude - 1.0, 1.0 - magnitude), 0.0)


def polynomial_mutation(key: jax.Array, x: jax.Array, rate: jax.Array, eta: jax.Array) -> jax.Array:
    """Polynomial mutation of genes ``x`` in [0, 1] (any shape): ``clip(x + delta, 0, 1)``.

    See :func:`polynomial_delta`.

    >>> import jax, jax.numpy as jnp
    >>> y = polynomial_mutation(jax.random.key(0), jnp.full((1000,), 0.5), 0.1, 15.0)
    >>> bool(((y != 0.5).mean() < 0.15) & ((y >= 0) & (y <= 1)).all())
    True
    """
    return jnp.clip(x + polynomial_delta(key, x.shape, rate, eta), 0.0, 1.0)


def sbx_crossover(key: jax.Array, a: jax.Array, b: jax.Array, rate: jax.Array, eta: jax.Array) -> jax.Array:
    """Bounded simulated binary crossover (Deb & Agrawal), one child per pair of parents.

    With probability ``rate`` a pair is crossed; then each gene is crossed with probability
    0.5 (as in Sferes2's SBX) and the child takes one of the two SBX offspring values at random.

    Args:
      key: PRNG key.
      a, b: float parents in [0, 1], shape ``[..., G]`` (the leading axes are pairs).
      rate: probability that a pair is crossed at all.
      eta: distribution index (10 in the paper's code).

    Returns:
      the child, shaped like ``a``.
    """
    k_pair, k_gene, k_u, k_side = jax.random.split(key, 4)
    pair_shape = a.shape[:-1] + (1,)
    crossed = (jax.random.uniform(k_pair, pair_shape) < rate) & (jax.random.uniform(k_gene, a.shape) < 0.5)
    y1, y2 = jnp.minimum(a, b), jnp.maximum(a, b)
    span = jnp.maximum(y2 - y1, 1e-12)
    u = jax.random.uniform(k_u, a.shape)
    power = 1.0 / (eta + 1.0)

    def spread(distance_to_bound):
        beta = 1.0 + 2.0 * distance_to_bound / span
        alpha = 2.0 - beta ** -(eta + 1.0)
        return jnp.where(u <= 1.0 / alpha, (u * alpha) ** power, (1.0 / (2.0 - u * alpha)) ** power)

    c1 = 0.5 * ((y1 + y2) - spread(y1) * (y2 - y1))
    c2 = 0.5 * ((y1 + y2) + spread(1.0 - y2) * (y2 - y1))
    child = jnp.where(jax.random.uniform(k_side, a.shape) < 0.5, c1, c2)
    crossed = crossed & (y2 - y1 > 1e-12)
    return jnp.clip(jnp.where(crossed, child, a), 0.0, 1.0)


def halved_rate(rate: jax.Array, generation: jax.Array, period: jax.Array) -> jax.Array:
    """``rate`` halved every ``period`` generations (the paper's text); ``period <= 0``: constant."""
    halvings = jnp.where(period > 0, generation // jnp.maximum(period, 1), 0)
    return rate * 0.5 ** halvings.astype(jnp.float32)
