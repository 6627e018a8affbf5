"""Emitters: the sources of a generation's offspring (QDax / pyribs terminology).

An emitter is a static object (sizes fixed at compile time) with a pytree state that lives in
the MAP-Elites state, so it is vmapped over seeds and checkpointed with the archive::

    state = emitter.init(key, archive, params)
    genomes, parents, state = emitter.emit(key, archive, state, generation, params)
    state = emitter.tell(key, state, archive, genomes, parents, scores, params)

``params`` is one lane's :class:`jaxfool.map_elites.Params`: the encoding's rates
(``params.variation``), the log-confidence that counts as fooled (``params.log_threshold``)
and the classifier's weights (``params.model``).

``parents`` int32 ``[n]`` names the cell each offspring came from; ``scores`` float32
``[n, C]`` are its log-probabilities; ``archive`` in ``tell`` is the archive *before* the
offspring were inserted. Several emitters split one generation's batch ("mixed emitters").

* :class:`MutationEmitter`: the paper's operators: parents from the archive, optional SBX,
  then the encoding's mutation.
* :class:`ESEmitter`: CMA-ME-style improvement emitters powered by evosax: E independent
  strategy instances (Sep-CMA-ES, SNES, OpenES or CMA-ES), each centred on an elite, propose
  offspring with evosax's ask; offspring are ranked by how much they improve the archive and
  told back; an instance that improves nothing for ``restart_after`` generations restarts at
  another elite.
* :class:`GradientEmitter`: differentiable quality-diversity (a CMA-MEGA / OMG-MEGA-like
  refinement): E instances, each on an elite, take one Adam step per generation on the genes
  (direct: pixels; CPPN: the weights and biases of the elite's topology) toward their cell's
  log-probability; instances spread over the cells, and one that improves nothing for
  ``restart_after`` generations moves to the least attended cell's elite, or to a fresh random
  genome.

Every emitter says what it spends: ``evaluations`` per generation (offspring scored, plus a
gradient emitter's forward and backward passes), which :meth:`MapElites.evaluations` counts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxfool.archive import Archive, where_rows
from jaxfool.config import ES_STRATEGIES, EVEN_POPULATION, SELECTIONS  # noqa: F401 (re-exported)


def _selection_weights(archive: Archive, selection: str, log_threshold: jax.Array) -> jax.Array:
    """float32 ``[C]``: how likely each cell is to be picked under ``selection`` (unnormalised)."""
    weights = archive.filled.astype(jnp.float32)
    if selection == "unique":
        same = (archive.generation[:, None] == archive.generation[None, :]) & (
            archive.offspring[:, None] == archive.offspring[None, :]
        )
        weights = weights / jnp.maximum(same.sum(axis=1), 1)
    elif selection == "unfooled":
        below = weights * (archive.fitness < log_threshold)
        weights = jnp.where(below.sum() > 0, below, weights)
    return weights


def select_parents(key: jax.Array, archive: Archive, n: int, selection: str, log_threshold: jax.Array) -> jax.Array:
    """Picks ``n`` parent cells, int32 ``[n]``.

    * ``uniform``: uniform over occupied cells, as the paper's code (an image holding k cells
      is k times as likely to be picked).
    * ``unique``: uniform over distinct elite images.
    * ``unfooled``: uniform over occupied cells whose elite is still below ``log_threshold``
      (a traced float32 log-confidence)
      (all occupied cells once every cell is above): the budget goes where work remains.
    """
    weights = _selection_weights(archive, selection, log_threshold)
    return jax.random.choice(key, archive.num_cells, (n,), p=weights / weights.sum()).astype(jnp.int32)


def spread_cells(key: jax.Array, archive: Archive, busy: jax.Array, n: int, selection: str, log_threshold: jax.Array) -> jax.Array:
    """``n`` cells for instances that (re)start, int32 ``[n]``: the cells ``selection`` may pick,
    those with the fewest instances already on them (``busy`` int32 ``[C]``) first, ties in random
    order, wrapping round when ``n`` exceeds them. Drawing cells independently would leave some
    cell without any instance for as long as the others keep improving.

    >>> from jaxfool.archive import empty_archive
    >>> a = empty_archive(jnp.zeros((4, 1)), 4).replace(filled=jnp.ones(4, bool))
    >>> sorted(spread_cells(jax.random.key(0), a, jnp.array([1, 0, 0, 2]), 2, "uniform", 0.0).tolist())
    [1, 2]
    """
    eligible = _selection_weights(archive, selection, log_threshold) > 0
    order = jnp.argsort(jnp.where(eligible, busy + jax.random.uniform(key, busy.shape), jnp.inf))
    return order[jnp.arange(n) % jnp.maximum(eligible.sum(), 1)].astype(jnp.int32)


def archive_gain(archive: Archive, scores: jax.Array) -> jax.Array:
    """float32 ``[n]``: how much each offspring improves the archive, ``max_c (score - elite)``.

    Positive: it beats some elite. Negative: how far it is from beating the closest one, which
    still ranks offspring usefully for a strategy's update.
    """
    elite = jnp.where(archive.filled, archive.fitness, -1e30)
    scores = jnp.where(jnp.isfinite(scores), scores, -1e30)
    return jnp.max(scores - elite[None, :], axis=1)


@dataclasses.dataclass(frozen=True)
class MutationEmitter:
    """The paper's variation: select parents, optionally cross two with SBX, mutate."""

    encoding: Any
    batch_size: int
    selection: str = "uniform"
    crossover: bool = False

    @property
    def evaluations(self) -> int:
        """Evaluations per generation: its offspring."""
        return self.batch_size

    def init(self, key: jax.Array, archive: Archive, params: Any) -> jax.Array:
        return jnp.zeros((), jnp.int32)  # stateless; a leaf keeps checkpoints simple

    def emit(self, key, archive: Archive, state, generation, params):
        k_select, k_mate, k_cross, k_mutate = jax.random.split(key, 4)
        parents = select_parents(k_select, archive, self.batch_size, self.selection, params.log_threshold)
        genomes = jax.tree.map(lambda g: g[parents], archive.genomes)
        if self.crossover:
            mates = select_parents(k_mate, archive, self.batch_size, self.selection, params.log_threshold)
            mated = jax.tree.map(lambda g: g[mates], archive.genomes)
            genomes = self.encoding.crossover(k_cross, genomes, mated, params.variation)
        return self.encoding.mutate(k_mutate, genomes, generation, params.variation), parents, state

    def tell(self, key, state, archive, genomes, parents, scores, params):
        return state


