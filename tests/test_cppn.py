import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfool.encodings.cppn import ACTIVATIONS, NUM_INPUTS, CPPNEncoding, CPPNParams
from jaxfool.regularity import neighbour_correlation, png_bits_per_pixel, regularity

ENC = CPPNEncoding((28, 28, 1), max_hidden=6, max_conns=16)


def _check_valid(enc, g):
    """The invariants every genome must keep; g is one genome (numpy arrays)."""
    n = enc.num_nodes
    on = g.conn_on
    assert ((g.source >= 0) & (g.source < n) & (g.target >= 0) & (g.target < n)).all()
    assert (g.activation >= 0).all() and (g.activation < len(enc.activations)).all()
    assert g.node_on[: NUM_INPUTS + enc.num_outputs].all()  # inputs and outputs always on
    # enabled connections join live nodes, forward in position: no cycle is possible
    assert g.node_on[g.source[on]].all() and g.node_on[g.target[on]].all()
    assert (g.position[g.source[on]] < g.position[g.target[on]]).all()
    assert not (g.target[on] < NUM_INPUTS).any()  # nothing feeds an input
    out = np.arange(NUM_INPUTS, NUM_INPUTS + enc.num_outputs)
    assert not np.isin(g.source[on], out).any()  # outputs feed nothing
    pairs = list(zip(g.source[on], g.target[on]))
    assert len(pairs) == len(set(pairs))  # no duplicate connection
    hidden = np.arange(NUM_INPUTS + enc.num_outputs, n)
    live_hidden = hidden[g.node_on[hidden]]
    assert ((g.position[live_hidden] > 0) & (g.position[live_hidden] < 1)).all()
    assert (np.abs(g.weight[on]) <= 10.0 + 1e-5).all()


def test_initial_genomes_are_inputs_wired_to_outputs():
    for enc in (ENC, CPPNEncoding((8, 8, 3))):
        g = jax.tree.map(np.asarray, enc.init(jax.random.key(0), 5))
        n_io = NUM_INPUTS * enc.num_outputs
        assert (g.conn_on.sum(1) == n_io).all() and not g.node_on[:, NUM_INPUTS + enc.num_outputs :].any()
        for i in range(5):
            _check_valid(enc, jax.tree.map(lambda a: a[i], g))


def test_layered_start_joins_each_layer_fully_to_the_next_and_then_grows():
    enc = CPPNEncoding((8, 8, 3), max_hidden=10, max_conns=60, init_layers=(3, 4))
    g = jax.tree.map(np.asarray, enc.init(jax.random.key(0), 6))
    assert enc.init_conns == 4 * 3 + 3 * 4 + 4 * 3 and (g.conn_on.sum(1) == enc.init_conns).all()
    for i in range(6):
        one = jax.tree.map(lambda a: a[i], g)
        _check_valid(enc, one)
        on = one.conn_on
        steps = {(float(a), float(b)) for a, b in zip(one.position[one.source[on]], one.position[one.target[on]])}
        assert steps == {(0.0, np.float32(1 / 3)), (np.float32(1 / 3), np.float32(2 / 3)), (np.float32(2 / 3), 1.0)}
        fan_in = np.bincount(one.target[on], minlength=enc.num_nodes)
        assert (fan_in[NUM_INPUTS + 3 : NUM_INPUTS + 6] == 4).all() and (fan_in[NUM_INPUTS + 6 : NUM_INPUTS + 10] == 3).all()
        assert (fan_in[NUM_INPUTS : NUM_INPUTS + 3] == 4).all() and one.node_on.sum() == NUM_INPUTS + 3 + 7
    assert len({tuple(w) for w in g.weight}) == 6  # each genome its own weights
    # He-style scale: the first layer's weights (fan-in 4) have std ~1, far below the range.
    assert 0.7 < g.weight[:, :12].std() < 1.3
    mutate = jax.jit(lambda k, x: enc.mutate(k, x, 1, CPPNParams()))
    grown = enc.init(jax.random.key(0), 6)
    for step in range(60):
        grown = mutate(jax.random.key(step + 1), grown)
    host = jax.tree.map(np.asarray, grown)
    for i in range(6):
        _check_valid(enc, jax.tree.map(lambda a: a[i], host))
    assert (host.node_on.sum(1) != NUM_INPUTS + 3 + 7).any()  # the start is a start, not a cage


