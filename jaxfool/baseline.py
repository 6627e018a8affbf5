"""A single-class baseline: fool one class at a time with an evosax strategy.

The paper argues that MAP-Elites' many cells help: an image that is bad for its own class may
be a stepping stone for another. The baseline tests that by spending the same kind of budget
on each class separately: for every class an independent evosax strategy (a GA or an ES over
the direct encoding's pixels in [0, 1]) minimises ``-log p(class)`` until the class reaches
the threshold or its budget runs out. The classes run side by side (vmapped), but each one's
evaluations are counted on its own, and fooling all classes costs their sum.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxfool.emitters import ES_STRATEGIES, EVEN_POPULATION
from jaxfool.encodings.base import quantize
from jaxfool.errors import ConfigError
from jaxfool.models.classifier import Classifier

# The emitters' evosax strategies (but CMA-ES, O(D^3) per generation) and a GA.
STRATEGIES = {"simple_ga": "SimpleGA", **{k: ES_STRATEGIES[k] for k in ("snes", "sep_cma_es", "open_es")}}


def _strategy(name: str, population: int, dims: int, std: float):
    from evosax import algorithms

    es = getattr(algorithms, STRATEGIES[name])(population_size=population, solution=jnp.zeros(dims, jnp.float32))
    params = es.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=std)
    return es, params


@functools.partial(jax.jit, static_argnames=("log_probs", "name", "population", "generations", "std", "shape"))
def _optimise(log_probs, model_params, key, classes, threshold_log, name, population, generations, std, shape):
    dims = math.prod(shape)
    es, es_params = _strategy(name, population, dims, std)
    population_based = name == "simple_ga"

    def score(genes, c):
        images = quantize(jnp.clip(genes, 0.0, 1.0)).reshape(-1, *shape)
        return log_probs(model_params, images)[:, c]

    def one_class(key, c):
        k_init, k_run = jax.random.split(key)
        if population_based:
            x0 = jax.random.uniform(k_init, (population, dims))
            state = es.init(k_init, x0, -score(x0, c), es_params)
            best0 = jnp.max(score(x0, c))
        else:
            state = es.init(k_init, jnp.full((dims,), 0.5), es_params)
            best0 = jnp.float32(-jnp.inf)

        def generation(carry, k):
            state, best, reached, g = carry
            pop, state = es.ask(k, state, es_params)
            pop = jnp.clip(pop, 0.0, 1.0)
            s = score(pop, c)
            state, _ = es.tell(k, pop, -s, state, es_params)
            best = jnp.maximum(best, jnp.max(s))
            g = g + 1
            reached = jnp.where((reached < 0) & (best >= threshold_log), g, reached)
            return (state, best, reached, g), best

        reached0 = jnp.where(best0 >= threshold_log, 0, -1)
        (_, best, reached, _), history = jax.lax.scan(
            generation, (state, best0, reached0, 0), jax.random.split(k_run, generations)
        )
        return best, reached, history

    return jax.vmap(one_class)(jax.random.split(key, classes.shape[0]), classes)


def single_class_baseline(
    classifier: Classifier,
    strategy: str = "simple_ga",
    population: int = 200,
    evaluations_per_class: int = 10_000,
    threshold: float = 0.9999,
    std: float = 0.1,
    seed: int = 0,
    classes: tuple[int, ...] | None = None,
) -> dict:
    """Fools each class separately with an evosax strategy.

    Args:
      classifier: images in [0, 1].
      strategy: a key of :data:`STRATEGIES`.
      population: images per generation, per class.
      evaluations_per_class: each class's budget, a GA's initial population included (rounded
        down to whole generations).
      threshold: confidence that counts as fooled.
      std: initial mutation / search width for the strategies that have one.
      seed: PRNG seed.
      classes: which classes (default: all).

    Returns:
      per class the best confidence and the evaluations it took to reach ``threshold``
      (``None``: not within budget; a GA's random initial population counts), and the total.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy in EVEN_POPULATION and population % 2:
        raise ConfigError(f"population must be even for open_es (antithetic pairs), got {population}")
    initial = population if strategy == "simple_ga" else 0  # a GA scores a random population first
    generations = (evaluations_per_class - initial) // population
    if generations < 1:
        raise ConfigError(f"evaluations_per_class ({evaluations_per_class}) is below one population ({population})")
    classes = tuple(range(classifier.num_classes)) if classes is None else tuple(classes)
    best, reached, history = _optimise(
        classifier.log_probs, classifier.params, jax.random.key(seed), jnp.asarray(classes, jnp.int32),
        jnp.float32(math.log(threshold)), strategy, population, generations, float(std), tuple(classifier.input_shape),
    )
    best, reached = np.asarray(best, np.float64), np.asarray(reached)
    per_class = [
        {"index": c, "name": classifier.class_names[c], "best_confidence": float(np.exp(b)),
         "evaluations_to_threshold": int(initial + r * population) if r >= 0 else None}
        for c, b, r in zip(classes, best, reached)
    ]
    done = [p["evaluations_to_threshold"] for p in per_class]
    return {
        "strategy": strategy,
        "population": population,
        "evaluations_per_class": initial + generations * population,
        "classes": per_class,
        "all_reached": all(d is not None for d in done),
        "total_evaluations": sum(d for d in done if d is not None) if all(d is not None for d in done) else None,
        "history": np.exp(np.asarray(history, np.float64)).T.tolist(),  # [generations, C] best confidence
    }
