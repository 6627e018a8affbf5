"""The paper's ten crops against one crop, on the same CPPN elites of a finished run.

Each elite of RUN_DIR (its newest checkpoint; a CPPN run, so an elite renders at any size) is
rendered at the network's input size and scored on that one crop, and rendered at 8/7 of it
(256 for 224) and scored as the paper did: the mean softmax of 10 crops (4 corners and the
centre, each also mirrored). Prints one JSON line: per scoring, the median confidence of the
elites in their own classes, the share at 99 % and 99.99 %, and milliseconds per evaluation (one
image scored, best of ``--repeats``); and how many elites at 99 % under one stay there under the other.

    python benchmarks/ten_crop.py runs/imagenet-cppn-20261204-083000
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxfool import checkpointing
from jaxfool.cli import run_main
from jaxfool.errors import ConfigError
from jaxfool.experiment import build_experiment, image_shape
from jaxfool.map_elites import init_seeds, seed_keys
from jaxfool.runner import resume_config
from jaxfool.scoring import make_score_fn


def compare(run_dir: str, batch: int = 16, repeats: int = 3) -> dict:
    """One crop against ten on the elites of ``run_dir`` (first seed), as described above."""
    config = resume_config(run_dir)
    if config.encoding != "cppn":
        raise ConfigError(f"{run_dir} is a {config.encoding} run: ten_crop.py re-renders CPPN elites at two sizes")
    exp = build_experiment(config)
    params = exp.lane_params(stop=np.inf, max_generation=2**31 - 1)
    keys = seed_keys(list(exp.seeds))
    like = init_seeds(exp.engine, params, keys)
    _, state, _ = checkpointing.restore_checkpoint(f"{run_dir}/checkpoints", like)
    archive = jax.tree.map(lambda a: a[0], state.archive)
    filled = np.asarray(archive.filled)
    genomes = jax.tree.map(lambda g: g[filled], archive.genomes)
    cells = np.asarray(exp.cells)[filled]
    size = exp.classifier.input_shape[0]
    ten_side = image_shape(config.replace(ten_crop=True, render_size=0), exp.classifier)[0]
    rows = {}
    for name, side, ten in (("one_crop", size, False), ("ten_crop", ten_side, True)):
        score = jax.jit(make_score_fn(exp.classifier, cells.tolist(), ten_crop=ten))
        render = jax.jit(lambda g, side=side: exp.encoding.render(g, side, side))
        confidence, best = [], float("inf")
        for start in range(0, len(cells), batch):
            part = jax.tree.map(lambda g: g[start : start + batch], genomes)
            log_p = np.asarray(score(exp.classifier.params, render(part)))  # [b, cells]
            confidence.extend(np.exp(log_p[np.arange(len(log_p)), np.arange(start, start + len(log_p))]))
        images = render(jax.tree.map(lambda g: jnp.resize(g[:1], (batch, *g.shape[1:])), genomes))
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(score(exp.classifier.params, images))
            best = min(best, time.perf_counter() - t)
        c = np.array(confidence)
        rows[name] = {"side": side, "median_confidence": float(np.median(c)), "at_least_0.99": float((c >= 0.99).mean()),
                      "at_least_0.9999": float((c >= 0.9999).mean()), "ms_per_evaluation": round(1000 * best / batch, 2),
                      "confidence": c}
    one, ten = rows["one_crop"].pop("confidence"), rows["ten_crop"].pop("confidence")
    return {"run": run_dir, "elites": int(len(cells)), **rows,
            "one_crop_99_stay_under_ten": f"{int(((one >= 0.99) & (ten >= 0.99)).sum())}/{int((one >= 0.99).sum())}",
            "ten_crop_99_stay_under_one": f"{int(((one >= 0.99) & (ten >= 0.99)).sum())}/{int((ten >= 0.99).sum())}",
            "ten_crop_time_over_one": round(rows["ten_crop"]["ms_per_evaluation"] / rows["one_crop"]["ms_per_evaluation"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished or checkpointed CPPN run directory")
    parser.add_argument("--batch", type=int, default=16, help="elites scored at once (and the timed batch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best counts")
    args = parser.parse_args()
    print(json.dumps(compare(args.run_dir, args.batch, args.repeats)))
    return 0


if __name__ == "__main__":
    run_main(main)
