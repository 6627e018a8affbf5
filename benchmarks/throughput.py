"""Throughput of the fused MAP-Elites step against the classifier's raw forward pass.

For each batch size and preset, in one process and interleaved (so all see the same machine
state), each timed as one jitted ``lax.scan`` of ``--generations`` calls on the same batch:
  forward: the classifier scoring a batch of images (its forward pass and log-softmax), nothing else;
  render:  the encoding turning a batch of genomes into images;
  step:    the fused generation (select, mutate, render, score, recombine, insert).
The step starts from an archive grown for ``--grow`` generations (CPPN elites with hidden
nodes, as in a real run; fresh CPPNs have none and render faster), and the forward pass and
render see its elites. Prints one JSON line per batch and preset (``ratio`` = step / forward),
and per batch the CPPN step over the direct step.

Then, for the CPPN encoding, rendering cost against classifier cost per image at 28x28 and
224x224; and runs each preset for several seeds, each with a freshly built (so freshly
compiled) engine, printing generations/evaluations to 99 % and 99.99 % and wall time per seed.

    python benchmarks/throughput.py                                  # direct and CPPN presets
    python benchmarks/throughput.py --presets mnist-direct --seeds 0
    python benchmarks/throughput.py --presets imagenet-cppn --batches 64 --cells 10,1000 --seeds ''
    python benchmarks/throughput.py --classifier torch:lenet5.pt2 --input-mean 0.1307 --input-std 0.3081 \
        --presets mnist-direct --batches 256 --seeds ''          # a PyTorch model through the bridge
    python benchmarks/throughput.py --classifier efficientnet-lite0-torch --presets imagenet-direct \
        --batches 32 --seeds ''     # the same weights through the bridge against our Flax port

``--classifier`` measures each preset with its own classifier and then with the given one, and
prints the given one's step rate over the preset classifier's (``step_over_preset_classifier_step``).

``--cells 10,1000`` measures each preset with 10 and with 1000 class cells (the first N
classes) and prints the step's rate with the most cells over the fewest, and the engine state's
size (archive, keys, counters) for both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
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


def _looped(fn, length: int):
    """A jitted ``lax.scan`` calling ``fn(eps)`` ``length`` times, timed as one program as the
    step is; ``eps`` is a traced zero from the carry, which keeps XLA from hoisting the call."""

    def body(acc, _):
        return acc + jnp.sum(fn(acc * 0.0)).astype(jnp.float32) * 0.0, None

    return jax.jit(lambda: jax.lax.scan(body, jnp.float32(0.0), None, length=length)[0])


def _nudge(tree, eps):
    """``tree`` with ``eps`` (a traced zero) added to its numeric leaves: a data dependency."""
    return jax.tree.map(lambda a: a if a.dtype == jnp.bool_ else a + eps.astype(a.dtype), tree)


def measure(preset: str, batch: int, generations: int, repeats: int, grow: int, **overrides) -> dict:
    """evals/s of the classifier's forward pass, of rendering, and of the fused step at one
    batch size, each one compiled ``lax.scan`` of ``generations`` calls on the same batch,
    interleaved, best of ``repeats``. The step starts from an archive grown for ``grow``
    generations (CPPN elites with hidden nodes, as in a real run); the forward pass and the
    render see that archive's elites, tiled to the batch. ``overrides``: config fields."""
    exp = build_experiment(load_preset(preset, batch=batch, **overrides))
    keys = seed_keys([0])
    params = exp.lane_params(stop=np.inf, max_generation=2**31 - 1)
    state = init_seeds(exp.engine, params, keys)
    if grow:
        state = run_generations(exp.engine, params, state, keys, grow)[0]
    genomes = jax.tree.map(lambda a: jnp.asarray(np.resize(np.asarray(a[0]), (batch, *a.shape[2:]))), state.archive.genomes)
    images = exp.encoding.render(genomes)
    model = exp.classifier.params
    timed = {
        "forward": _looped(lambda eps: exp.classifier.log_probs(model, images + eps, exp.config.compute_dtype), generations),
        "render": _looped(lambda eps: exp.encoding.render(_nudge(genomes, eps)), generations),
        "step": lambda: run_generations(exp.engine, params, state, keys, generations)[0].archive.fitness,
    }
    best = {name: float("inf") for name in timed}
    for fn in timed.values():
        jax.block_until_ready(fn())  # compile and warm up
    for _ in range(repeats):  # interleaved: all see the same machine state
        for name, fn in timed.items():
            best[name] = min(best[name], _best_time(fn, 1))
    rate = {name: batch * generations / t for name, t in best.items()}
    hidden = getattr(state.archive.genomes, "node_on", None)
    return {
        "batch": batch,
        "cells": len(exp.cells),
        "state_mib": round(sum(a.nbytes for a in jax.tree.leaves(state)) / 2**20, 2),
        "forward_evals_per_s": round(rate["forward"]),
        "render_images_per_s": round(rate["render"]),
        "step_evals_per_s": round(rate["step"]),
        "ratio": round(rate["step"] / rate["forward"], 3),
        **({"grown_generations": grow} if grow else {}),
        **({"mean_hidden_nodes": float(np.asarray(hidden[0, :, 4 + exp.encoding.num_outputs:]).sum(1).mean())} if hidden is not None else {}),
    }


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


