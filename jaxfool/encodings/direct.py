"""Direct encoding: one number per pixel (and channel), as in the paper.

Genomes are uint8 ``[n, H, W, ch]``, the paper's 0..255 pixels: exactly what an 8-bit PNG
stores, and a quarter of the memory of float32 (1000 ImageNet elites: 150 MB, not 600 MB).
Variation works on the genes scaled to [0, 1] and rounds back to 256 levels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxfool.config import default
from jaxfool.encodings.base import quantize, quantize_straight_through
from jaxfool.encodings.color import to_rgb
from jaxfool.encodings.variation import halved_rate, polynomial_delta, sbx_crossover


@struct.dataclass
class DirectParams:
    """Traced numbers of the direct encoding (a sweep changes them without recompiling).

    Attributes:
      mutation_rate: per-pixel mutation probability (paper: 0.1).
      mutation_eta: polynomial mutation distribution index (paper: 15).
      crossover_rate: probability that SBX crosses two parents (paper's code: 0.5; 0 = off).
      crossover_eta: SBX distribution index (paper's code: 10).
      halving_period: halve ``mutation_rate`` every this many generations (paper's text:
        1000; 0 = never, as the paper's code).
      recombine_scale: step along the summed improving mutations (see :meth:`recombine`).
    """

    mutation_rate: float = default("mutation_rate")
    mutation_eta: float = default("mutation_eta")
    crossover_rate: float = default("crossover_rate")
    crossover_eta: float = default("crossover_eta")
    halving_period: int = default("halving_period")
    recombine_scale: float = default("recombine_scale")


@dataclasses.dataclass(frozen=True)
class DirectEncoding:
    """One gene per pixel and channel.

    Attributes:
      image_shape: ``(H, W, ch)``.
      color_space: for 3 channels, what the genes mean: "rgb", or "hsv"/"hls" converted to RGB
        when rendering (the paper's ImageNet genome was HSV). Ignored for gray images.
    """

    image_shape: tuple[int, int, int]
    color_space: str = "rgb"
    name: str = "direct"
    gradient_lr = 0.05  # (not a field) a gradient emitter's Adam step on genes in [0, 1]: ~13 pixel levels

    def default_params(self) -> DirectParams:
        return DirectParams()

    def init(self, key: jax.Array, n: int, params: DirectParams | None = None) -> jax.Array:
        """Uniform random genomes over the full range: uint8 ``[n, H, W, ch]``."""
        return jax.random.randint(key, (n, *self.image_shape), 0, 256, jnp.int32).astype(jnp.uint8)

    def mutate(self, key: jax.Array, genomes: jax.Array, generation: jax.Array, params: DirectParams) -> jax.Array:
        rate = halved_rate(params.mutation_rate, generation, params.halving_period)
        delta = polynomial_delta(key, genomes.shape, rate, params.mutation_eta)
        # In pixel units: round(255 x + 255 delta) = pixel + round(255 delta), and with nothing
        # between the multiply and the rounding, no fused multiply-add can move a pixel by one
        # on another device layout.
        moved = genomes.astype(jnp.int32) + jnp.round(255.0 * delta).astype(jnp.int32)
        return jnp.clip(moved, 0, 255).astype(jnp.uint8)

    def crossover(self, key: jax.Array, genomes: jax.Array, mates: jax.Array, params: DirectParams) -> jax.Array:
        n = genomes.shape[0]
        child = sbx_crossover(
            key,
            _to_unit(genomes).reshape(n, -1),
            _to_unit(mates).reshape(n, -1),
            params.crossover_rate,
            params.crossover_eta,
        )
        return _to_uint8(child.reshape(genomes.shape))

    def recombine(
        self, elites: jax.Array, offspring: jax.Array, weights: jax.Array, params: DirectParams
    ) -> jax.Array:
        """One child per cell: its elite plus the sum of the mutations that improved it.

        A classifier is nearly linear over small input changes (LeNet is piecewise linear), so
        mutations that each raised a cell's score add up: one generation's successes,
        combined, make a step that best-of-B selection alone takes many generations to find.

        Args:
          elites: uint8 ``[C, H, W, ch]``.
          offspring: uint8 ``[n, H, W, ch]``, each a mutant of one cell's elite.
          weights: float32 ``[n, C]``: 1 where offspring i improved cell c, its parent's cell
            (so each row has at most one non-zero).
          params: ``recombine_scale`` scales the summed step.

        Returns:
          uint8 ``[C, H, W, ch]``.
        """
        # sum_i w[i,c] (o_i - e_c) = (W^T O)_c - (sum_i w[i,c]) e_c, since w[i,c] > 0 only when
        # parents[i] == c: no per-offspring gather or subtraction. Pixel values are integers, so
        # the float32 sums are exact in any order (no dependence on batching or devices).
        e = elites.astype(jnp.float32).reshape(elites.shape[0], -1)
        o = offspring.astype(jnp.float32).reshape(offspring.shape[0], -1)
        # HIGHEST: full float32 even where matmuls default to TF32 (GPUs), so sums stay exact.
        total = jnp.matmul(weights.T, o, precision=jax.lax.Precision.HIGHEST)
        step = total - weights.sum(axis=0)[:, None] * e
        # Round the scaled step before adding: no multiply-add for XLA to fuse differently.
        moved = e + jnp.round(params.recombine_scale * step)
        return jnp.clip(moved, 0, 255).astype(jnp.uint8).reshape(elites.shape)

    @property
    def num_genes(self) -> int:
        """Real-valued genes per genome (for evolution strategies): one per pixel channel."""
        return math.prod(self.image_shape)

    def genes(self, genomes: jax.Array, params: Any = None) -> jax.Array:
        """uint8 ``[n, H, W, ch]`` -> float32 ``[n, D]`` in [0, 1] (for evolution strategies)."""
        return _to_unit(genomes).reshape(genomes.shape[0], -1)

    def gene_template(self, genomes: jax.Array) -> tuple:
        """What of ``genomes`` the genes leave out: nothing, the genes are the whole genome."""
        return ()

    def with_genes(self, template: tuple, genes: jax.Array, params: Any = None) -> jax.Array:
        """float32 ``[n, D]`` in [0, 1] -> uint8 ``[n, H, W, ch]`` (``template``: ``()``)."""
        return _to_uint8(jnp.clip(genes, 0.0, 1.0)).reshape(genes.shape[0], *self.image_shape)

    def render(self, genomes: jax.Array) -> jax.Array:
        """uint8 ``[n, H, W, ch]`` -> float32 ``[n, H, W, ch]`` in [0, 1] (multiples of 1/255)."""
        return self._colour(_to_unit(genomes), quantize)

    def render_genes(self, template: tuple, genes: jax.Array, params: Any = None) -> jax.Array:
        """``render(with_genes(template, genes))``, differentiable in ``genes`` float32 ``[n, D]``
        (the 8-bit roundings pass gradients straight through)."""
        pixels = jnp.clip(genes, 0.0, 1.0).reshape(genes.shape[0], *self.image_shape)
        return self._colour(quantize_straight_through(pixels), quantize_straight_through)

    def _colour(self, images: jax.Array, rounding) -> jax.Array:
        if self.image_shape[-1] == 3 and self.color_space != "rgb":
            # Colour conversion leaves the 8-bit grid; round back so a PNG is exact.
            images = rounding(to_rgb(images, self.color_space))
        return images


def _to_unit(genomes: jax.Array) -> jax.Array:
    return genomes.astype(jnp.float32) / 255.0


def _to_uint8(genes: jax.Array) -> jax.Array:
    return jnp.round(genes * 255.0).astype(jnp.uint8)
