"""Layers with backward passes that are fast on XLA's CPU backend.

XLA CPU lowers the gradient of a convolution and of ``reduce_window`` max-pooling to kernels
that are 5-20x slower than the forward pass, and slower still inside ``lax.scan``. These
layers keep XLA's forward ops and give a cheaper backward pass:

* :func:`conv2d_valid`: d/dx is a forward convolution of the padded output gradient with the
  flipped kernel; d/dkernel is ``k*k`` small GEMMs, one per kernel offset.
* :func:`max_pool_2x2`: the gradient is routed through a mask of the maxima (split evenly
  among ties) rather than XLA's select-and-scatter.

Both match XLA's own gradients to float32 rounding (tests check it).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


@jax.custom_vjp
def conv2d_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'VALID' convolution: ``[N, H, W, I] * [k, k, I, O] -> [N, H-k+1, W-k+1, O]``."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DN)


def _conv_fwd(x, kernel):
    return conv2d_valid(x, kernel), (x, kernel)


def _conv_bwd(residual, g):
    x, kernel = residual
    k = kernel.shape[0]
    oh, ow = g.shape[1], g.shape[2]
    padded = jnp.pad(g, ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0)))
    dx = conv2d_valid(padded, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    dkernel = jnp.stack(
        [
            jnp.stack([jnp.einsum("nhwi,nhwo->io", x[:, i : i + oh, j : j + ow], g) for j in range(k)])
            for i in range(k)
        ]
    )
    return dx, dkernel


conv2d_valid.defvjp(_conv_fwd, _conv_bwd)


def _upsample2(a: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(a, 2, axis=1), 2, axis=2)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2: ``[N, H, W, C] -> [N, H//2, W//2, C]`` (H, W even)."""
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _pool_bwd(residual, g):
    x, y = residual
    n, h, w, c = y.shape
    mask = x == _upsample2(y)
    ties = mask.reshape(n, h, 2, w, 2, c).sum(axis=(2, 4))
    return (jnp.where(mask, _upsample2(g / ties), 0.0),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)


class ConvValid(nn.Module):
    """``nn.Conv(features, (k, k), padding="VALID")`` with the fast backward pass."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return conv2d_valid(x, kernel) + bias
