"""What an encoding is: genomes <-> images, and how genomes vary.

An encoding is a small static object (sizes, colour space: hashable, fixed at compile time)
with pure methods; rates and other numbers that a sweep may change live in its ``Params``
pytree, so changing them never recompiles.

    genomes = enc.init(key, n, params)                # pytree, leaves [n, ...]
    children = enc.mutate(key, genomes, generation, params)
    children = enc.crossover(key, genomes, mates, params)
    images = enc.render(genomes)                      # float32 [n, H, W, ch] in [0, 1]

and, for evolution strategies and gradient emitters, real-valued genes in [0, 1]:

    genes = enc.genes(genomes, params)                # float32 [n, num_genes]
    genomes = enc.with_genes(enc.gene_template(genomes), genes, params)
    images = enc.render_genes(template, genes, params)  # the same images, differentiable in genes

Rendered images are quantised to multiples of 1/255, so an 8-bit PNG of an image holds
exactly what the classifier scored.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp


class Encoding(Protocol):
    name: str
    image_shape: tuple[int, int, int]

    def default_params(self) -> Any: ...

    def init(self, key: jax.Array, n: int, params: Any = None) -> Any: ...

    def mutate(self, key: jax.Array, genomes: Any, generation: jax.Array, params: Any) -> Any: ...

    def crossover(self, key: jax.Array, genomes: Any, mates: Any, params: Any) -> Any: ...

    def render(self, genomes: Any) -> jax.Array: ...

    def render_genes(self, template: Any, genes: jax.Array, params: Any) -> jax.Array: ...


def quantize(images: jax.Array) -> jax.Array:
    """Rounds values in [0, 1] to the 256 levels of an 8-bit image."""
    return jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0) / 255.0


def quantize_straight_through(images: jax.Array) -> jax.Array:
    """:func:`quantize`'s values with the gradient of ``clip``: the 8-bit rounding is invisible
    to reverse mode (a straight-through estimate), so gradients reach the genes.

    >>> import jax, jax.numpy as jnp
    >>> float(quantize_straight_through(jnp.float32(0.5)) * 255), float(jax.grad(quantize_straight_through)(0.5))
    (128.0, 1.0)
    """
    clipped = jnp.clip(images, 0.0, 1.0)
    return clipped + jax.lax.stop_gradient(quantize(clipped) - clipped)
