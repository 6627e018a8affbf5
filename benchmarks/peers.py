"""jaxfool against the MAP-Elites a user would otherwise pick: QDax and pyribs, same workload.

Workload: fool the shipped LeNet A; genomes are 28x28 images in [0, 1]; B offspring per
generation; mutation is the paper's polynomial mutation (rate 0.1, index 15) where the library
has it (jaxfool, QDax) and Gaussian mutation (sigma 0.1) in pyribs, which has no polynomial
mutation. Measured in one process, after warm-up, interleaved, best of several repetitions.

Semantics differ, and the figures should be read with that in mind: QDax and pyribs place
each image in ONE cell, chosen by a descriptor (here the class the network predicts, with the
image's top log-probability as fitness); jaxfool, as the paper, lets every image compete in
EVERY class cell with that class's probability, and keeps its genomes as uint8 pixels.

    pip install -e '.[peers]'        # qdax and pyribs (a separate environment is wise)
    python benchmarks/peers.py --batch 1024
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds, run_generations, seed_keys
from jaxfool.models import load_classifier
from jaxfool.presets import load_preset


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def jaxfool_runner(batch: int, generations: int):
    exp = build_experiment(load_preset("mnist-direct", batch=batch))  # paper settings: uniform parents, mutation
    keys = seed_keys([0])
    params = exp.lane_params(stop=np.inf, max_generation=2**31 - 1)
    state = init_seeds(exp.engine, params, keys)
    return lambda: jax.block_until_ready(run_generations(exp.engine, params, state, keys, generations)[0].archive.fitness)


def _lenet_scores(lenet):
    @jax.jit
    def scores(genotypes):
        logp = jax.nn.log_softmax(lenet.apply_fn(lenet.params, genotypes.reshape(-1, 28, 28, 1)))
        return logp.max(-1), logp.argmax(-1)

    return scores


def qdax_runner(batch: int, generations: int):
    from qdax.core.emitters.mutation_operators import polynomial_mutation
    from qdax.core.emitters.standard_emitters import MixingEmitter
    from qdax.core.map_elites import MAPElites
    from qdax.utils.metrics import default_qd_metrics

    scores = _lenet_scores(load_classifier("lenet-mnist"))

    def scoring_fn(genotypes, key):
        fitness, cls = scores(genotypes)
        return fitness, jax.nn.one_hot(cls, 10), {}

    emitter = MixingEmitter(
        mutation_fn=functools.partial(polynomial_mutation, proportion_to_mutate=0.1, eta=15.0, minval=0.0, maxval=1.0),
        variation_fn=lambda x1, x2, key: x1,  # mutation only (variation_percentage 0)
        variation_percentage=0.0,
        batch_size=batch,
    )
    map_elites = MAPElites(scoring_fn, emitter, functools.partial(default_qd_metrics, qd_offset=20.0))
    key = jax.random.key(0)
    init = jax.random.uniform(key, (batch, 784))
    repertoire, emitter_state, _ = map_elites.init(init, jnp.eye(10), key)  # one centroid per class

    @jax.jit
    def chunk(repertoire, emitter_state, key):
        def body(carry, k):
            r, s = carry
            r, s, _ = map_elites.update(r, s, k)
            return (r, s), None

        return jax.lax.scan(body, (repertoire, emitter_state), jax.random.split(key, generations))[0]

    return lambda: jax.block_until_ready(chunk(repertoire, emitter_state, key)[0].fitnesses)


def pyribs_runner(batch: int, generations: int):
    from ribs.archives import GridArchive
    from ribs.emitters import GaussianEmitter
    from ribs.schedulers import Scheduler

    scores = _lenet_scores(load_classifier("lenet-mnist"))
    archive = GridArchive(solution_dim=784, dims=[10], ranges=[(0, 10)], seed=0)
    emitter = GaussianEmitter(archive, sigma=0.1, x0=np.full(784, 0.5), bounds=[(0.0, 1.0)] * 784, batch_size=batch, seed=0)
    scheduler = Scheduler(archive, [emitter])

    def chunk():
        for _ in range(generations):
            solutions = scheduler.ask()
            fitness, cls = scores(jnp.asarray(solutions, jnp.float32))
            scheduler.tell(np.asarray(fitness), np.asarray(cls)[:, None] + 0.5)

    return chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--generations", type=int, default=10, help="generations per timed chunk")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runners = {"jaxfool": jaxfool_runner, "qdax": qdax_runner, "pyribs": pyribs_runner}
    built = {}
    for name, make in runners.items():
        try:
            built[name] = make(args.batch, args.generations)
        except ImportError as e:
            print(json.dumps({"library": name, "skipped": f"not installed ({e.name}); pip install -e '.[peers]'"}))
    times = {name: float("inf") for name in built}
    for name, fn in built.items():
        fn()  # compile / warm up
    for _ in range(args.repeats):
        for name, fn in built.items():  # interleaved: all see the same machine state
            times[name] = min(times[name], _best(fn, 1))
    print(json.dumps({"device": jax.devices()[0].device_kind, "batch": args.batch, "generations_per_chunk": args.generations}))
    for name, t in times.items():
        rate = args.batch * args.generations / t
        print(json.dumps({"library": name, "evals_per_s": round(rate), "relative_to_jaxfool": round(rate / (args.batch * args.generations / times["jaxfool"]), 3)}))


if __name__ == "__main__":
    main()