@struct.dataclass
class ESState:
    """E strategy instances: evosax states (leaves ``[E, ...]``), their centre cells and how
    many generations each has gone without improving the archive."""

    strategy: Any
    center: jax.Array
    stale: jax.Array
    template: Any = ()  # encoding.gene_template of the centres, leaves [E, ...] (CPPN: their topology; direct: ())


@dataclasses.dataclass(frozen=True, eq=False)
class ESEmitter:
    """CMA-ME-style improvement emitter over an encoding's real-valued genes.

    Attributes:
      encoding: must offer ``num_genes``, ``genes(genomes, params) -> [n, D] in [0, 1]``,
        ``gene_template(genomes)`` (what the genes leave out) and ``with_genes(template, genes,
        params)`` (direct: the pixels, no template; CPPN: the weights and biases of the centre
        elite's topology, which the instance keeps until it restarts).
      strategy: a key of :data:`ES_STRATEGIES` (``cma_es`` is O(D^3) per generation).
      batch_size: offspring per generation; ``batch_size // population`` instances.
      population: offspring per instance per generation.
      std_init: initial search width (genes are in [0, 1]).
      restart_after: generations without improvement before an instance moves to a new elite.
      selection: how restarting instances pick their elite (as parent selection).
    """

    encoding: Any
    strategy: str
    batch_size: int
    population: int = 20
    std_init: float = 0.1
    restart_after: int = 10
    selection: str = "uniform"

    def __post_init__(self):
        if self.strategy not in ES_STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(ES_STRATEGIES)}")
        if self.batch_size % self.population or self.batch_size < self.population:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of population {self.population}")
        from evosax import algorithms

        # Built here, outside any trace: evosax strategies compute arrays when constructed.
        dims = self.encoding.num_genes
        es = getattr(algorithms, ES_STRATEGIES[self.strategy])(
            population_size=self.population, solution=jnp.zeros(dims, jnp.float32)
        )
        params = es.default_params
        params = params.replace(std_init=self.std_init) if hasattr(params, "std_init") else params
        object.__setattr__(self, "_es", es)
        object.__setattr__(self, "_es_params_value", params)

    @property
    def instances(self) -> int:
        return self.batch_size // self.population

    @property
    def evaluations(self) -> int:
        """Evaluations per generation: its offspring."""
        return self.batch_size

    def _es_params(self):
        return self._es_params_value

    def _start(self, key: jax.Array, archive: Archive, params: Any) -> tuple[Any, jax.Array, Any]:
        k_cell, k_init = jax.random.split(key)
        centers = select_parents(k_cell, archive, self.instances, self.selection, params.log_threshold)
        elites = jax.tree.map(lambda g: g[centers], archive.genomes)
        means = self.encoding.genes(elites, params.variation)
        init = jax.vmap(lambda k, m: self._es.init(k, m, self._es_params()))
        return init(jax.random.split(k_init, self.instances), means), centers, self.encoding.gene_template(elites)

    def init(self, key: jax.Array, archive: Archive, params: Any) -> ESState:
        strategy, centers, template = self._start(key, archive, params)
        return ESState(strategy, centers, jnp.zeros(self.instances, jnp.int32), template)

    def emit(self, key, archive: Archive, state: ESState, generation, params):
        ask = jax.vmap(lambda k, s: self._es.ask(k, s, self._es_params()))
        population, strategy = ask(jax.random.split(key, self.instances), state.strategy)  # [E, lambda, D]
        parents = jnp.repeat(state.center, self.population)
        template = jax.tree.map(lambda g: jnp.repeat(g, self.population, axis=0), state.template)
        genomes = self.encoding.with_genes(template, jnp.clip(population.reshape(self.batch_size, -1), 0.0, 1.0), params.variation)
        return genomes, parents, state.replace(strategy=strategy)

    def tell(self, key, state: ESState, archive: Archive, genomes, parents, scores, params) -> ESState:
        k_tell, k_restart = jax.random.split(key)
        gain = archive_gain(archive, scores).reshape(self.instances, self.population)
        # evosax minimises; the evaluated (clipped, 8-bit) points are what it is told about.
        evaluated = self.encoding.genes(genomes, params.variation).reshape(self.instances, self.population, -1)
        tell = jax.vmap(lambda k, x, f, s: self._es.tell(k, x, f, s, self._es_params())[0])
        strategy = tell(jax.random.split(k_tell, self.instances), evaluated, -gain, state.strategy)
        stale = jnp.where((gain > 0).any(axis=1), 0, state.stale + 1)
        restart = stale >= self.restart_after
        fresh, centers, template = self._start(k_restart, archive, params)
        return where_rows(restart, ESState(fresh, centers, jnp.zeros_like(stale), template),
                          ESState(strategy, state.center, stale, state.template))


