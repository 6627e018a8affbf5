"""MAP-Elites with one cell per class, fused into one compiled step.

A generation selects ``B`` parents from the occupied cells, varies them, renders and scores
the offspring with the classifier, and inserts them into every cell they beat::

    engine = MapElites(encoding, score_fn, num_cells=10, emitters=(MutationEmitter(encoding, 200),))
    state = engine.init(key, params)                  # generation 0: B random images
    state, metrics = engine.step(state, key, params)  # one generation

:func:`run_generations` runs many generations of many independent *lanes* in one jitted
``lax.scan`` over ``vmap`` ped states, so the host is touched only between chunks. A lane is
one (config, seed) pair: its own key, its own state and its own row of traced ``Params``
(rates, threshold, generation cap), while the classifier's weights are shared. The seeds of a
run and the points of a sweep are lanes alike, so a sweep over traced fields is one program.
The key of generation ``g`` is ``fold_in(lane_key, g)``: a lane's random stream does not
depend on how it is chunked, interrupted and resumed, nor on which other lanes run beside it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxfool.archive import Archive, empty_archive, insert
from jaxfool.config import default
from jaxfool.encodings.base import Encoding

ScoreFn = Callable[[Any, jax.Array], jax.Array]


@struct.dataclass
class Params:
    """Traced inputs of a step. In :func:`run_generations` and :func:`init_seeds` every field
    but ``model`` has a leading lane axis ``[L]`` (see :func:`stack_lanes`).

    Attributes:
      model: the classifier's parameters, shared by all lanes.
      variation: the encoding's rates (``DirectParams`` / ``CPPNParams``).
      log_threshold: float32, log of the confidence that counts as fooled.
      stop: float32, a lane freezes once every cell has fitness >= ``stop`` (+inf: never).
      max_generation: int32, the generation cap.
    """

    model: Any
    variation: Any
    log_threshold: Any = np.float32(np.log(default("threshold")))
    stop: Any = np.float32(np.inf)
    max_generation: Any = np.int32(np.iinfo(np.int32).max)


LANE_AXES = Params(model=None, variation=0, log_threshold=0, stop=0, max_generation=0)  # vmap in_axes


def stack_lanes(model: Any, rows: list[Params]) -> Params:
    """One :class:`Params` whose per-lane fields stack ``rows`` (their ``model`` is ignored)
    along a new leading axis, sharing ``model``.

    >>> import numpy as np
    >>> from jaxfool.encodings import DirectParams
    >>> rows = [Params(None, DirectParams(mutation_rate=np.float32(r))) for r in (0.1, 0.2, 0.3)]
    >>> lanes = stack_lanes({"w": np.ones(4)}, rows)
    >>> lanes.variation.mutation_rate.shape, lanes.model["w"].shape
    ((3,), (4,))
    """
    per_lane = [r.replace(model=None) for r in rows]
    stacked = jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]), *per_lane)
    return stacked.replace(model=model)


@struct.dataclass
class State:
    """One run's dynamic state.

    Attributes:
      archive: the elites.
      generation: int32 scalar: offspring generations done (0 after :meth:`MapElites.init`).
      emitters: one state per emitter (a tuple of pytrees).
    """

    archive: Archive
    generation: jax.Array
    emitters: tuple = ()


@struct.dataclass
class Metrics:
    """Per generation: ``fitness`` float32 ``[C]`` (best log-probability per cell, -inf if
    empty), ``improved`` bool ``[C]`` (cells that got a new elite), ``generation`` int32."""

    fitness: jax.Array
    improved: jax.Array
    generation: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class MapElites:
    """The static half of the algorithm (sizes and choices fixed at compile time).

    Attributes:
      encoding: genomes <-> images (:mod:`jaxfool.encodings`).
      score_fn: ``score_fn(model_params, images [B, H, W, ch]) -> float32 [B, C]``, the
        log-probability of each cell's class (see :func:`jaxfool.scoring.make_score_fn`).
      num_cells: C.
      emitters: sources of offspring (:mod:`jaxfool.emitters`); they split the batch.
      recombine: whether C more evaluations per generation go to one child per cell made by
        the encoding's ``recombine``: the cell's elite plus the summed offspring (of this
        generation) that improved it (needs an encoding with ``recombine``). The children need
        this generation's scores, so they are scored in a second, small forward pass.
      init_size: random images at generation 0 (default: :attr:`batch_size`).
      batch_sharding: where each generation's offspring live (a ``NamedSharding`` splitting
        axis 0 over devices, see :mod:`jaxfool.distributed`); ``None``: wherever XLA likes.

    Engines compare by identity, so one engine is one compiled program.
    """

    encoding: Encoding
    score_fn: ScoreFn
    num_cells: int
    emitters: tuple
    recombine: bool = False
    init_size: int | None = None
    batch_sharding: Any = None

    @property
    def batch_size(self) -> int:
        """Images scored per generation: the emitters' offspring plus the recombined children."""
        return sum(e.batch_size for e in self.emitters) + (self.num_cells if self.recombine else 0)

    @property
    def evaluations_per_generation(self) -> int:
        """:attr:`batch_size` plus what emitters spend beyond scoring their offspring (a
        gradient emitter's forward and backward passes)."""
        return sum(e.evaluations for e in self.emitters) + (self.num_cells if self.recombine else 0)

    def init(self, key: jax.Array, params: Params) -> State:
        """Scores random genomes into an empty archive (generation 0); starts the emitters."""
        k_genomes, *k_emitters = jax.random.split(key, 1 + len(self.emitters))
        genomes = self.encoding.init(k_genomes, self.init_size or self.batch_size, params.variation)
        archive = empty_archive(jax.tree.map(lambda g: g[0], genomes), self.num_cells)
        scores = self.score_fn(params.model, self.encoding.render(genomes))
        parents = jnp.full((scores.shape[0],), -1, jnp.int32)
        archive, _ = insert(archive, genomes, scores, jnp.int32(0), parents)
        emitters = tuple(e.init(k, archive, params) for e, k in zip(self.emitters, k_emitters))
        return State(archive=archive, generation=jnp.int32(0), emitters=emitters)

    def step(self, state: State, key: jax.Array, params: Params) -> tuple[State, Metrics]:
        """One generation: emit, render, score, (recombine, score,) insert, tell the emitters."""
        k_emit, k_tell = jax.random.split(key)
        archive = state.archive
        generation = state.generation + 1
        emitted = [
            e.emit(k, archive, s, generation, params)
            for e, s, k in zip(self.emitters, state.emitters, jax.random.split(k_emit, len(self.emitters)))
        ]
        offspring = jax.tree.map(lambda *g: jnp.concatenate(g), *[o[0] for o in emitted])
        parents = jnp.concatenate([o[1] for o in emitted])
        if self.batch_sharding is not None:
            offspring = jax.lax.with_sharding_constraint(offspring, self.batch_sharding)
        scores = self.score_fn(params.model, self.encoding.render(offspring))
        n = parents.shape[0]
        all_offspring, all_scores, all_parents = offspring, scores, parents
        if self.recombine:
            gained = scores[jnp.arange(n), parents] > archive.fitness[parents]
            weights = jax.nn.one_hot(parents, self.num_cells) * gained[:, None]
            children = self.encoding.recombine(archive.genomes, offspring, weights, params.variation)
            all_offspring = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), offspring, children)
            all_scores = jnp.concatenate([scores, self.score_fn(params.model, self.encoding.render(children))])
            all_parents = jnp.concatenate([parents, jnp.arange(self.num_cells, dtype=jnp.int32)])
        new_archive, improved = insert(archive, all_offspring, all_scores, generation, all_parents)
        told, start = [], 0
        for e, (_, _, s), k in zip(self.emitters, emitted, jax.random.split(k_tell, len(self.emitters))):
            part = slice(start, start + e.batch_size)
            start += e.batch_size
            told.append(e.tell(k, s, archive, jax.tree.map(lambda g: g[part], offspring), parents[part], scores[part], params))
        state = State(archive=new_archive, generation=generation, emitters=tuple(told))
        return state, Metrics(fitness=new_archive.fitness, improved=improved, generation=generation)

    def evaluations(self, generation: Any) -> Any:
        """Evaluations after ``generation`` offspring generations (images scored, generation 0's
        random images included, and gradient emitters' passes): the one place they are counted.
        Works on ints and on numpy arrays of generation counters (frozen lanes stop counting
        because their counters stop)."""
        init, per = self.init_size or self.batch_size, self.evaluations_per_generation
        if isinstance(generation, (int, np.integer)):
            return init + per * int(generation)
        return init + per * np.asarray(generation, np.int64)


