
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


def test_gradient_emitter_raises_its_cells_and_counts_forward_and_backward(lenet):
    """Alone, from random noise, Adam steps on the pixels raise every instance's own cell on
    LeNet; each instance costs 3 evaluations a generation (forward, backward, scoring)."""
    exp = build_experiment(load_preset("mnist-direct", emitters=("gradient",), batch=10, gradient_lr=0.05), classifier=lenet)
    [em] = exp.engine.emitters
    assert em.batch_size == 10 and em.evaluations == 30 and exp.engine.evaluations(7) == 10 + 7 * 30
    keys = seed_keys([0])
    params = exp.lane_params(stop=np.inf, max_generation=2**31 - 1)
    start = init_seeds(exp.engine, params, keys)
    state = run_generations(exp.engine, params, start, keys, 8)[0]
    centre = np.asarray(start.emitters[0].center[0])
    before = np.asarray(start.archive.fitness[0])[centre]
    after = np.asarray(state.archive.fitness[0])[centre]
    assert (after >= before).all() and np.median(after - before) > 1.0  # nats of log-probability
    moved = np.asarray(state.emitters[0].genes[0]) != np.asarray(start.emitters[0].genes[0])
    assert moved.any(axis=1).all()


def test_gradient_emitter_on_cppn_keeps_the_topology_and_climbs(lenet):
    exp = build_experiment(load_preset("mnist-cppn", emitters=("mutation", "gradient"), batch=40, gradient_instances=4,
                                       gradient_lr=0.01, stop_when_fooled=False, threshold=1 - 1e-7), classifier=lenet)
    assert [e.batch_size for e in exp.engine.emitters] == [36, 4] and exp.engine.evaluations(2) == 40 + 2 * (36 + 12)
    keys = seed_keys([0])
    params = exp.lane_params()
    start = init_seeds(exp.engine, params, keys)
    em_start = jax.tree.map(lambda a: a[0], start.emitters[1])
    state = run_generations(exp.engine, params, start, keys, 3)[0]
    em = jax.tree.map(lambda a: a[0], state.emitters[1])
    np.testing.assert_array_equal(em.center, em_start.center)  # no cell fooled, none stale: no restart
    for field in ("source", "target", "conn_on", "node_on", "activation"):
        np.testing.assert_array_equal(getattr(em.template, field), getattr(em_start.template, field))
    assert (np.asarray(em.genes) != np.asarray(em_start.genes)).any(axis=1).all()


def test_render_genes_is_render_of_with_genes_and_differentiable():
    from jaxfool.encodings.cppn import CPPNEncoding, CPPNParams

    for enc, p in ((DirectEncoding((6, 6, 3), color_space="hsv"), DirectParams()),
                   (CPPNEncoding((8, 8, 3), max_hidden=4, max_conns=20), CPPNParams())):
        genomes = enc.init(jax.random.key(0), 3, p)
        for step in range(4):
            genomes = enc.mutate(jax.random.key(step), genomes, 0, p)
        template, genes = enc.gene_template(genomes), enc.genes(genomes, p)
        images = enc.render_genes(template, genes, p)
        np.testing.assert_allclose(images, enc.render(enc.with_genes(template, genes, p)), atol=1.5 / 255)
        np.testing.assert_allclose(images * 255, np.round(np.asarray(images) * 255), atol=1e-3)  # on the 8-bit grid
        grad = jax.grad(lambda g: enc.render_genes(template, g, p).sum())(genes)
        assert np.isfinite(grad).all() and (np.abs(grad) > 0).any(axis=1).all()


