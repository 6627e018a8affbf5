"""A multilayer perceptron for MNIST: flatten -> (dense + ReLU) x len(hidden) -> dense n.

The fooling-susceptibility benchmark's model without convolutions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Input float32 ``[N, H, W, ch]`` in [0, 1]; output logits ``[N, num_classes]``."""

    hidden: tuple[int, ...] = (512, 512)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
        return nn.Dense(self.num_classes, name="out")(x)


def init_mlp(key: jax.Array, num_classes: int = 10, hidden: tuple[int, ...] = (512, 512), input_shape=(28, 28, 1)):
    """Returns ``(module, params)`` with freshly initialised parameters."""
    module = MLP(hidden=tuple(hidden), num_classes=num_classes)
    params = module.init(key, jnp.zeros((1, *input_shape), jnp.float32))["params"]
    return module, params
