"""Sweep a grid of config values, each point running K seeds in one compiled program.

    python scripts/sweep.py --preset mnist-direct --grid encoding=direct,cppn \\
        --grid mutation_rate=0.1,0.2 --seeds 4 --generations 200 --out runs/sweep

Rerunning the same command skips finished points and resumes an unfinished one.
"""

import argparse

from jaxfool.cli import (
    add_config_flags,
    add_layout_flags,
    enable_compilation_cache,
    overrides_from_args,
    run_main,
    start_processes,
)
from jaxfool.config import RunConfig
from jaxfool.distributed import is_main_process
from jaxfool.pictures import confidence_label
from jaxfool.presets import DEFAULT, available
from jaxfool.sweep import parse_grid, run_sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT, help=f"base preset: {', '.join(available())} (default: {DEFAULT})")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                        help="an axis of the grid (repeatable); FIELD is a config field or 'preset'; tuple values join with +")
    parser.add_argument("--out", default="runs/sweep", help="sweep directory (default: runs/sweep)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace another sweep already in --out (default: refuse)")
    add_layout_flags(parser, "the points x seeds")
    add_config_flags(parser, RunConfig)
    args = parser.parse_args()
    start_processes(args)
    enable_compilation_cache()
    rows = run_sweep(args.preset, parse_grid(args.grid), args.out, overrides_from_args(args, RunConfig),
                     progress_bar=not args.quiet, shard=args.shard, overwrite=args.overwrite)
    if not is_main_process():
        return 0
    keys = [k for k in rows[0] if k in {g.split("=")[0].replace("-", "_") for g in args.grid}]
    print(f"{'point':40} {'fooled':>7} {'gens to 99%':>12} {'gens to 99.99%':>15} {'median best':>12} {'evals/s':>9}")
    for r in rows:
        name = ", ".join(f"{k}={r[k]}" for k in keys) or "base"
        g99, g9999 = r["median_generations_to_99"], r["median_generations_to_9999"]
        rate = f"{r['evals_per_s']:,.0f}" if r["evals_per_s"] else "-"
        print(f"{name:40} {r['seeds_fooled']:>3}/{r['seeds']:<3} {g99 if g99 is not None else '-':>12} "
              f"{g9999 if g9999 is not None else '-':>15} {confidence_label(r['median_best_confidence']):>12} {rate:>9}")
    print(f"wrote {args.out}/sweep.csv, sweep.png and sweep.html")
    return 0


if __name__ == "__main__":
    run_main(main)