def test_gradient_emitter_never_moves_on_nan_gradients():
    from jaxfool.emitters import GradientEmitter

    enc = DirectEncoding((6, 6, 1))
    archive = _filled_archive(enc)

    def score(model, images):
        return jnp.zeros((images.shape[0], 4)) + jnp.sqrt(-images.mean())  # NaN and NaN gradients

    def value_and_grad(model, images, weights):
        scores, pullback = jax.vjp(lambda x: score(model, x), images)
        return scores, pullback(weights)[0]

    score.value_and_grad = value_and_grad
    em = GradientEmitter(enc, score, batch_size=4, learning_rate=0.1)
    params = Params(model=None, variation=DirectParams())
    state = em.init(jax.random.key(0), archive, params)
    genomes, parents, moved = em.emit(jax.random.key(1), archive, state, 1, params)
    np.testing.assert_array_equal(moved.genes, state.genes)
    np.testing.assert_array_equal(genomes, archive.genomes[parents])
    new, improved = insert(archive, genomes, score(None, genomes.astype(jnp.float32)), 1, parents)
    assert not improved.any() and np.isfinite(np.asarray(new.fitness)).all()


def test_gradient_emitter_refuses_a_classifier_without_gradients(lenet):
    import dataclasses

    def no_gradients(params, x):  # a host callback: no reverse mode
        return jax.pure_callback(lambda a: np.zeros((a.shape[0], 10), np.float32),
                                 jax.ShapeDtypeStruct((x.shape[0], 10), jnp.float32), x)

    opaque = dataclasses.replace(lenet, apply_fn=no_gradients, name="opaque-net")
    build_experiment(load_preset("mnist-direct", batch=20), classifier=opaque)  # fine without gradients
    with pytest.raises(ConfigError, match="needs a differentiable classifier; opaque-net is not") as e:
        build_experiment(load_preset("mnist-direct", emitters=("mutation", "gradient"), batch=20), classifier=opaque)
    assert "\n" not in str(e.value)


def test_gradient_emitter_config_errors():
    with pytest.raises(ConfigError, match="gradient_instances must be >= 1"):
        load_preset(emitters=("gradient",), gradient_instances=0)
    with pytest.raises(ConfigError, match="leaves too little of the batch"):
        build_experiment(load_preset(emitters=("mutation", "gradient"), batch=20, gradient_instances=10))


def test_gradient_instances_leave_fooled_cells_for_unfooled_ones():
    from jaxfool.emitters import GradientEmitter

    enc = DirectEncoding((6, 6, 1))
    archive = _filled_archive(enc)
    archive = archive.replace(fitness=jnp.array([-1e-5, -1e-5, -1e-5, -3.0]))  # only cell 3 is below 99.99 %
    em = GradientEmitter(enc, None, batch_size=4, restart_after=100, selection="unfooled")
    params = Params(model=None, variation=DirectParams())
    state = em.init(jax.random.key(0), archive.replace(fitness=jnp.full(4, -3.0)), params)
    state = state.replace(center=jnp.array([0, 1, 3, 3], jnp.int32))
    gaining = jnp.zeros((4, 4))  # every offspring improves the archive: nobody is stale
    told = em.tell(jax.random.key(1), state, archive, None, state.center, gaining, params)
    np.testing.assert_array_equal(told.center, [3, 3, 3, 3])  # the two on fooled cells moved to cell 3
    everything_fooled = archive.replace(fitness=jnp.full(4, -1e-5))
    told = em.tell(jax.random.key(1), state, everything_fooled, None, state.center, gaining, params)
    np.testing.assert_array_equal(told.center, state.center)  # nowhere to go: they stay


def test_gradient_emitter_lanes_equal_runs_alone(lenet):
    """The gradient's forward and backward pass keep their shape under the lanes' vmap, so a
    seed run beside another gives exactly the archive it gives alone."""
    config = load_preset("mnist-direct", emitters=("mutation", "gradient"), batch=40, gradient_instances=4,
                         stop_when_fooled=False)
    together = build_experiment(config.replace(seeds=2), classifier=lenet)
    keys = seed_keys([0, 1])
    params = together.lane_params()
    both = run_generations(together.engine, params, init_seeds(together.engine, params, keys), keys, 3)[0]
    alone_exp = build_experiment(config.replace(seed=1), classifier=lenet)
    keys = seed_keys([1])
    params = alone_exp.lane_params()
    alone = run_generations(alone_exp.engine, params, init_seeds(alone_exp.engine, params, keys), keys, 3)[0]
    np.testing.assert_array_equal(both.archive.fitness[1], alone.archive.fitness[0])
    np.testing.assert_array_equal(both.emitters[1].genes[1], alone.emitters[1].genes[0])


