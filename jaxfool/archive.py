"""The MAP-Elites archive: one cell per class, each holding its best image ("elite").

The archive is a pytree of dense arrays (QDax's repertoire): cells never move, empty cells
have fitness -inf, and insertion is a pure function with no Python loop over individuals or
cells, so it compiles into the fused step.

Fitness is the log of the class's softmax probability: the same order as the probability the
paper uses, but it still separates images whose probability rounds to 1.0 in float32.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Archive:
    """C cells.

    Attributes:
      genomes: pytree with leaves ``[C, ...]``: each cell's elite genome.
      fitness: float32 ``[C]``: log-probability of the cell's class for its elite; -inf if empty.
      filled: bool ``[C]``.
      generation: int32 ``[C]``: generation that found the elite (-1 if empty).
      parent: int32 ``[C]``: cell whose elite was the elite's parent (-1: random initial image).
      offspring: int32 ``[C]``: the elite's index in its generation's batch; with ``generation``
        it identifies the image, since one image may hold several cells.
    """

    genomes: Any
    fitness: jax.Array
    filled: jax.Array
    generation: jax.Array
    parent: jax.Array
    offspring: jax.Array

    @property
    def num_cells(self) -> int:
        return self.fitness.shape[-1]

    @property
    def confidence(self) -> jax.Array:
        """float32 ``[C]``: each elite's softmax probability for its class (0 if empty)."""
        return jnp.exp(self.fitness)


def where_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    """Pytree ``new`` where ``mask`` (bool ``[n]``) is set, else ``old``, row by row: every leaf
    is ``[n, ...]`` (cells of an archive, instances of an emitter).

    >>> import jax.numpy as jnp
    >>> where_rows(jnp.array([True, False]), {"a": jnp.ones((2, 3))}, {"a": jnp.zeros((2, 3))})["a"].sum(1).tolist()
    [3.0, 0.0]
    """
    return jax.tree.map(lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(o) - 1)), n, o), new, old)


def empty_archive(genome: Any, num_cells: int) -> Archive:
    """An archive of ``num_cells`` empty cells for genomes shaped like ``genome`` (one genome)."""
    return Archive(
        genomes=jax.tree.map(lambda g: jnp.zeros((num_cells, *jnp.shape(g)), jnp.asarray(g).dtype), genome),
        fitness=jnp.full((num_cells,), -jnp.inf, jnp.float32),
        filled=jnp.zeros((num_cells,), bool),
        generation=jnp.full((num_cells,), -1, jnp.int32),
        parent=jnp.full((num_cells,), -1, jnp.int32),
        offspring=jnp.full((num_cells,), -1, jnp.int32),
    )


def insert(
    archive: Archive,
    genomes: Any,
    scores: jax.Array,
    generation: jax.Array,
    parents: jax.Array,
) -> tuple[Archive, jax.Array]:
    """Lets every offspring compete in every cell, as in the paper.

    For each cell c the offspring with the highest ``scores[:, c]`` replaces the elite if it
    scores strictly higher. One image may take several cells. NaN and +-inf scores never enter.

    Args:
      archive: C cells.
      genomes: pytree with leaves ``[B, ...]``.
      scores: float32 ``[B, C]``: log-probability of each cell's class for each offspring.
      generation: int32 scalar, recorded for new elites.
      parents: int32 ``[B]``: the cell each offspring's parent came from (-1 for none).

    Returns:
      ``(archive, improved)`` with ``improved`` bool ``[C]``: which cells got a new elite.
    """
    scores = jnp.where(jnp.isfinite(scores), scores, -jnp.inf)
    best = jnp.argmax(scores, axis=0)  # [C]
    best_score = jnp.take_along_axis(scores, best[None, :], axis=0)[0]
    improved = best_score > archive.fitness
    choose = functools.partial(where_rows, improved)
    archive = Archive(
        genomes=jax.tree.map(lambda g, old: choose(g[best], old), genomes, archive.genomes),
        fitness=choose(best_score, archive.fitness),
        filled=archive.filled | improved,
        generation=choose(jnp.broadcast_to(jnp.asarray(generation, jnp.int32), best.shape), archive.generation),
        parent=choose(parents[best].astype(jnp.int32), archive.parent),
        offspring=choose(best.astype(jnp.int32), archive.offspring),
    )
    return archive, improved
