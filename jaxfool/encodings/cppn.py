"""CPPN encoding: a small feed-forward network maps pixel coordinates to a pixel, grown NEAT-style.

A compositional pattern-producing network (CPPN) takes, for every pixel, its coordinates
``x, y`` and distance ``d`` from the centre (all in [-1, 1]) and a bias input of 1, and outputs
the gray level (one output) or hue, saturation and lightness/value (three outputs). Its nodes
apply sine, sigmoid, Gaussian or linear functions (the paper's set), so images are regular:
stripes, blobs, symmetries, rather than the direct encoding's noise.

Genomes are fixed-size padded arrays (TensorNEAT-style), so a population is a pytree of
``[P, ...]`` arrays that vmaps, shards and checkpoints like the direct genomes:

    node slots:       inputs (4) | outputs (1 or 3) | hidden (max_hidden)
    connection slots: max_conns, each (source, target, weight, enabled)

Acyclicity is structural: every node has a ``position`` (inputs 0, outputs 1, hidden strictly
between), and a connection always goes from a lower to a higher position. Adding a node on a
connection places it half way, so no mutation can create a cycle. Rendering sorts nodes by
position and evaluates each once, in that order: exactly what stepping the network
synchronously ``depth`` times (the paper's code) computes, in a single pass.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxfool.config import PAPER_ACTIVATIONS, default
from jaxfool.encodings import cppn_render
from jaxfool.encodings.activations import FUNCTIONS
from jaxfool.encodings.base import quantize, quantize_straight_through
from jaxfool.encodings.color import to_rgb
from jaxfool.encodings.cppn_render import INACTIVE, NUM_INPUTS
from jaxfool.encodings.variation import polynomial_mutation

ACTIVATIONS = FUNCTIONS  # name -> elementwise function


@struct.dataclass
class CPPNGenome:
    """One CPPN (leaves gain a leading ``[P]`` axis for a population).

    Attributes:
      activation: int32 ``[N]``: index into the encoding's activation set.
      node_on: bool ``[N]``: inputs and outputs always on; hidden slots on when used.
      position: float32 ``[N]``: topological key (inputs 0, outputs 1, hidden in (0, 1),
        unused 2).
      bias: float32 ``[N]``: added to each node's input sum.
      source, target: int32 ``[M]``: connection endpoints (node slot indices).
      weight: float32 ``[M]``: in [-weight_range, weight_range].
      conn_on: bool ``[M]``: disabled slots are inert padding.
    """

    activation: jax.Array
    node_on: jax.Array
    position: jax.Array
    bias: jax.Array
    source: jax.Array
    target: jax.Array
    weight: jax.Array
    conn_on: jax.Array


@struct.dataclass
class CPPNParams:
    """Traced rates of CPPN variation (defaults: the paper's code, ``dl_map_elites_images*.cpp``).

    Attributes:
      mutation_rate: per weight and bias, probability of polynomial mutation.
      mutation_eta: its distribution index.
      weight_range: weights and biases live in [-weight_range, weight_range].
      add_conn_rate, del_conn_rate, add_node_rate, del_node_rate: per offspring, probability
        of each structural mutation.
      change_conn_rate: each connection in turn is rewired (one new endpoint) with this
        probability, at most one per offspring, as the paper's code does.
      activation_rate: per node, probability that its function is resampled.
    """

    mutation_rate: float = default("mutation_rate")
    mutation_eta: float = default("mutation_eta")
    weight_range: float = default("weight_range")
    add_conn_rate: float = default("add_conn_rate")
    del_conn_rate: float = default("del_conn_rate")
    add_node_rate: float = default("add_node_rate")
    del_node_rate: float = default("del_node_rate")
    change_conn_rate: float = default("change_conn_rate")
    activation_rate: float = default("activation_rate")


def _pick(key: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A uniformly random True index of ``mask`` (any shape, flattened), and whether one exists."""
    scores = jnp.where(mask.reshape(-1), jax.random.uniform(key, (mask.size,)), -1.0)
    return jnp.argmax(scores), mask.any()


@dataclasses.dataclass(frozen=True)
class CPPNEncoding:
    """CPPN genomes rendered at ``image_shape``.

    Attributes:
      image_shape: ``(H, W, ch)``; 1 channel: one gray output; 3: three outputs.
      color_space: for 3 channels, what the outputs mean: "hls" (the paper's code), "hsv" or "rgb".
      max_hidden: hidden node slots.
      max_conns: connection slots.
      activations: names from :data:`ACTIVATIONS` that nodes may use.
      renderer: how a population is evaluated (:mod:`jaxfool.encodings.cppn_render`):
        "auto" (from the backend), "grouped" or "unrolled".
      render_memory: bytes the unrolled renderer may hold at once; it renders the population
        in as few chunks as fit.
      init_layers: hidden layer widths of the starting networks, each layer fully connected to
        the next (inputs -> layers -> outputs); empty: the paper's start, every input joined to
        every output and no hidden node.
    """

    image_shape: tuple[int, int, int]
    color_space: str = "hls"
    max_hidden: int = 12
    max_conns: int = 48
    activations: tuple[str, ...] = PAPER_ACTIVATIONS
    renderer: str = "auto"
    render_memory: int = 1 << 30
    init_layers: tuple[int, ...] = ()
    name: str = "cppn"
    # A gradient emitter's Adam step on genes in [0, 1]: 0.02 of a weight at range 10 (larger
    # steps throw sine CPPNs far off their picture).
    gradient_lr = 0.001  # not a field

    def __post_init__(self):
        unknown = [a for a in self.activations if a not in ACTIVATIONS]
        if unknown or not self.activations:
            raise ValueError(f"unknown activation {unknown[:1]}; choose from {', '.join(ACTIVATIONS)}")
        cppn_render.choose(self.renderer, "cpu")  # an unknown name fails here
        if self.max_conns < self.init_conns:
            what = "the starting layers joined fully" if self.init_layers else "every input joined to every output"
            raise ValueError(f"max_conns must be >= {self.init_conns} ({what}), got {self.max_conns}")
        if self.max_hidden < sum(self.init_layers) or any(w < 1 for w in self.init_layers):
            raise ValueError(f"init_layers {self.init_layers} need widths >= 1 summing to at most max_hidden ({self.max_hidden})")

    @property
    def init_conns(self) -> int:
        """Connections of a starting network: every layer (inputs, ``init_layers``, outputs)
        joined fully to the next."""
        widths = (NUM_INPUTS, *self.init_layers, self.num_outputs)
        return sum(a * b for a, b in zip(widths[:-1], widths[1:]))

    @property
    def num_outputs(self) -> int:
        return 1 if self.image_shape[-1] == 1 else 3

    @property
    def num_nodes(self) -> int:
        return NUM_INPUTS + self.num_outputs + self.max_hidden

    def _kinds(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """bool ``[N]`` masks: input, output and hidden slots."""
        idx = jnp.arange(self.num_nodes)
        is_input = idx < NUM_INPUTS
        is_output = (idx >= NUM_INPUTS) & (idx < NUM_INPUTS + self.num_outputs)
        return is_input, is_output, ~(is_input | is_output)

    def default_params(self) -> CPPNParams:
        return CPPNParams()

    # ---------------------------------------------------------------- init
    def init(self, key: jax.Array, n: int, params: CPPNParams | None = None) -> CPPNGenome:
        """Random starting networks of :meth:`start_topology`: random functions; weights uniform
        in [-weight_range, weight_range] for the paper's start, else He-style normal (std
        2/sqrt(fan-in), clipped to the range) so that deep sine layers do not start as noise."""
        params = params or self.default_params()
        return jax.vmap(lambda k: self._init_one(k, params.weight_range))(jax.random.split(key, n))

    def start_topology(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The starting networks' wiring: connection sources and targets (int32 ``[init_conns]``,
        source-major), every node's position (float32 ``[N]``: inputs 0, outputs 1, hidden layer
        l of L at (l+1)/(L+1), unused slots 2) and each connection's fan-in (``[init_conns]``)."""
        position = np.full(self.num_nodes, INACTIVE, np.float32)
        position[:NUM_INPUTS], position[NUM_INPUTS : NUM_INPUTS + self.num_outputs] = 0.0, 1.0
        layers, start = [np.arange(NUM_INPUTS)], NUM_INPUTS + self.num_outputs
        for depth, width in enumerate(self.init_layers):
            layers.append(np.arange(start, start + width))
            position[start : start + width] = (depth + 1) / (len(self.init_layers) + 1)
            start += width
        layers.append(np.arange(NUM_INPUTS, NUM_INPUTS + self.num_outputs))
        pairs = [(a, b) for here, there in zip(layers[:-1], layers[1:]) for a in here for b in there]
        source, target = (np.array(x, np.int32) for x in zip(*pairs))
        fan_in = np.bincount(target, minlength=self.num_nodes)[target].astype(np.float32)
        return source, target, position, fan_in

    def _init_one(self, key: jax.Array, weight_range) -> CPPNGenome:
        k_act, k_w = jax.random.split(key)
        source, target, position, fan_in = self.start_topology()
        n, pad = len(source), self.max_conns - len(source)
        if self.init_layers:
            weight = jnp.clip(jax.random.normal(k_w, (n,)) * 2.0 / np.sqrt(fan_in), -weight_range, weight_range)
        else:  # the paper's start, draw for draw as before layers existed
            weight = jax.random.uniform(k_w, (self.max_conns,), minval=-weight_range, maxval=weight_range)[:n]
        return CPPNGenome(
            activation=jax.random.randint(k_act, (self.num_nodes,), 0, len(self.activations)),
            node_on=jnp.asarray(position < INACTIVE),
            position=jnp.asarray(position),
            bias=jnp.zeros((self.num_nodes,), jnp.float32),
            source=jnp.pad(jnp.asarray(source), (0, pad)),
            target=jnp.pad(jnp.asarray(target), (0, pad)),
            weight=jnp.pad(weight, (0, pad)),
            conn_on=jnp.arange(self.max_conns) < n,
        )

    # ---------------------------------------------------------------- variation
    def mutate(self, key: jax.Array, genomes: CPPNGenome, generation: jax.Array, params: CPPNParams) -> CPPNGenome:
        """The paper's CPPN mutations, each offspring independently (vmapped)."""
        keys = jax.random.split(key, genomes.activation.shape[0])
        return jax.vmap(lambda k, g: self._mutate_one(k, g, params))(keys, genomes)

    def crossover(self, key, genomes, mates, params):
        raise NotImplementedError("the CPPN encoding has no crossover (nor had the paper's)")

    def _mutate_one(self, key: jax.Array, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        keys = jax.random.split(key, 8)  # one key per consumer
        g = self._mutate_weights(keys[0], g, p)
        g = self._mutate_activations(keys[1], g, p)
        g = self._change_connection(keys[2], g, p)
        g = self._add_connection(keys[3], g, p)
        g = self._delete_connection(keys[4], g, p)
        g = self._add_node(keys[5], g, p)
        return self._delete_node(keys[6], g, p)

    def _mutate_weights(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        k_w, k_b = jax.random.split(key)
        r = p.weight_range

        def mutate(k, v):
            unit = (v + r) / (2.0 * r)
            return polynomial_mutation(k, unit, p.mutation_rate, p.mutation_eta) * 2.0 * r - r

        return g.replace(weight=mutate(k_w, g.weight), bias=mutate(k_b, g.bias))

    # ---------------------------------------------------------------- real-valued genes
    @property
    def num_genes(self) -> int:
        """Real-valued genes per genome (for evolution strategies): every weight and bias slot."""
        return self.max_conns + self.num_nodes

    def genes(self, genomes: CPPNGenome, params: CPPNParams) -> jax.Array:
        """float32 ``[n, max_conns + num_nodes]`` in [0, 1]: weights, then biases, each mapped
        from [-weight_range, weight_range]. The topology and functions are not genes."""
        r = params.weight_range
        return (jnp.concatenate([genomes.weight, genomes.bias], axis=1) + r) / (2.0 * r)

    def gene_template(self, genomes: CPPNGenome) -> CPPNGenome:
        """What of ``genomes`` the genes leave out (topology, functions): the genomes themselves,
        whose weights and biases :meth:`with_genes` overwrites."""
        return genomes

    def with_genes(self, genomes: CPPNGenome, genes: jax.Array, params: CPPNParams) -> CPPNGenome:
        """``genomes`` (leaves ``[n, ...]``) with their weights and biases set from ``genes``
        ``[n, max_conns + num_nodes]`` (clipped to [0, 1]): an evolution strategy searches the
        continuous parameters of a fixed topology, as in CMA-ME on a CPPN. Unused slots keep 0."""
        r = params.weight_range
        values = jnp.clip(genes, 0.0, 1.0) * 2.0 * r - r
        weight, bias = values[:, : self.max_conns], values[:, self.max_conns :]
        return genomes.replace(weight=jnp.where(genomes.conn_on, weight, 0.0), bias=jnp.where(genomes.node_on, bias, 0.0))

    def _mutate_activations(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        k_flip, k_new = jax.random.split(key)
        is_input, _, _ = self._kinds()
        flip = (jax.random.uniform(k_flip, (self.num_nodes,)) < p.activation_rate) & ~is_input
        fresh = jax.random.randint(k_new, (self.num_nodes,), 0, len(self.activations))
        return g.replace(activation=jnp.where(flip, fresh, g.activation))

    def _connectable(self, g: CPPNGenome) -> jax.Array:
        """bool ``[N, N]``: (source, target) pairs a new connection may join (acyclic, no duplicate)."""
        pos = g.position
        exists = jnp.zeros((self.num_nodes, self.num_nodes), bool).at[g.source, g.target].max(g.conn_on)
        return g.node_on[:, None] & g.node_on[None, :] & (pos[:, None] < pos[None, :]) & ~exists

    def _change_connection(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        k_do, k_conn, k_side, k_end = jax.random.split(key, 4)
        # "each connection in turn with probability p, at most one": P(any) = 1 - (1-p)^E
        n_on = g.conn_on.sum()
        do = jax.random.uniform(k_do) < 1.0 - (1.0 - p.change_conn_rate) ** n_on
        c, has = _pick(k_conn, g.conn_on)
        allowed = self._connectable(g.replace(conn_on=g.conn_on.at[c].set(False)))
        move_source = jax.random.uniform(k_side) < 0.5
        candidates = jnp.where(move_source, allowed[:, g.target[c]], allowed[g.source[c], :])
        node, found = _pick(k_end, candidates)
        ok = do & has & found
        return g.replace(
            source=g.source.at[c].set(jnp.where(ok & move_source, node, g.source[c])),
            target=g.target.at[c].set(jnp.where(ok & ~move_source, node, g.target[c])),
        )

    def _add_connection(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        k_do, k_pair, k_slot, k_w = jax.random.split(key, 4)
        pair, found = _pick(k_pair, self._connectable(g))
        slot, free = _pick(k_slot, ~g.conn_on)
        ok = (jax.random.uniform(k_do) < p.add_conn_rate) & found & free
        w = jax.random.uniform(k_w, minval=-p.weight_range, maxval=p.weight_range)
        return g.replace(
            source=g.source.at[slot].set(jnp.where(ok, pair // self.num_nodes, g.source[slot])),
            target=g.target.at[slot].set(jnp.where(ok, pair % self.num_nodes, g.target[slot])),
            weight=g.weight.at[slot].set(jnp.where(ok, w, g.weight[slot])),
            conn_on=g.conn_on.at[slot].set(g.conn_on[slot] | ok),
        )

    def _delete_connection(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        k_do, k_conn = jax.random.split(key)
        c, has = _pick(k_conn, g.conn_on)
        ok = (jax.random.uniform(k_do) < p.del_conn_rate) & has
        return g.replace(conn_on=g.conn_on.at[c].set(g.conn_on[c] & ~ok))

    def _add_node(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        """Splits a connection a->b into a->new->b; both keep its weight (the paper's code)."""
        k_do, k_conn, k_node, k_slot, k_act = jax.random.split(key, 5)
        _, _, is_hidden = self._kinds()
        c, has = _pick(k_conn, g.conn_on)
        h, free_node = _pick(k_node, is_hidden & ~g.node_on)
        slot, free_conn = _pick(k_slot, ~g.conn_on)
        a, b = g.source[c], g.target[c]
        mid = 0.5 * (g.position[a] + g.position[b])
        strictly_between = (g.position[a] < mid) & (mid < g.position[b])  # float32 can run out
        ok = (jax.random.uniform(k_do) < p.add_node_rate) & has & free_node & free_conn & strictly_between
        act = jax.random.randint(k_act, (), 0, len(self.activations))
        return g.replace(
            node_on=g.node_on.at[h].set(g.node_on[h] | ok),
            position=g.position.at[h].set(jnp.where(ok, mid, g.position[h])),
            activation=g.activation.at[h].set(jnp.where(ok, act, g.activation[h])),
            bias=g.bias.at[h].set(jnp.where(ok, 0.0, g.bias[h])),
            # c is enabled and slot is free, so they differ: a->h in c, h->b in slot.
            target=g.target.at[c].set(jnp.where(ok, h, b)).at[slot].set(jnp.where(ok, b, g.target[slot])),
            source=g.source.at[slot].set(jnp.where(ok, h, g.source[slot])),
            weight=g.weight.at[slot].set(jnp.where(ok, g.weight[c], g.weight[slot])),
            conn_on=g.conn_on.at[slot].set(g.conn_on[slot] | ok),
        )

    def _delete_node(self, key, g: CPPNGenome, p: CPPNParams) -> CPPNGenome:
        k_do, k_node = jax.random.split(key)
        _, _, is_hidden = self._kinds()
        h, has = _pick(k_node, is_hidden & g.node_on)
        ok = (jax.random.uniform(k_do) < p.del_node_rate) & has
        touches = (g.source == h) | (g.target == h)
        return g.replace(
            node_on=g.node_on.at[h].set(g.node_on[h] & ~ok),
            position=g.position.at[h].set(jnp.where(ok, INACTIVE, g.position[h])),
            conn_on=g.conn_on & ~(ok & touches),
        )

    # ---------------------------------------------------------------- rendering
    def coordinates(self, height: int | None = None, width: int | None = None) -> jax.Array:
        """float32 ``[H*W, 4]``: x, y, d (distance from the centre), all in [-1, 1], and bias 1."""
        height = height or self.image_shape[0]
        width = width or self.image_shape[1]
        y, x = jnp.meshgrid(jnp.linspace(-1.0, 1.0, height), jnp.linspace(-1.0, 1.0, width), indexing="ij")
        d = jnp.sqrt(x * x + y * y) * jnp.sqrt(2.0) - 1.0
        return jnp.stack([x, y, d, jnp.ones_like(x)], axis=-1).reshape(-1, NUM_INPUTS)

    def outputs(self, genomes: CPPNGenome, coords: jax.Array, path: str | None = None) -> jax.Array:
        """Raw network outputs float32 ``[P, pixels, outputs]`` in [-1, 1] at ``coords [pixels, 4]``;
        ``path``: "grouped" or "unrolled" (default: :meth:`render_path`)."""
        t = jax.vmap(lambda g: cppn_render.tables(g, self.num_outputs))(genomes)
        if (path or self.render_path()) == "grouped":
            out = cppn_render.grouped(t, coords, self.activations)
        else:
            self.check_render_memory(coords.shape[0])
            out = cppn_render.unrolled(t, coords, self.activations, self.render_memory)
        return jnp.swapaxes(out, 1, 2)

    def check_render_memory(self, pixels: int) -> None:
        """Raises ValueError if the unrolled renderer cannot hold one genome of ``pixels``."""
        need = cppn_render.bytes_per_genome(NUM_INPUTS + self.max_hidden, self.num_outputs, pixels, len(self.activations))
        if need > self.render_memory:
            raise ValueError(
                f"a render memory of {self.render_memory / 2**20:g} MiB is too small for one {pixels}-pixel genome "
                f"(needs {need / 2**20:.1f} MiB)"
            )

    def render_path(self) -> str:
        """"grouped" or "unrolled": :attr:`renderer` on the default backend."""
        return cppn_render.choose(self.renderer, jax.default_backend())

    def render(self, genomes: CPPNGenome, height: int | None = None, width: int | None = None) -> jax.Array:
        """float32 ``[P, H, W, ch]`` in [0, 1], on the 8-bit grid; any resolution."""
        return self._images(genomes, height, width, None, quantize)

    def render_genes(self, template: CPPNGenome, genes: jax.Array, params: CPPNParams) -> jax.Array:
        """``render(with_genes(template, genes, params))``, differentiable in ``genes`` ``[n, D]``:
        rendered unrolled (the grouped renderer's loop bound depends on the genome, which
        reverse mode cannot follow) with straight-through 8-bit rounding. Equal to
        :meth:`render` within the renderers' summation-order tolerance."""
        return self._images(self.with_genes(template, genes, params), None, None, "unrolled", quantize_straight_through)

    def _images(self, genomes: CPPNGenome, height, width, path, rounding) -> jax.Array:
        height = height or self.image_shape[0]
        width = width or self.image_shape[1]
        out = self.outputs(genomes, self.coordinates(height, width), path)
        images = (out + 1.0) * 0.5
        images = images.reshape(-1, height, width, self.num_outputs)
        if self.num_outputs == 3:
            images = to_rgb(jnp.clip(images, 0.0, 1.0), self.color_space)
        return rounding(images)
