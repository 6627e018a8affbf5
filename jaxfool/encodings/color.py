"""Colour-space conversion for encodings that evolve hue, saturation and value or lightness."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _wrap(x: jax.Array, period: float) -> jax.Array:
    """``x mod period`` for ``x`` in [0, 2 period): one compare and an exact subtraction, where
    ``jnp.mod`` costs a division (it was most of rendering a 224x224 colour image on CPU)."""
    return jnp.where(x >= period, x - period, x)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """``[..., 3]`` HSV in [0, 1] -> RGB in [0, 1], as :func:`colorsys.hsv_to_rgb`."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    # f(n) = v - v*s*max(0, min(k, 4-k, 1)), k = (n + 6h) mod 6: the branch-free form.
    def channel(n):
        k = _wrap(n + h * 6.0, 6.0)
        return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

    return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def hls_to_rgb(hls: jax.Array) -> jax.Array:
    """``[..., 3]`` HLS in [0, 1] -> RGB in [0, 1], as :func:`colorsys.hls_to_rgb`."""
    h, l, s = hls[..., 0], hls[..., 1], hls[..., 2]
    a = s * jnp.minimum(l, 1.0 - l)

    def channel(n):
        k = _wrap(n + h * 12.0, 12.0)
        return l - a * jnp.clip(jnp.minimum(k - 3.0, 9.0 - k), -1.0, 1.0)

    return jnp.stack([channel(0.0), channel(8.0), channel(4.0)], axis=-1)


def to_rgb(channels: jax.Array, space: str) -> jax.Array:
    """Converts ``[..., 3]`` values in ``space`` ("rgb", "hsv" or "hls") to RGB."""
    if space == "rgb":
        return channels
    if space == "hsv":
        return hsv_to_rgb(channels)
    if space == "hls":
        return hls_to_rgb(channels)
    raise ValueError(f"unknown colour space {space!r}")
