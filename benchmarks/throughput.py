"""Throughput of the fused MAP-Elites step against the classifier's raw forward pass.

For each batch size, in one process and interleaved (so both see the same machine state):
  forward: the jitted classifier on a batch of images, nothing else;
  step:    the fused generation (select, mutate, render, score, recombine, insert) in lax.scan.
Prints one JSON line per batch size: batch, forward_evals_per_s, step_evals_per_s, ratio.

Then, for the CPPN encoding, rendering cost against classifier cost per image at 28x28 and
224x224; and runs each preset for several seeds, each with a freshly built (so freshly
compiled) engine, printing generations/evaluations to 99 % and 99.99 % and wall time per seed.

    python benchmarks/throughput.py                                  # direct and CPPN presets
    python benchmarks/throughput.py --presets mnist-direct --seeds 0
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

from jaxfool.evolution import clear_caches
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
    params = exp.lane_params(stop=np.inf, max_generation=2**31 - 1)
    state = init_seeds(exp.engine, params, keys)
    images = jax.vmap(exp.encoding.render)(state.archive.genomes)[0]
    images = np.resize(np.asarray(images), (batch, *images.shape[1:]))  # B real elite images
    forward = jax.jit(exp.classifier.apply_fn)

    def chunk():
        return run_generations(exp.engine, params, state, keys, generations)[0].archive.fitness

    def forwards():
        return [forward(exp.classifier.params, images) for _ in range(generations)][-1]

    chunk(), forwards()  # compile and warm up
    t_step = t_fwd = float("inf")
    for _ in range(repeats):  # interleaved: both see the same machine state
        t_step = min(t_step, _best_time(chunk, 1))
        t_fwd = min(t_fwd, _best_time(forwards, 1))
    fwd, step = batch * generations / t_fwd, batch * generations / t_step
    return {"batch": batch, "forward_evals_per_s": round(fwd), "step_evals_per_s": round(step), "ratio": round(step / fwd, 3)}


def render_cost(resolution: int, batch: int, repeats: int, classifier: str | None) -> dict:
    """ms per image to render grown CPPNs at ``resolution``, and for ``classifier``'s forward pass."""
    from jaxfool.encodings.cppn import CPPNEncoding, CPPNParams
    from jaxfool.models import load_classifier

    encoding = CPPNEncoding((resolution, resolution, 1))
    genomes = encoding.init(jax.random.key(0), batch)
    mutate = jax.jit(lambda k, g: encoding.mutate(k, g, 1, CPPNParams()))
    for step in range(10):  # grow them a little, as elites are
        genomes = mutate(jax.random.key(step), genomes)
    render = jax.jit(encoding.render)
    render(genomes)
    row = {
        "encoding": "cppn",
        "resolution": resolution,
        "mean_hidden_nodes": float(np.asarray(genomes.node_on[:, encoding.num_outputs + 4 :]).sum(1).mean()),
        "render_ms_per_image": round(1e3 * _best_time(lambda: render(genomes), repeats) / batch, 4),
    }
    if classifier:
        net = load_classifier(classifier)
        images = np.asarray(render(genomes))
        if net.input_shape[-1] == 3:
            images = np.repeat(images, 3, axis=-1)
        forward = jax.jit(net.apply_fn)
        forward(net.params, images)
        row["classifier"] = classifier
        row["classifier_ms_per_image"] = round(1e3 * _best_time(lambda: forward(net.params, images), repeats) / batch, 4)
    return row


def time_to_fool(preset: str, seed: int) -> dict:
    """One fresh run of ``preset`` (compilation included): generations and seconds to fool."""
    config = load_preset(preset, seed=seed)
    clear_caches()  # a fresh engine per seed: compilation is in the wall time, as for a newcomer
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
    parser.add_argument("--presets", default=f"{DEFAULT},mnist-cppn", help="comma-separated presets")
    parser.add_argument("--batches", default="256,1024,4096", help="comma-separated batch sizes")
    parser.add_argument("--generations", type=int, default=10, help="generations per timed chunk")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions; the best counts")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds for the time-to-fool runs ('' to skip)")
    parser.add_argument("--imagenet-classifier", default=None, help="classifier for the 224x224 render row")
    parser.add_argument("--output", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()

    lines = [{"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
              "devices": jax.device_count(), "cpus": os.cpu_count(), "jax": jax.__version__}]
    print(json.dumps(lines[0]), flush=True)
    presets = [p for p in args.presets.split(",") if p]

    def emit(row: dict) -> None:
        lines.append(row)
        print(json.dumps(row), flush=True)

    for preset in presets:
        for batch in (int(b) for b in args.batches.split(",") if b):
            emit({"preset": preset, **measure(preset, batch, args.generations, args.repeats)})
    if any(load_preset(p).encoding == "cppn" for p in presets):
        emit(render_cost(28, 256, args.repeats, "lenet-mnist"))
        emit(render_cost(224, 32, args.repeats, args.imagenet_classifier))
    for preset in presets:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            emit(time_to_fool(preset, seed))
    if args.output:
        with open(args.output, "a") as f:
            f.writelines(json.dumps(l) + "\n" for l in lines)


if __name__ == "__main__":
    sys.exit(main())
