"""Evaluations to fool every class: the paper's mutation, evosax emitters, a gradient emitter, mixed, and a
single-class baseline, on the same network and budget.

MNIST (LeNet A) to 99.99 %; with ``--imagenet`` also the ImageNet 10-class subset
(EfficientNet-Lite0) to 99 %, which is slow on CPU (a small budget by default). Each method runs
``--seeds`` seeds; a seed that does not get there within ``--generations`` counts as not fooled.
The single-class baseline optimises each class alone with the same per-generation batch, and its
cost to fool all classes is the sum over classes.

    python benchmarks/emitters.py --seeds 3 --generations 300
    python benchmarks/emitters.py --skip-mnist --imagenet --imagenet-generations 200 \
        --only "paper,snes emitters,mutation + snes"          # a subset, on ImageNet
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from jaxfool.baseline import single_class_baseline
from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds, run_generations, seed_keys
from jaxfool.models import load_classifier
from jaxfool.presets import load_preset

IMAGENET_CLASSES = ("king penguin", "starfish", "baseball", "electric guitar", "remote control",
                    "peacock", "school bus", "monarch", "lemon", "volcano")

METHODS = {
    "paper mutation (uniform parents)": dict(preset="mnist-direct"),
    "paper mutation + unfooled parents + recombination (default)": dict(),
    "snes emitters": dict(emitters=("snes",)),
    "sep_cma_es emitters": dict(emitters=("sep_cma_es",)),
    "open_es emitters": dict(emitters=("open_es",)),
    "mixed: mutation + snes": dict(emitters=("mutation", "snes")),
    "mixed: mutation + sep_cma_es": dict(emitters=("mutation", "sep_cma_es")),
    "mixed: mutation + gradient": dict(emitters=("mutation", "gradient")),
}


def map_elites_evaluations(overrides: dict, seeds: int, generations: int, threshold: float, **base) -> dict:
    """Per seed, evaluations until every cell reached ``threshold`` (None: not within budget)."""
    preset = overrides.pop("preset", base.pop("preset", "mnist-direct-fast"))
    exp = build_experiment(load_preset(preset, seeds=seeds, generations=generations, threshold=threshold, **base, **overrides))
    keys = seed_keys(exp.seeds)
    start = time.perf_counter()
    params = exp.lane_params(stop=np.inf)
    state = init_seeds(exp.engine, params, keys)
    _, metrics = run_generations(exp.engine, params, state, keys, generations)
    fitness = np.asarray(metrics.fitness)  # [generations, K, C]
    fooled = (fitness >= math.log(threshold)).all(-1)
    per_seed = [exp.engine.evaluations(int(fooled[:, k].argmax()) + 1) if fooled[:, k].any() else None for k in range(seeds)]
    return {"evaluations": per_seed, "median_best_confidence": float(np.median(np.exp(fitness[-1]))),
            "wall_s": round(time.perf_counter() - start, 1)}


def baseline_evaluations(classifier, strategy: str, seeds: int, budget: int, threshold: float, batch: int, classes=None) -> dict:
    """One class at a time, sharing one budget: a class may use what the others left, so each
    runs with the whole budget and the seed succeeds if the classes' costs sum to within it."""
    start = time.perf_counter()
    totals, best = [], []
    for s in range(seeds):
        r = single_class_baseline(classifier, strategy, population=batch, evaluations_per_class=budget,
                                  threshold=threshold, seed=s, classes=classes)
        total = r["total_evaluations"]
        totals.append(total if total is not None and total <= budget else None)
        best.extend(c["best_confidence"] for c in r["classes"])
    return {"evaluations": totals, "median_best_confidence": float(np.median(best)), "wall_s": round(time.perf_counter() - start, 1)}


def _row(task: str, method: str, result: dict) -> dict:
    ev = result["evaluations"]
    done = [e for e in ev if e is not None]
    median = float(np.median([e if e is not None else np.inf for e in ev]))
    return {"task": task, "method": method, "seeds_fooled": f"{len(done)}/{len(ev)}",
            "median_evaluations": median if math.isfinite(median) else None, "per_seed": ev,
            "median_best_confidence": result["median_best_confidence"], "wall_s": result["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=300, help="MNIST budget: generations of 200")
    parser.add_argument("--imagenet", action="store_true", help="also the ImageNet 10-class subset (slow on CPU)")
    parser.add_argument("--skip-mnist", action="store_true", help="only the ImageNet part")
    parser.add_argument("--imagenet-seeds", type=int, default=None, help="seeds for the ImageNet part (default: --seeds)")
    parser.add_argument("--imagenet-generations", type=int, default=30, help="ImageNet budget: generations of --imagenet-batch")
    parser.add_argument("--imagenet-batch", type=int, default=100)
    parser.add_argument("--only", default="", help="comma-separated parts of method names: run just those")
    parser.add_argument("--output", default=None, help="also write the rows to this JSON-lines file")
    args = parser.parse_args()
    rows = []
    wanted = [w for w in args.only.split(",") if w]

    def chosen(name: str) -> bool:
        return not wanted or any(w in name for w in wanted)

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    if not args.skip_mnist:
        for name, overrides in ((n, o) for n, o in METHODS.items() if chosen(n)):
            emit(_row("mnist 99.99%", name, map_elites_evaluations(dict(overrides), args.seeds, args.generations, 0.9999)))
        lenet = load_classifier("lenet-mnist")
        budget = (args.generations + 1) * 200  # the same total budget as each MAP-Elites seed
        for strategy in (s for s in ("snes", "simple_ga") if chosen(f"single-class baseline: {s}")):
            emit(_row("mnist 99.99%", f"single-class baseline: {strategy}", baseline_evaluations(lenet, strategy, args.seeds, budget, 0.9999, 200)))

    if args.imagenet:
        seeds = args.imagenet_seeds or args.seeds
        base = dict(preset="imagenet-direct", classes=IMAGENET_CLASSES, batch=args.imagenet_batch, score_chunk=50)
        for name, overrides in ((n, o) for n, o in METHODS.items() if chosen(n)):
            overrides = {k: v for k, v in overrides.items() if k != "preset"}
            if name.startswith("paper mutation (uniform"):
                overrides = dict(selection="uniform")
            if "recombination" in name:
                overrides = dict(recombine=True)
            emit(_row("imagenet-10 99%", name, map_elites_evaluations(
                overrides, seeds, args.imagenet_generations, 0.99, **base)))
        if chosen("single-class baseline: snes"):
            net = load_classifier("efficientnet-lite0-imagenet")
            classes = net.class_indices(IMAGENET_CLASSES)
            budget = (args.imagenet_generations + 1) * args.imagenet_batch
            emit(_row("imagenet-10 99%", "single-class baseline: snes",
                      baseline_evaluations(net, "snes", seeds, budget, 0.99, args.imagenet_batch, classes)))
    if args.output:
        with open(args.output, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