def test_gradient_instances_restart_as_fresh_lineages_and_count_their_own_progress():
    from jaxfool.emitters import GradientEmitter

    enc = DirectEncoding((6, 6, 1))
    archive = _filled_archive(enc).replace(fitness=jnp.full(4, -3.0))
    params = Params(model=None, variation=DirectParams())
    elite = GradientEmitter(enc, None, batch_size=4, restart_after=2).init(jax.random.key(0), archive, params)
    np.testing.assert_array_equal(elite.genes, enc.genes(archive.genomes[elite.center], params.variation))
    np.testing.assert_array_equal(elite.best, [-3.0] * 4)  # an elite start must beat its elite
    em = GradientEmitter(enc, None, batch_size=4, restart_after=2, fresh=1.0)
    state = em.init(jax.random.key(0), archive, params)
    starts = enc.genes(archive.genomes, params.variation)
    assert not (state.genes[:, None, :] == starts[None]).all(-1).any()  # new genomes, not elites
    assert np.isneginf(state.best).all()

    def told(state, own, key):
        scores = jnp.full((4, 4), -50.0).at[jnp.arange(4), state.center].set(own)  # below every elite
        return em.tell(jax.random.key(key), state, archive, None, state.center, scores, params)

    climbing = told(state, jnp.full(4, -9.0), 1)
    climbing = told(climbing, jnp.full(4, -8.0), 2)  # still below the archive, but better than before
    np.testing.assert_array_equal(climbing.stale, [0] * 4)
    np.testing.assert_array_equal(climbing.best, [-8.0] * 4)
    np.testing.assert_array_equal(climbing.genes, state.genes)  # nobody restarted
    stuck = told(told(climbing, jnp.full(4, -8.0), 3), jnp.full(4, -8.5), 4)  # two generations without progress
    assert np.isneginf(stuck.best).all() and (stuck.stale == 0).all()
    assert not (stuck.genes == state.genes).all(-1).any()  # a new lineage each
    mixed = GradientEmitter(enc, None, batch_size=64, fresh=0.5).init(jax.random.key(2), archive, params)
    from_elites = (mixed.genes == enc.genes(archive.genomes[mixed.center], params.variation)).all(-1)
    assert 16 < int(from_elites.sum()) < 48 and np.isneginf(mixed.best[~from_elites]).all()


def test_gradient_instances_spread_over_the_cells_least_attended():
    from jaxfool.emitters import GradientEmitter

    enc = DirectEncoding((6, 6, 1))
    archive = _filled_archive(enc).replace(fitness=jnp.full(4, -3.0))
    params = Params(model=None, variation=DirectParams())
    em = GradientEmitter(enc, None, batch_size=4, restart_after=1, selection="unfooled")
    for seed in range(5):  # independent draws would leave a cell empty in 90 % of starts
        assert sorted(em.init(jax.random.key(seed), archive, params).center.tolist()) == [0, 1, 2, 3]
    state = em.init(jax.random.key(0), archive, params).replace(center=jnp.array([2, 2, 3, 0], jnp.int32))
    gains = jnp.full((4, 4), -50.0).at[2:, :].set(0.0)  # rows 0 and 1 improve nothing: they move
    told = em.tell(jax.random.key(1), state, archive, None, state.center, gains, params)
    assert sorted(told.center[:2].tolist()) == [1, 2] and told.center[2:].tolist() == [3, 0]
