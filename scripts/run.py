"""Evolve fooling images with MAP-Elites (the main job).

    python scripts/run.py                               # default: LeNet A, direct encoding
    python scripts/run.py --preset mnist-direct         # the paper's own settings
    python scripts/run.py --seeds 5 --out runs/five     # five seeds in one program
    python scripts/run.py --resume runs/five            # continue a killed run
"""

import argparse
import math
import os
import sys
import time

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
from jaxfool.errors import ConfigError
from jaxfool.presets import DEFAULT, available, describe, load_preset
from jaxfool.runner import resume_config, run


def main() -> int:
    # The preset decides the defaults that --help shows, so read it first.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    preset = pre.parse_known_args()[0].preset or DEFAULT
    defaults = load_preset(preset) if preset in available() else load_preset(DEFAULT)

    presets = "\n".join(f"  {n:<18} {describe(n)}" for n in available())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"presets (--preset NAME):\n{presets}")
    parser.add_argument("--preset", default=None, help=f"named experiment, listed below (default: {DEFAULT})")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<preset>-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out (default: refuse)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop after this many minutes (checkpoint and pictures written; --resume continues)")
    add_layout_flags(parser, "the seeds")
    add_config_flags(parser, RunConfig, defaults)
    args = parser.parse_args()
    overrides = overrides_from_args(args, RunConfig)
    start_processes(args)

    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise ConfigError(f"--time-limit must be a number of minutes > 0, got {args.time_limit}")
    if args.resume:
        clash = [flag for flag, given in (("--preset", args.preset), ("--out", args.out), ("--overwrite", args.overwrite)) if given]
        if clash:
            raise ConfigError(f"{clash[0]} cannot be combined with --resume (the run directory fixes the run)")
        config, out_dir = resume_config(args.resume, **overrides), args.resume
    else:
        config = load_preset(preset, **overrides)
        out_dir = args.out or os.path.join("runs", f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    enable_compilation_cache()
    main_process = is_main_process()
    if main_process:
        print(f"run directory: {out_dir}", file=sys.stderr)
    try:
        time_limit = args.time_limit * 60 if args.time_limit is not None else None
        summary = run(config, out_dir, resume=bool(args.resume), progress_bar=not args.quiet, shard=args.shard,
                      time_limit=time_limit, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"interrupted; checkpoint saved. Continue with: python scripts/run.py --resume {out_dir}", file=sys.stderr)
        return 130
    if not main_process:
        return 0
    cells, pct = len(summary["classes"]), f"{100 * config.threshold:g}%"
    for s in summary["seeds"]:
        to = s[f"generations_to_{config.threshold:g}"]
        if to is not None:
            reached = f"all {cells} classes >= {pct} at generation {to} ({s[f'evaluations_to_{config.threshold:g}']:,} evaluations)"
            if s["generations"] > to:  # --no-stop-when-fooled: it went on
                reached += f", ran {s['generations']} generations ({s['evaluations']:,} evaluations)"
        else:
            reached = (f"{s['classes_fooled']}/{cells} classes >= {pct} after {s['generations']} generations ({s['evaluations']:,} evaluations); "
                       f"median best confidence {100 * s['median_confidence']:.2f}%, {100 * s['fraction_at_least_0.99']:.0f}% of classes >= 99%, "
                       f"{100 * s['fraction_at_least_0.9999']:.0f}% >= 99.99%")
        empty = f"; {s['cells_never_filled']} cells never filled (the network gave no finite score)" if s["cells_never_filled"] else ""
        again = (f"; re-scored in float32, {s['classes_fooled_float32']}/{cells} stay >= {pct}"
                 if "classes_fooled_float32" in s else "")
        print(f"seed {s['seed']}: {reached}; lowest confidence {100 * min(s['best_confidence']):.4f}%{empty}{again}")
    rate = summary["evals_per_s"]
    print(f"stopped: {summary['stopped']}; wall time {summary['wall_time_s']:.1f} s"
          + (f", {rate:,.0f} evaluations/s after compilation" if rate else "") + f"; pictures in {out_dir}/elites.png")
    return 0


if __name__ == "__main__":
    run_main(main)
