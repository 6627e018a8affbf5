"""One command for an accelerator: every throughput figure the README's GPU table needs.

JSON lines out (also appended to ``--output``), in this order, each section timed as in
``benchmarks/throughput.py`` (one compiled ``lax.scan`` per figure, best of ``--repeats``,
archives grown first so CPPN elites have hidden nodes):

1. LeNet (MNIST): direct and CPPN fused step, forward pass and render at batch 1 024, 16 384 and
   131 072, the CPPN with both renderers (``grouped``, ``unrolled``);
2. EfficientNet-Lite0 (ImageNet): direct and CPPN at batch 64, 256 and 1 024, float32 and
   bfloat16 forward pass;
3. time to fool MNIST (default direct preset and ``mnist-cppn``), compilation included (a fresh
   engine) and excluded (the same run again in this process);
4. 64 seeds x 4 096 offspring (the default preset) until every seed has fooled every class;
5. PyTorch models through the bridge (the torch extra; skipped without it): EfficientNet-Lite0
   with the same weights as section 2 (``efficientnet-lite0-torch``) against our Flax port, and a
   LeNet-5 ``torch.export`` program (untrained: speed does not depend on the weights), step
   against forward pass at the LeNet batches.

``--small`` runs the same sections at toy sizes on any machine, CPU included (a smoke test
runs it); a full run is sized for about 8 minutes on one H100/H200.

    python benchmarks/gpu_suite.py --output runs/bench/gpu.jsonl
    python benchmarks/gpu_suite.py --small
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import measure, time_to_fool  # noqa: E402 (the benchmark next door)

from jaxfool.evolution import clear_caches  # noqa: E402
from jaxfool.presets import DEFAULT, load_preset  # noqa: E402
from jaxfool.runner import run  # noqa: E402

FULL = {"lenet": (1024, 16384, 131072), "lite0": (64, 256, 1024), "seeds": (64, 4096), "generations": 10, "grow": 50, "repeats": 5}
SMALL = {"lenet": (32, 64), "lite0": (2,), "seeds": (2, 64), "generations": 2, "grow": 2, "repeats": 1}


def many_seeds(seeds: int, batch: int) -> dict:
    """``seeds`` lanes of the default preset, each of ``batch`` offspring, until all are fooled."""
    clear_caches()
    with tempfile.TemporaryDirectory() as out:
        summary = run(load_preset(DEFAULT, seeds=seeds, batch=batch), out, progress_bar=False)
    generations = [s["generations"] for s in summary["seeds"]]
    return {"section": "seeds", "preset": DEFAULT, "seeds": seeds, "batch": batch, "all_fooled": summary["all_fooled"],
            "max_generations": max(generations), "evaluations": summary["evaluations"],
            "wall_s": round(summary["wall_time_s"], 2), "evals_per_s": round(summary["evals_per_s"] or 0)}


def torch_rows(size: dict, timing: dict):
    """The bridge's rows: Lite0 through torch against our port (same batch, one after the other),
    and a LeNet-5 program's step against its forward pass."""
    try:
        import torch
        import torchax  # noqa: F401
    except ImportError as e:
        yield {"section": "torch", "skipped": f"the torch extra is not installed ({e.name})"}
        return
    for batch in size["lite0"]:
        port = measure("imagenet-direct", batch, score_chunk=0, **timing)
        bridged = measure("imagenet-direct", batch, score_chunk=0, classifier="efficientnet-lite0-torch", **timing)
        yield {"section": "torch", "model": "efficientnet-lite0-torch", **bridged,
               "step_over_port_step": round(bridged["step_evals_per_s"] / port["step_evals_per_s"], 3)}
    from susceptibility import lenet5

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lenet5.pt2")
        torch.export.save(torch.export.export(lenet5().eval(), (torch.zeros(1, 1, 28, 28),)), path)
        for batch in size["lenet"]:
            yield {"section": "torch", "model": "lenet5.pt2", **measure(DEFAULT, batch, classifier=f"torch:{path}", **timing)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="toy sizes: a smoke test on any machine")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out: lenet, lite0, fool, seeds, torch")
    parser.add_argument("--output", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    size, skip = (SMALL if args.small else FULL), set(args.skip.split(","))
    timing = dict(generations=size["generations"], repeats=size["repeats"], grow=size["grow"])

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(json.dumps(row) + "\n")

    emit({"section": "machine", "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
          "devices": jax.device_count(), "jax": jax.__version__, "small": args.small})
    start = time.perf_counter()
    if "lenet" not in skip:
        for batch in size["lenet"]:
            emit({"section": "lenet", "preset": DEFAULT, **measure(DEFAULT, batch, **timing)})
            for renderer in ("grouped", "unrolled"):
                emit({"section": "lenet", "preset": "mnist-cppn", "renderer": renderer,
                      **measure("mnist-cppn", batch, renderer=renderer, **timing)})
    if "lite0" not in skip:
        for preset in ("imagenet-direct", "imagenet-cppn"):
            for batch in size["lite0"]:
                for dtype in ("float32", "bfloat16"):
                    emit({"section": "lite0", "preset": preset, "compute_dtype": dtype,
                          **measure(preset, batch, compute_dtype=dtype, score_chunk=0, **timing)})
    if "fool" not in skip:
        for preset in (DEFAULT, "mnist-cppn"):
            first = time_to_fool(preset, 0)  # a fresh engine: compilation included
            again = time_to_fool(preset, 0, fresh=False)  # compiled programs reused
            emit({"section": "fool", **first, "run_wall_s_compiled": again["run_wall_s"]})
    if "seeds" not in skip:
        emit(many_seeds(*size["seeds"]))
    if "torch" not in skip:
        for row in torch_rows(size, timing):
            emit(row)
    emit({"section": "done", "wall_s": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    sys.exit(main())