def seed_keys(seeds: list[int] | tuple[int, ...]) -> jax.Array:
    """One base key per lane: typed PRNG keys ``[L]``."""
    return jnp.stack([jax.random.key(s) for s in seeds])


def _over_lanes(fn, mesh, num_args: int):
    """``fn(params, *lane_args)`` as is, or, with a device ``mesh``, run on each device for its
    own block of lanes (``shard_map``; every output has lanes first). Lanes never talk to each
    other, so nothing is gathered or computed twice during a chunk."""
    if mesh is None:
        return fn
    from jax.sharding import PartitionSpec

    lanes = PartitionSpec(mesh.axis_names)
    per_lane = Params(model=PartitionSpec(), variation=lanes, log_threshold=lanes, stop=lanes, max_generation=lanes)
    return jax.shard_map(fn, mesh=mesh, in_specs=(per_lane, *[lanes] * num_args), out_specs=lanes, check_vma=False)


@functools.partial(jax.jit, static_argnames=("engine", "mesh"))
def init_seeds(engine: MapElites, params: Params, keys: jax.Array, mesh: Any = None) -> State:
    """Initial states of L lanes: leaves ``[L, ...]``. ``keys``: ``[L]`` lane keys; ``params``
    per lane (:func:`stack_lanes`); ``mesh``: split the lanes over its devices."""

    def lanes(p, k):
        return jax.vmap(lambda k, p: engine.init(jax.random.fold_in(k, 0), p), in_axes=(0, LANE_AXES))(k, p)

    return _over_lanes(lanes, mesh, 1)(params, keys)


