"""Fool a classifier by gradient ascent on the input, every class at once.

    python scripts/gradient_ascent.py                         # LeNet A, all ten digits
    python scripts/gradient_ascent.py --start blank --steps 300 --out runs/ga
"""

import argparse
import os
import sys
import time

from jaxfool.cli import add_config_flags, enable_compilation_cache, overrides_from_args, run_main
from jaxfool.gradient import GradientConfig, gradient_ascent, write_outputs
from jaxfool.models import load_classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="lenet-mnist", help="registered name, checkpoint path or module:factory")
    parser.add_argument("--classes", default="", help="comma-separated class names or indices (default: all)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/gradient-<timestamp>)")
    add_config_flags(parser, GradientConfig)
    args = parser.parse_args()
    config = GradientConfig(**overrides_from_args(args, GradientConfig)).validate()
    classifier = load_classifier(args.classifier)
    cells = classifier.class_indices([c for c in args.classes.split(",") if c] or None)
    out = args.out or os.path.join("runs", f"gradient-{time.strftime('%Y%m%d-%H%M%S')}")
    enable_compilation_cache()

    start = time.perf_counter()
    result = gradient_ascent(classifier, config, cells)
    result.images.block_until_ready()  # the wall time covers the whole optimisation
    wall = time.perf_counter() - start

    report = write_outputs(out, classifier, cells, config, result, wall)
    for entry in report["classes"]:
        steps = entry["steps_to_threshold"]
        print(f"{entry['index']} {entry['name']}: {100 * entry['confidence']:.4f}%"
              + (f" after {steps} steps" if steps is not None else f" (below {100 * config.threshold:g}% after {config.steps} steps)"))
    print(f"wall time {wall:.1f} s (compilation included); pictures in {out}/elites.png", file=sys.stderr)
    return 0 if report["all_reached"] else 1


if __name__ == "__main__":
    run_main(main)
