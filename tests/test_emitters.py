
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfool.archive import empty_archive, insert
from jaxfool.baseline import single_class_baseline
from jaxfool.emitters import ESEmitter, archive_gain
from jaxfool.encodings import DirectEncoding, DirectParams
from jaxfool.errors import ConfigError
from jaxfool.experiment import build_experiment, make_emitters
from jaxfool.map_elites import Params, init_seeds, run_generations, seed_keys
from jaxfool.presets import load_preset


def _filled_archive(enc, n=4):
    genomes = enc.init(jax.random.key(0), n)
    scores = jnp.log(jax.nn.softmax(jax.random.normal(jax.random.key(1), (n, n)) * 3))
    archive, _ = insert(empty_archive(genomes[0], n), genomes, scores, 0, jnp.full((n,), -1))
    return archive


@pytest.mark.parametrize("strategy", ["snes", "sep_cma_es", "open_es"])
def test_es_emitter_emits_tells_and_restarts(strategy):
    enc = DirectEncoding((6, 6, 1))
    archive = _filled_archive(enc)
    em = ESEmitter(enc, strategy, batch_size=20, population=10, restart_after=2)
    params = Params(model=None, variation=DirectParams())
    state = em.init(jax.random.key(2), archive, params)
    genomes, parents, state = em.emit(jax.random.key(3), archive, state, 1, params)
    assert genomes.shape == (20, 6, 6, 1) and genomes.dtype == jnp.uint8
    assert parents.shape == (20,) and (parents[:10] == state.center[0]).all()
    worse = jnp.full((20, 4), -1e3)  # nothing improves: instances go stale, then restart
    for step in range(2):
        state = em.tell(jax.random.key(4 + step), state, archive, genomes, parents, worse, params)
    assert (state.stale == 0).all()  # restarted after 2 stale generations
    better = jnp.zeros((20, 4))  # log p = 0 beats every elite
    state = em.tell(jax.random.key(9), state, archive, genomes, parents, better, params)
    assert (state.stale == 0).all()


def test_es_emitter_searches_a_cppn_elites_weights_on_its_topology():
    from jaxfool.encodings.cppn import CPPNEncoding, CPPNParams

    enc = CPPNEncoding((8, 8, 1), max_hidden=4, max_conns=12)
    params = Params(model=None, variation=CPPNParams())
    grown = enc.init(jax.random.key(0), 4)
    for step in range(6):  # hidden nodes and new connections: distinct topologies
        grown = enc.mutate(jax.random.key(10 + step), grown, 0, params.variation)
    assert int(grown.node_on.sum()) > 4 * 5
    genes = enc.genes(grown, params.variation)
    assert genes.shape == (4, enc.num_genes) and float(genes.min()) >= 0 and float(genes.max()) <= 1
    again = enc.with_genes(grown, genes, params.variation)  # genes -> genome is exact on used slots
    np.testing.assert_allclose(np.where(grown.conn_on, again.weight, 0), np.where(grown.conn_on, grown.weight, 0), atol=1e-5)

    scores = jnp.log(jax.nn.softmax(jax.random.normal(jax.random.key(1), (4, 4)) * 3))
    archive, _ = insert(empty_archive(jax.tree.map(lambda g: g[0], grown), 4), grown, scores, 0, jnp.full((4,), -1))
    em = ESEmitter(enc, "snes", batch_size=20, population=10)
    state = em.init(jax.random.key(2), archive, params)
    children, parents, state = em.emit(jax.random.key(3), archive, state, 1, params)
    centre = jax.tree.map(lambda g: g[parents], archive.genomes)
    for field in ("source", "target", "conn_on", "node_on", "activation", "position"):  # the centre's topology
        np.testing.assert_array_equal(getattr(children, field), getattr(centre, field))
    moved = np.abs(np.asarray(children.weight - centre.weight))[np.asarray(centre.conn_on)]
    assert moved.max() > 0.1 and (np.asarray(children.weight)[~np.asarray(centre.conn_on)] == 0).all()
    assert enc.render(children).shape == (20, 8, 8, 1)