def test_thousand_mutations_keep_genomes_valid_and_padding_inert():
    params = CPPNParams()
    mutate = jax.jit(lambda k, g: ENC.mutate(k, g, 1, params))
    g = ENC.init(jax.random.key(0), 8)
    grew = shrank = 0
    for step in range(1000):
        new = mutate(jax.random.key(step + 1), g)
        grew += int((new.node_on.sum(1) > g.node_on.sum(1)).sum())
        shrank += int((new.node_on.sum(1) < g.node_on.sum(1)).sum())
        g = new
        if step % 50 == 49:
            host = jax.tree.map(np.asarray, g)
            for i in range(8):
                _check_valid(ENC, jax.tree.map(lambda a: a[i], host))
    assert grew > 100 and shrank > 100  # structure really changed, both ways
    # Padding is inert: scrambling disabled slots does not change the picture.
    images = ENC.render(g)
    noise = jax.random.uniform(jax.random.key(9), g.weight.shape, minval=-10, maxval=10)
    scrambled = g.replace(
        weight=jnp.where(g.conn_on, g.weight, noise),
        source=jnp.where(g.conn_on, g.source, 0),
        activation=jnp.where(g.node_on, g.activation, 0),
        bias=jnp.where(g.node_on, g.bias, 5.0),
    )
    np.testing.assert_array_equal(ENC.render(scrambled), images)


@pytest.mark.slow
def test_full_genome_makes_additions_no_ops():
    enc = CPPNEncoding((8, 8, 1), max_hidden=1, max_conns=4)  # already full at init
    g = enc.init(jax.random.key(0), 64)
    p = CPPNParams(add_conn_rate=1.0, add_node_rate=1.0, del_conn_rate=0.0, del_node_rate=0.0, change_conn_rate=0.0)
    m = enc.mutate(jax.random.key(1), g, 1, p)
    np.testing.assert_array_equal(m.conn_on, g.conn_on)
    np.testing.assert_array_equal(m.node_on, g.node_on)


@pytest.mark.slow
def test_rendering_is_deterministic_and_any_resolution():
    g = ENC.init(jax.random.key(3), 4)
    for s in range(20):
        g = ENC.mutate(jax.random.key(s), g, 1, CPPNParams())
    a, b = ENC.render(g), jax.jit(ENC.render)(g)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 28, 28, 1) and (jnp.round(a * 255) / 255 == a).all()
    big = ENC.render(g, 64, 48)
    assert big.shape == (4, 64, 48, 1)
    # a genome's picture does not depend on the batch it is rendered in
    for renderer in ("grouped", "unrolled"):
        enc = CPPNEncoding((28, 28, 1), max_hidden=6, max_conns=16, renderer=renderer)
        whole = enc.render(g)
        np.testing.assert_array_equal(enc.render(jax.tree.map(lambda x: x[1:3], g)), whole[1:3])


def _coords_np(h, w):
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    d = np.sqrt(x * x + y * y) * np.sqrt(2) - 1
    return np.stack([x, y, d, np.ones_like(x)], -1).reshape(-1, 4)


