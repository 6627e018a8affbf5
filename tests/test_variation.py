import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfool.encodings import DirectEncoding, DirectParams
from jaxfool.encodings.color import hls_to_rgb, hsv_to_rgb, to_rgb
from jaxfool.encodings.variation import halved_rate, polynomial_mutation, sbx_crossover


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_polynomial_mutation_rate_and_step_size(rate):
    x = jnp.full((200_000,), 0.5)
    y = np.asarray(polynomial_mutation(jax.random.key(0), x, rate, 15.0))
    changed = y != 0.5
    assert abs(changed.mean() - rate) < 0.01
    # E|delta| = 1/(eta + 2) for Deb's polynomial mutation (no clipping from the middle)
    assert abs(np.abs(y[changed] - 0.5).mean() - 1 / 17) < 0.002
    assert abs((y[changed] > 0.5).mean() - 0.5) < 0.02  # symmetric


def test_polynomial_mutation_eta_controls_step_and_bounds():
    x = jax.random.uniform(jax.random.key(1), (50_000,))
    small = polynomial_mutation(jax.random.key(2), x, 1.0, 30.0)
    large = polynomial_mutation(jax.random.key(2), x, 1.0, 1.0)
    assert jnp.abs(small - x).mean() < jnp.abs(large - x).mean()
    assert (large >= 0).all() and (large <= 1).all()
    assert (polynomial_mutation(jax.random.key(2), x, 0.0, 15.0) == x).all()


def test_sbx_crossover():
    a = jax.random.uniform(jax.random.key(0), (500, 64))
    b = jax.random.uniform(jax.random.key(1), (500, 64))
    child = sbx_crossover(jax.random.key(2), a, b, 1.0, 10.0)
    assert child.shape == a.shape and (child >= 0).all() and (child <= 1).all()
    crossed = child != a
    assert 0.4 < crossed.mean() < 0.6  # each gene crossed with probability 0.5
    # SBX children stay near the parents' span: spread factor around 1 for eta 10
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    inside = (child >= lo - 0.25 * (hi - lo)) & (child <= hi + 0.25 * (hi - lo))
    assert inside.mean() > 0.95
    assert (sbx_crossover(jax.random.key(2), a, b, 0.0, 10.0) == a).all()


def test_halved_rate():
    assert float(halved_rate(0.1, 2500, 1000)) == pytest.approx(0.025)
    assert float(halved_rate(0.1, 2500, 0)) == pytest.approx(0.1)


def test_direct_encoding_roundtrip_and_variation():
    enc = DirectEncoding((28, 28, 1))
    g = enc.init(jax.random.key(0), 64)
    assert g.shape == (64, 28, 28, 1) and g.dtype == jnp.uint8
    assert g.min() < 10 and g.max() > 245  # uniform over the full range
    images = enc.render(g)
    assert images.dtype == jnp.float32 and (jnp.round(images * 255) / 255 == images).all()
    m = enc.mutate(jax.random.key(1), g, 1, DirectParams())
    assert m.dtype == jnp.uint8 and 0.05 < (m != g).mean() < 0.11  # rounding hides a few tiny moves
    c = enc.crossover(jax.random.key(2), g, g[::-1], DirectParams(crossover_rate=1.0))
    assert c.shape == g.shape and c.dtype == jnp.uint8


def test_direct_recombine_adds_improving_mutations():
    enc = DirectEncoding((2, 2, 1))
    elites = jnp.full((2, 2, 2, 1), 100, jnp.uint8)
    offspring = elites[jnp.array([0, 0, 1])].at[0, 0, 0, 0].set(110).at[1, 1, 1, 0].set(90).at[2, 0, 1, 0].set(200)
    weights = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # offspring 0 and 1 improved cell 0
    out = enc.recombine(elites, offspring, weights, DirectParams(recombine_scale=1.0))
    assert out[0, 0, 0, 0] == 110 and out[0, 1, 1, 0] == 90 and out[0, 0, 1, 0] == 100
    assert (out[1] == 100).all()  # no improvement, no change


@pytest.mark.parametrize("fn,ref", [(hsv_to_rgb, colorsys.hsv_to_rgb), (hls_to_rgb, colorsys.hls_to_rgb)])
def test_colour_conversion_matches_colorsys(fn, ref):
    x = np.random.default_rng(0).random((2000, 3))
    want = np.array([ref(*v) for v in x])
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(x, jnp.float32))), want, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(to_rgb(jnp.asarray(x, jnp.float32), "rgb")), x.astype(np.float32))  # identity
    np.testing.assert_array_equal(np.asarray(to_rgb(jnp.asarray(x, jnp.float32), "hsv")), np.asarray(hsv_to_rgb(jnp.asarray(x, jnp.float32))))


def test_hsv_direct_encoding_renders_rgb_on_the_8bit_grid():
    enc = DirectEncoding((4, 4, 3), color_space="hsv")
    images = enc.render(enc.init(jax.random.key(0), 3))
    assert images.shape == (3, 4, 4, 3) and (jnp.round(images * 255) / 255 == images).all()


def test_hash_uniform_statistics_and_determinism():
    from jaxfool.encodings.variation import hash_uniform

    u = np.asarray(hash_uniform(jax.random.key(0), (1 << 20,)))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 2e-3 and abs(u.var() - 1 / 12) < 1e-3
    counts = np.histogram(u, 64, (0, 1))[0]
    chi2 = ((counts - len(u) / 64) ** 2 / (len(u) / 64)).sum()
    assert chi2 < 120  # 63 degrees of freedom: p ~ 1e-5 beyond 120
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5e-3  # neighbours (adjacent pixels) independent
    pairs = np.histogram2d(u[:-1:2], u[1::2], 8, [[0, 1], [0, 1]])[0]
    assert pairs.min() > 0.9 * pairs.mean()
    np.testing.assert_array_equal(u, hash_uniform(jax.random.key(0), (1 << 20,)))
    other = np.asarray(hash_uniform(jax.random.key(1), (1 << 20,)))
    assert abs(np.corrcoef(u, other)[0, 1]) < 5e-3