def time_to_fool(preset: str, seed: int, fresh: bool = True, **overrides) -> dict:
    """One run of ``preset``: generations and seconds to fool. ``fresh``: with a new engine, so
    compilation is in the wall time, as for a newcomer; else reusing this process's programs.
    ``overrides``: config fields (e.g. the classifier)."""
    config = load_preset(preset, seed=seed, **overrides)
    if fresh:
        clear_caches()
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
    parser.add_argument("--compute-dtype", default="float32", help="the classifier's forward pass: float32 | bfloat16")
    parser.add_argument("--grow", type=int, default=50, help="generations grown (not timed) before timing, so CPPN elites have hidden nodes")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds for the time-to-fool runs ('' to skip)")
    parser.add_argument("--imagenet-classifier", default=None, help="classifier for the 224x224 render row")
    parser.add_argument("--cells", default="", help="comma-separated numbers of class cells (the first N classes), "
                        "each measured at every batch, e.g. 10,1000 for ImageNet ('': the preset's)")
    parser.add_argument("--classifier", default=None, help="classifier of every row (default: each preset's), e.g. torch:lenet5.pt2")
    parser.add_argument("--input-shape", default=None, help="with a torch:FILE.py:FACTORY classifier: channels,height,width")
    parser.add_argument("--input-mean", default=None, help="with a torch classifier: per-channel mean")
    parser.add_argument("--input-std", default=None, help="with a torch classifier: per-channel std")
    parser.add_argument("--output", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    model = {} if args.classifier is None else {"classifier": args.classifier}
    for name, parse in (("input_shape", int), ("input_mean", float), ("input_std", float)):
        if getattr(args, name) is not None:
            model[name] = tuple(parse(v) for v in getattr(args, name).split(","))

    lines = [{"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
              "devices": jax.device_count(), "cpus": os.cpu_count(), "jax": jax.__version__}]
    print(json.dumps(lines[0]), flush=True)
    presets = [p for p in args.presets.split(",") if p]

    def emit(row: dict) -> None:
        lines.append(row)
        print(json.dumps(row), flush=True)

    steps: dict = {}
    cells = [int(n) for n in args.cells.split(",") if n]
    for batch in (int(b) for b in args.batches.split(",") if b):
        for preset in presets:
            by_cells = {}
            for n in cells or [None]:
                classes = {} if n is None else {"classes": tuple(str(i) for i in range(n))}
                if model:  # the preset's own classifier first, then the given one at the same batch
                    own = measure(preset, batch, args.generations, args.repeats, args.grow, compute_dtype=args.compute_dtype, **classes)
                    emit({"preset": preset, "compute_dtype": args.compute_dtype, "classifier": load_preset(preset).classifier, **own})
                row = measure(preset, batch, args.generations, args.repeats, args.grow, compute_dtype=args.compute_dtype, **classes, **model)
                by_cells[n] = row
                emit({"preset": preset, "compute_dtype": args.compute_dtype, **({"classifier": args.classifier} if model else {}), **row})
                if model:
                    emit({"preset": preset, "batch": batch, "classifier": args.classifier, "step_over_preset_classifier_step":
                          round(row["step_evals_per_s"] / own["step_evals_per_s"], 3)})
            steps[preset, batch] = by_cells[cells[0] if cells else None]["step_evals_per_s"]
            if len(cells) > 1:  # the step with the most cells against the fewest, measured one after the other
                few, many = by_cells[min(cells)], by_cells[max(cells)]
                emit({"preset": preset, "batch": batch, f"step_{max(cells)}_over_{min(cells)}_cells":
                      round(many["step_evals_per_s"] / few["step_evals_per_s"], 3),
                      f"state_mib_{min(cells)}_{max(cells)}_cells": [few["state_mib"], many["state_mib"]]})
        cppn = [p for p in presets if load_preset(p).encoding == "cppn"]
        direct = [p for p in presets if load_preset(p).encoding == "direct"]
        if cppn and direct:  # measured one after the other at the same batch
            emit({"batch": batch, "cppn_over_direct_step": round(steps[cppn[0], batch] / steps[direct[0], batch], 3),
                  "cppn": cppn[0], "direct": direct[0]})
    if any(load_preset(p).encoding == "cppn" for p in presets):
        emit(render_cost(28, 256, args.repeats, "lenet-mnist"))
        emit(render_cost(224, 32, args.repeats, args.imagenet_classifier))
    for preset in presets:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            emit(time_to_fool(preset, seed, **model))
    if args.output:
        with open(args.output, "a") as f:
            f.writelines(json.dumps(l) + "\n" for l in lines)


if __name__ == "__main__":
    sys.exit(main())