@struct.dataclass
class GradientState:
    """E gradient instances: their current genes ``[E, D]`` in [0, 1], Adam states (leaves
    ``[E, ...]``, one step count each), centre cells, generations without improving (neither
    the archive nor their own best), the gene templates (CPPN: topology) and their best
    log-probability of their centre's class so far (float32 ``[E]``)."""

    genes: jax.Array
    optimizer: Any
    center: jax.Array
    stale: jax.Array
    template: Any = ()
    best: jax.Array = ()


@dataclasses.dataclass(frozen=True, eq=False)
class GradientEmitter:
    """Gradient ascent on elites' genes toward their cell's log-probability, inside MAP-Elites.

    Each generation every instance takes one Adam step on its genes (ascending the
    log-probability of its centre cell's class, through a differentiable render whose 8-bit
    rounding passes gradients straight through) and emits the result, which competes in every
    cell like any offspring. Non-finite gradients count as zero, so a NaN never moves genes.

    Attributes:
      encoding: must offer ``num_genes``, ``genes``, ``gene_template``, ``with_genes`` and
        ``render_genes`` (differentiable in the genes).
      score_fn: the engine's scoring (:func:`jaxfool.scoring.make_score_fn`), whose
        ``value_and_grad`` gives the forward and backward pass.
      batch_size: instances, one offspring each per generation.
      learning_rate: Adam's step on genes in [0, 1] (CPPN genes map to
        [-weight_range, weight_range], so 0.001 moves a weight by about 0.02 at range 10).
      restart_after: generations without improving the archive or its own best before an
        instance moves on (to the cell :func:`spread_cells` gives it); it also moves once its
        cell reaches the threshold, while some cell has not.
      selection: which cells (re)starting instances may take (:func:`spread_cells`: the
        least attended first).
      fresh: probability that a (re)starting instance climbs from a new random genome (a new
        lineage) instead of its cell's elite: once an elite's CPPN weights are climbed out,
        climbing it again retraces the same path.
    """

    encoding: Any
    score_fn: Any
    batch_size: int
    learning_rate: float = 0.05
    restart_after: int = 10
    selection: str = "uniform"
    fresh: float = 0.0

    @property
    def evaluations(self) -> int:
        """Evaluations per generation: per instance a forward and a backward pass for its
        gradient, and the scoring of its offspring."""
        return 3 * self.batch_size

    def _optimizer(self):
        return optax.adam(self.learning_rate)

    def _start(self, key: jax.Array, archive: Archive, params: Any, busy: jax.Array, rank: jax.Array) -> GradientState:
        """New instances in every row; row i takes the ``rank[i]``-th of the cells
        :func:`spread_cells` proposes given ``busy`` instances per cell."""
        if self.fresh > 0:  # (split only when needed: the cells' draw stays the same without)
            key, k_new, k_coin = jax.random.split(key, 3)
        centers = spread_cells(key, archive, busy, self.batch_size, self.selection, params.log_threshold)[rank]
        starts = jax.tree.map(lambda g: g[centers], archive.genomes)
        best = jnp.where(archive.filled[centers], archive.fitness[centers], -jnp.inf)
        if self.fresh > 0:
            new = jax.random.uniform(k_coin, (self.batch_size,)) < self.fresh
            starts = where_rows(new, self.encoding.init(k_new, self.batch_size, params.variation), starts)
            best = jnp.where(new, -jnp.inf, best)
        genes = self.encoding.genes(starts, params.variation)
        return GradientState(
            genes=genes,
            optimizer=jax.vmap(self._optimizer().init)(genes),
            center=centers,
            stale=jnp.zeros(self.batch_size, jnp.int32),
            template=self.encoding.gene_template(starts),
            best=best.astype(jnp.float32),
        )

    def init(self, key: jax.Array, archive: Archive, params: Any) -> GradientState:
        return self._start(key, archive, params, jnp.zeros(archive.num_cells, jnp.int32), jnp.arange(self.batch_size))

    def emit(self, key, archive: Archive, state: GradientState, generation, params):
        images, pullback = jax.vjp(lambda g: self.encoding.render_genes(state.template, g, params.variation), state.genes)
        weights = jax.nn.one_hot(state.center, archive.num_cells, dtype=jnp.float32)
        _, image_grad = self.score_fn.value_and_grad(params.model, images, weights)
        (grad,) = pullback(image_grad)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        # optax minimises: descend the negative log-probability.
        updates, optimizer = jax.vmap(self._optimizer().update)(-grad, state.optimizer, state.genes)
        genes = jnp.clip(state.genes + updates, 0.0, 1.0)
        genomes = self.encoding.with_genes(state.template, genes, params.variation)
        return genomes, state.center, state.replace(genes=genes, optimizer=optimizer)

    def tell(self, key, state: GradientState, archive: Archive, genomes, parents, scores, params) -> GradientState:
        own = jnp.take_along_axis(scores, state.center[:, None], axis=1)[:, 0]
        own = jnp.where(jnp.isfinite(own), own, -jnp.inf)
        improved = (archive_gain(archive, scores) > 0) | (own > state.best)  # a fresh lineage climbs below the elites
        stale = jnp.where(improved, 0, state.stale + 1)
        state = state.replace(stale=stale, best=jnp.maximum(state.best, own))
        # An instance whose cell is fooled moves on while others are not: climbing past the
        # threshold always "improves" the archive, so staleness alone would keep it there.
        fooled = archive.fitness >= params.log_threshold
        done = fooled[state.center] & (archive.filled & ~fooled).any()
        restart = (stale >= self.restart_after) | done
        busy = jnp.zeros(archive.num_cells, jnp.int32).at[state.center].add(~restart)
        moved = self._start(key, archive, params, busy, jnp.cumsum(restart) - 1)
        return where_rows(restart, moved, state)
