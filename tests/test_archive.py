import jax.numpy as jnp
import numpy as np

from jaxfool.archive import empty_archive, insert


def test_empty_archive():
    a = empty_archive(jnp.zeros((3,), jnp.uint8), 4)
    assert a.genomes.shape == (4, 3) and a.genomes.dtype == jnp.uint8
    assert (a.fitness == -jnp.inf).all() and not a.filled.any() and (a.generation == -1).all()
    assert a.num_cells == 4 and (a.confidence == 0).all()


def test_every_offspring_competes_in_every_cell():
    a = empty_archive(jnp.zeros((2,), jnp.float32), 3)
    genomes = jnp.array([[1.0, 1.0], [2.0, 2.0]])
    scores = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    a, improved = insert(a, genomes, scores, 5, jnp.array([-1, 2]))
    assert improved.all() and a.filled.all()
    np.testing.assert_array_equal(a.genomes, [[1, 1], [1, 1], [2, 2]])  # image 0 takes two cells
    np.testing.assert_allclose(a.confidence, [0.7, 0.2, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(a.generation, [5, 5, 5])
    np.testing.assert_array_equal(a.parent, [-1, -1, 2])
    np.testing.assert_array_equal(a.offspring, [0, 0, 1])

    # Only strict improvements replace an elite.
    worse = jnp.log(jnp.array([[0.6, 0.3, 0.8]]))
    a2, improved = insert(a, jnp.array([[9.0, 9.0]]), worse, 6, jnp.array([0]))
    np.testing.assert_array_equal(improved, [False, True, False])
    np.testing.assert_array_equal(a2.genomes, [[1, 1], [9, 9], [2, 2]])
    np.testing.assert_array_equal(a2.generation, [5, 6, 5])


def test_nan_and_inf_never_enter():
    a = empty_archive(jnp.zeros((1,), jnp.float32), 3)
    scores = jnp.array([[jnp.nan, jnp.inf, -1.0], [jnp.nan, -jnp.inf, jnp.nan]])
    a, improved = insert(a, jnp.array([[1.0], [2.0]]), scores, 1, jnp.array([0, 0]))
    np.testing.assert_array_equal(improved, [False, False, True])
    assert np.isfinite(a.fitness[2]) and not a.filled[0] and not a.filled[1]
    assert not np.isnan(np.asarray(a.fitness)).any()