@pytest.mark.parametrize("renderer", ["grouped", "unrolled"])
@pytest.mark.parametrize("act", ["sine", "sigmoid", "gaussian", "linear"])
def test_no_hidden_nodes_renders_the_closed_form(act, renderer):
    enc = CPPNEncoding((28, 28, 1), max_hidden=6, max_conns=16, renderer=renderer)
    g = jax.tree.map(lambda a: a[0], ENC.init(jax.random.key(1), 1))
    idx = ENC.activations.index(act)
    g = g.replace(activation=g.activation.at[NUM_INPUTS].set(idx), bias=g.bias.at[NUM_INPUTS].set(0.3))
    w = np.asarray(g.weight[:NUM_INPUTS])
    pre = _coords_np(28, 28) @ w + 0.3
    want = {"sine": np.sin, "sigmoid": lambda p: 2 / (1 + np.exp(-p)) - 1, "gaussian": lambda p: np.exp(-p * p),
            "linear": lambda p: np.clip(p, -3, 3) / 3}[act](pre)
    got = enc.outputs(jax.tree.map(lambda a: a[None], g), enc.coordinates())[0, :, 0]
    np.testing.assert_allclose(got, want, atol=2e-5)
    image = enc.render(jax.tree.map(lambda a: a[None], g))[0, ..., 0]
    np.testing.assert_allclose(image, np.round(np.clip((want + 1) / 2, 0, 1) * 255).reshape(28, 28) / 255, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("renderer", ["grouped", "unrolled"])
def test_one_hidden_node_composes(renderer):
    enc = CPPNEncoding((28, 28, 1), max_hidden=6, max_conns=16, renderer=renderer)
    g = jax.tree.map(lambda a: a[0], ENC.init(jax.random.key(2), 1))
    h = NUM_INPUTS + 1
    sine, gauss = ENC.activations.index("sine"), ENC.activations.index("gaussian")
    g = g.replace(
        conn_on=jnp.zeros_like(g.conn_on).at[:2].set(True),
        source=g.source.at[0].set(0).at[1].set(h), target=g.target.at[0].set(h).at[1].set(NUM_INPUTS),
        weight=g.weight.at[0].set(2.0).at[1].set(-1.5),
        node_on=g.node_on.at[h].set(True), position=g.position.at[h].set(0.5),
        activation=g.activation.at[h].set(sine).at[NUM_INPUTS].set(gauss),
    )
    x = _coords_np(28, 28)[:, 0]
    want = np.exp(-(-1.5 * np.sin(2.0 * x)) ** 2)
    got = enc.outputs(jax.tree.map(lambda a: a[None], g), enc.coordinates())[0, :, 0]
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_colour_cppn_renders_three_channels():
    enc = CPPNEncoding((16, 16, 3), color_space="hsv")
    images = enc.render(enc.init(jax.random.key(0), 3))
    assert images.shape == (3, 16, 16, 3) and images.min() >= 0 and images.max() <= 1


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        CPPNEncoding((8, 8, 1), activations=("relu",))
    assert set(ACTIVATIONS) >= {"sine", "sigmoid", "gaussian", "linear"}


def test_regularity_measures():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (28, 28, 1)) / 255
    x = np.linspace(0, 1, 28)
    smooth = (np.sin(6 * x)[None, :, None] * 0.5 + 0.5) * np.ones((28, 1, 1))
    assert neighbour_correlation(noise) < 0.1 < 0.9 < neighbour_correlation(smooth)
    assert png_bits_per_pixel(smooth) < png_bits_per_pixel(noise)
    assert neighbour_correlation(np.zeros((4, 4, 1))) == 1.0
    r = regularity(np.stack([noise, smooth]))
    assert set(r) == {"neighbour_correlation", "png_bits_per_pixel"}


@pytest.mark.slow
def test_cppn_elites_are_more_regular_than_direct_elites(tmp_path):
    from jaxfool.presets import load_preset
    from jaxfool.runner import run

    cppn = run(load_preset("mnist-cppn", generations=15), str(tmp_path / "cppn"), progress_bar=False)
    direct = run(load_preset(generations=15), str(tmp_path / "direct"), progress_bar=False)
    rc, rd = cppn["seeds"][0]["regularity"], direct["seeds"][0]["regularity"]
    assert rc["neighbour_correlation"] > 0.5 > 0.2 > rd["neighbour_correlation"]
    assert rc["png_bits_per_pixel"] < rd["png_bits_per_pixel"]  # at 28x28 the PNG container dominates