@functools.partial(jax.jit, static_argnames=("engine", "length", "mesh"))
def run_generations(
    engine: MapElites,
    params: Params,
    state: State,
    keys: jax.Array,
    length: int,
    mesh: Any = None,
) -> tuple[State, Metrics]:
    """Runs ``length`` generations of L lanes in one compiled ``lax.scan``.

    A lane is frozen (its state, generation counter included, stops changing) once every cell
    has fitness >= its ``params.stop`` or it has done ``params.max_generation`` generations.
    Both are traced, so every chunk of a run, and every grid of traced values of a sweep,
    reuses one compiled program.

    Args:
      engine: static algorithm.
      params: ``model`` shared; every other field ``[L]`` (:func:`stack_lanes`).
      state: leaves ``[L, ...]``.
      keys: ``[L]`` lane keys; generation g of lane l uses ``fold_in(keys[l], g)``.
      length: generations in this chunk (static).
      mesh: a device mesh to split the lanes over (static; ``None``: no splitting).

    Returns:
      ``(state, metrics)`` with metrics leaves ``[length, L, ...]``.
    """

    def one_lane(s: State, key: jax.Array, p: Params) -> tuple[State, Metrics]:
        new, metrics = engine.step(s, jax.random.fold_in(key, s.generation + 1), p)
        frozen = jnp.all(s.archive.fitness >= p.stop) | (s.generation >= p.max_generation)
        new = jax.tree.map(lambda old, upd: jnp.where(frozen, old, upd), s, new)
        return new, Metrics(new.archive.fitness, metrics.improved & ~frozen, new.generation)

    def chunk(p, s, k):
        def body(s, _):
            return jax.vmap(one_lane, in_axes=(0, 0, LANE_AXES))(s, k, p)

        s, metrics = jax.lax.scan(body, s, None, length=length)
        return s, jax.tree.map(lambda m: jnp.moveaxis(m, 0, 1), metrics)  # lanes first, for shard_map

    state, metrics = _over_lanes(chunk, mesh, 2)(params, state, keys)
    return state, jax.tree.map(lambda m: jnp.moveaxis(m, 1, 0), metrics)
