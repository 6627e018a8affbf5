"""The Caffe MNIST LeNet used by the paper.

conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> dense 500 + ReLU -> dense n.
As in Caffe's ``lenet_train_test.prototxt`` there is no nonlinearity after the convolutions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfool.models.layers import ConvValid, max_pool_2x2


class LeNet(nn.Module):
    """Caffe LeNet. Input float32 ``[N, 28, 28, 1]`` in [0, 1]; output logits ``[N, num_classes]``."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = max_pool_2x2(ConvValid(20, 5, name="conv1")(x))
        x = max_pool_2x2(ConvValid(50, 5, name="conv2")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(500, name="ip1")(x))
        return nn.Dense(self.num_classes, name="ip2")(x)


def init_lenet(key: jax.Array, num_classes: int = 10):
    """Returns ``(module, params)`` with freshly initialised parameters."""
    module = LeNet(num_classes=num_classes)
    params = module.init(key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    return module, params
