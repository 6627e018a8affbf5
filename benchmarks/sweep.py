"""A sweep as one program against one run of as many seeds, side by side in one process.

    python benchmarks/sweep.py --points 16 --seeds 4 --generations 40

Rows (evaluations per second after compilation, as :mod:`jaxfool.evolution` defines them, and
wall time including compilation; early stop off, so every lane does the same work):

* ``single run``: one config, ``points x seeds`` seeds: the reference.
* ``sweep, one program``: ``points`` values of ``mutation_rate`` x ``seeds`` seeds, stacked as
  lanes of one compiled program (what ``scripts/sweep.py`` runs).
* ``sweep, point by point``: the same grid run as separate runs one after another, each with
  its own ``seeds`` lanes (how sweeps ran before); ``--skip-serial`` leaves it out.

Nothing is written to disk: the in-memory core is timed, not the pictures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from jaxfool.evolution import Lanes, clear_caches, evolve
from jaxfool.experiment import build_experiment
from jaxfool.presets import load_preset


def _timed(lanes_list: list[Lanes]) -> dict:
    """Runs each in turn; evals/s over the compiled chunks of all of them, wall time overall."""
    start = time.perf_counter()
    results = [evolve(lanes) for lanes in lanes_list]
    wall = time.perf_counter() - start
    timed = sum(r.timed_evaluations for r in results)
    seconds = sum(r.timed_seconds for r in results)
    evaluations = int(sum(r.evaluations.sum() for r in results))
    return {"evaluations": evaluations, "wall_s": round(wall, 2), "evals_per_s": round(timed / seconds) if seconds else None,
            "evals_per_s_with_compile": round(evaluations / wall)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-direct-fast")
    parser.add_argument("--points", type=int, default=16, help="values of mutation_rate in the grid")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per point")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--skip-serial", action="store_true", help="leave out the point-by-point row")
    args = parser.parse_args()
    common = dict(batch=args.batch, generations=args.generations, chunk=args.chunk, stop_when_fooled=False)
    rates = np.linspace(0.05, 0.2, args.points).round(4).tolist()
    rows = []
    # Each row starts with nothing compiled, so its wall time includes its own compilation.
    clear_caches()
    single = Lanes.of([build_experiment(load_preset(args.preset, seeds=args.points * args.seeds, **common))])
    rows.append({"layout": "single run", "lanes": len(single), **_timed([single])})
    clear_caches()
    grid = [build_experiment(load_preset(args.preset, seeds=args.seeds, mutation_rate=r, **common)) for r in rates]
    rows.append({"layout": "sweep, one program", "lanes": args.points * args.seeds, **_timed([Lanes.of(grid)])})
    if not args.skip_serial:
        serial = []
        for r in rates:  # a fresh engine per point, as sweeps ran before: each point compiles
            clear_caches()
            serial.append(Lanes.of([build_experiment(load_preset(args.preset, seeds=args.seeds, mutation_rate=r, **common))]))
        rows.append({"layout": "sweep, point by point", "lanes": args.points * args.seeds, **_timed(serial)})
    for row in rows:
        row["relative_to_single"] = round(row["evals_per_s"] / rows[0]["evals_per_s"], 3) if row["evals_per_s"] else None
        row["wall_relative_to_single"] = round(row["wall_s"] / rows[0]["wall_s"], 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
