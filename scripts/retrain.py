"""Retrain LeNet with an extra "fooling" class and evolve against it again, iterated.

    python scripts/retrain.py --iterations 15 --out runs/retrain      # the paper's experiment
    python scripts/retrain.py --out runs/retrain                      # continue where it stopped
"""

import argparse
import time

from jaxfool.cli import add_config_flags, enable_compilation_cache, overrides_from_args, run_main
from jaxfool.retrain import RetrainConfig, retrain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/retrain", help="run directory; a rerun continues it (default: runs/retrain)")
    parser.add_argument("--data", default=None, help="MNIST IDX directory (default: $JAXFOOL_DATA, then TFDS)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(parser, RetrainConfig)
    args = parser.parse_args()
    config = RetrainConfig(**overrides_from_args(args, RetrainConfig)).validate()
    enable_compilation_cache()
    start = time.perf_counter()
    rows = retrain(config, args.out, args.data, progress=not args.quiet)
    print(f"{'iter':>4} {'test acc':>9} {'held-out fooling acc':>21} {'runs >=99.99%':>14} {'median gens':>12} {'median best':>12}")
    for r in rows:
        held = f"{100 * r['heldout_fooling_accuracy']:.1f}%" if r["heldout_fooling_accuracy"] is not None else "-"
        print(f"{r['iteration']:>4} {100 * r['test_accuracy']:>8.2f}% {held:>21} {r['runs_all_classes_9999']:>6}/{r['runs']:<7} "
              f"{str(r['median_generations_to_9999'] or '-'):>12} {100 * r['median_best_confidence']:>11.4f}%")
    print(f"wall time this session {time.perf_counter() - start:.0f} s; table in {args.out}/retrain.csv, plot in {args.out}/retrain.png")
    return 0


if __name__ == "__main__":
    run_main(main)
