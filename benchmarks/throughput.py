"""Throughput of the fused MAP-Elites step against the classifier's raw forward pass.

For each batch size, in one process and interleaved (so both see the same machine state):
  forward: the jitted classifier on a batch of images, nothing else;
  step:    the fused generation (select, mutate, render, score, recombine, insert) in lax.scan.
Prints one JSON line per batch size: batch, forward_evals_per_s, step_evals_per_s, ratio.

Then runs the default experiment for several seeds, each with a freshly built (so freshly
compiled) engine, and prints generations/evaluations to 99 % and 99.99 % and wall time per seed.

    python benchmarks/throughput.py                       # LeNet, direct, 256/1024/4096
    python benchmarks/throughput.py --preset mnist-direct --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds, run_generations, seed_keys
from jaxfool.presets import DEFAULT, load_preset
from jaxfool.runner import run


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def measure(preset: str, batch: int, generations: int, repeats: int, **overrides) -> dict:
    """evals/s of the raw forward pass and of the fused step at one batch size."""
    exp = build_experiment(load_preset(preset, batch=batch, **overrides))
    keys = seed_keys([0])
    state = init_seeds(exp.engine, exp.params, keys)
    images = jax.vmap(exp.encoding.render)(state.archive.genomes)[0]
    images = np.resize(np.asarray(images), (batch, *images.shape[1:]))  # B real elite images
    forward = jax.jit(exp.classifier.apply_fn)
    stop, cap = np.float32(np.inf), np.int32(2**31 - 1)

    def chunk():
        return run_generations(exp.engine, exp.params, state, keys, generations, stop, cap)[0].archive.fitness

    def forwards():
        return [forward(exp.classifier.params, images) for _ in range(generations)][-1]

    chunk(), forwards()  # compile and warm up
    t_step = t_fwd = float("inf")
    for _ in range(repeats):  # interleaved: both see the same machine state
        t_step = min(t_step, _best_time(chunk, 1))
        t_fwd = min(t_fwd, _best_time(forwards, 1))
    fwd, step = batch * generations / t_fwd, batch * generations / t_step
    return {"batch": batch, "forward_evals_per_s": round(fwd), "step_evals_per_s": round(step), "ratio": round(step / fwd, 3)}


def time_to_fool(preset: str, seed: int) -> dict:
    """One fresh run of ``preset`` (compilation included): generations and seconds to fool."""
    config = load_preset(preset, seed=seed)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = run(config, out, progress_bar=False)
        wall = time.perf_counter() - start
    s = summary["seeds"][0]
    return {
        "preset": preset,
        "seed": seed,
        "generations_to_99": s["generations_to_0.99"],
        "generations_to_9999": s["generations_to_0.9999"],
        "evaluations_to_9999": s["evaluations_to_0.9999"],
        "lowest_confidence": min(s["best_confidence"]),
        "run_wall_s": round(summary["wall_time_s"], 2),
        "with_outputs_wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT)
    parser.add_argument("--batches", default="256,1024,4096", help="comma-separated batch sizes")
    parser.add_argument("--generations", type=int, default=10, help="generations per timed chunk")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions; the best counts")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds for the time-to-fool runs ('' to skip)")
    parser.add_argument("--output", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()

    lines = [{"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
              "devices": jax.device_count(), "cpus": os.cpu_count(), "jax": jax.__version__}]
    print(json.dumps(lines[0]), flush=True)
    for batch in (int(b) for b in args.batches.split(",") if b):
        lines.append(measure(args.preset, batch, args.generations, args.repeats))
        print(json.dumps(lines[-1]), flush=True)
    for seed in (int(s) for s in args.seeds.split(",") if s):
        lines.append(time_to_fool(args.preset, seed))
        print(json.dumps(lines[-1]), flush=True)
    if args.output:
        with open(args.output, "a") as f:
            f.writelines(json.dumps(l) + "\n" for l in lines)


if __name__ == "__main__":
    sys.exit(main())
