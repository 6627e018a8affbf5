"""Score a run's elites on other classifiers: do fooling images transfer?

    python scripts/transfer.py RUN_DIR --to lenet-mnist-b
    python scripts/transfer.py RUN_DIR --to lenet-mnist-b --to runs/retrain/iteration_03/dnn.msgpack
"""

import argparse
import os

from jaxfool.cli import run_main
from jaxfool.models import load_classifier
from jaxfool.pictures import safe_name
from jaxfool.tables import write_json
from jaxfool.transfer import load_elites, transfer, transfer_picture


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory (scripts/run.py or scripts/gradient_ascent.py)")
    parser.add_argument("--to", action="append", required=True, help="target classifier (repeatable)")
    parser.add_argument("--out", default=None, help="where to write transfer-<target>.{json,png} (default: RUN_DIR)")
    args = parser.parse_args()
    elites = load_elites(args.run_dir)
    out = args.out or args.run_dir
    os.makedirs(out, exist_ok=True)
    for spec in args.to:
        target = load_classifier(spec)
        result = transfer(elites, target)
        stem = os.path.join(out, f"transfer-{safe_name(target.name)}")
        write_json(stem + ".json", result)
        transfer_picture(stem + ".png", elites, result, list(target.class_names))
        print(f"{result['source']} -> {result['target']}: {result['at_least_99']}/{result['images']} elites stay >= 99 % "
              f"({result['at_least_9999']} >= 99.99 %), {result['same_class_top1']} keep their class as top-1; "
              f"median confidence {100 * result['median_target_confidence']:.2f}%")
        print(f"{'class':>12} {'images':>6} {'source':>9} {'target mean':>11} {'min':>8} {'max':>8} {'>=99%':>6}")
        for row in result["per_class"]:
            print(f"{row['index']:>3} {row['name'][:8]:>8} {row['images']:>6} {100 * row['source_confidence']:>8.3f}% "
                  f"{100 * row['target_confidence_mean']:>10.3f}% {100 * row['target_confidence_min']:>7.2f}% "
                  f"{100 * row['target_confidence_max']:>7.2f}% {row['at_least_99']:>6}")
        print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    run_main(main)