def test_es_emitter_alone_raises_cppn_cells_and_counts_its_evaluations(lenet):
    exp = build_experiment(load_preset("mnist-cppn", emitters=("snes",), batch=40, es_population=20), classifier=lenet)
    keys = seed_keys([0])
    params = exp.lane_params(stop=np.inf, max_generation=2**31 - 1)
    start = init_seeds(exp.engine, params, keys)
    state = run_generations(exp.engine, params, start, keys, 15)[0]
    gained = np.asarray(state.archive.fitness[0] - start.archive.fitness[0])
    assert (gained >= 0).all() and (gained > 0.1).sum() >= 3  # the strategies' offspring replaced elites
    assert int(state.generation[0]) == 15 and exp.engine.evaluations(15) == 40 + 15 * 40  # generation 0 counted


def test_archive_gain():
    enc = DirectEncoding((2, 2, 1))
    archive = _filled_archive(enc, 3)
    scores = jnp.stack([archive.fitness + jnp.array([0.5, -1.0, -2.0]), archive.fitness - 1.0])
    np.testing.assert_allclose(archive_gain(archive, scores), [0.5, -1.0], atol=1e-6)


def test_es_emitter_checks_sizes():
    with pytest.raises(ValueError, match="multiple of population"):
        ESEmitter(DirectEncoding((4, 4, 1)), "snes", batch_size=25, population=10)
    with pytest.raises(ValueError, match="unknown strategy"):
        ESEmitter(DirectEncoding((4, 4, 1)), "pso", batch_size=20, population=10)


def test_mixed_emitters_split_the_batch_and_run():
    config = load_preset(emitters=("mutation", "snes"), es_population=20)
    emitters = make_emitters(config, DirectEncoding((28, 28, 1)), 190)
    assert [type(e).__name__ for e in emitters] == ["MutationEmitter", "ESEmitter"]
    assert [e.batch_size for e in emitters] == [110, 80] and sum(e.batch_size for e in emitters) == 190
    exp = build_experiment(config)
    assert exp.engine.batch_size == 200
    exp = build_experiment(config.replace(seeds=2, stop_when_fooled=False))
    keys = seed_keys(exp.seeds)
    state = init_seeds(exp.engine, exp.lane_params(), keys)
    state, metrics = run_generations(exp.engine, exp.lane_params(), state, keys, 10)
    f = np.asarray(metrics.fitness)
    assert (np.diff(f, axis=0) >= 0).all() and (f[-1] > f[0]).any()
    assert state.emitters[1].center.shape == (2, 4)  # per seed, 4 SNES instances of 20


@pytest.mark.parametrize("preset", ["mnist-direct-fast", "mnist-cppn"])  # CPPN instances also checkpoint their topology
def test_es_emitters_resume_bit_identical(tmp_path, preset):
    from jaxfool.runner import resume_config, run

    config = load_preset(preset, emitters=("mutation", "sep_cma_es"), generations=12, chunk=4, checkpoint_every=4,
                         stop_when_fooled=False, es_restart=3)
    whole = run(config, str(tmp_path / "whole"), progress_bar=False)
    run(config, str(tmp_path / "part"), progress_bar=False, max_chunks=1)
    resumed = run(resume_config(str(tmp_path / "part")), str(tmp_path / "part"), resume=True, progress_bar=False)
    assert whole["seeds"][0]["best_confidence"] == resumed["seeds"][0]["best_confidence"]


def test_emitter_config_errors():
    with pytest.raises(ConfigError, match="unknown emitter 'pso'"):
        load_preset(emitters=("pso",))
    with pytest.raises(ConfigError, match="below es_population"):
        build_experiment(load_preset(emitters=("mutation", "snes"), batch=40, es_population=40))
    with pytest.raises(ConfigError, match="population must be even for open_es"):
        single_class_baseline(None, "open_es", population=25)
    with pytest.raises(ConfigError, match="must be even for the open_es emitter"):
        load_preset(emitters=("open_es",), es_population=25)


def test_single_class_baseline(lenet):
    result = single_class_baseline(lenet, "snes", population=100, evaluations_per_class=3000, threshold=0.99, classes=(0, 3))
    assert [c["index"] for c in result["classes"]] == [0, 3]
    assert all(c["evaluations_to_threshold"] is not None for c in result["classes"])
    assert result["total_evaluations"] == sum(c["evaluations_to_threshold"] for c in result["classes"])
    assert all(c["best_confidence"] >= 0.99 for c in result["classes"])
    ga = single_class_baseline(lenet, "simple_ga", population=50, evaluations_per_class=200, classes=(1,))
    assert ga["evaluations_per_class"] == 200 and np.shape(ga["history"]) == (3, 1)  # [generations, classes]
    with pytest.raises(ConfigError, match="unknown strategy"):
        single_class_baseline(lenet, "cma")
