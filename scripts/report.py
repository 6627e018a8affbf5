"""Write report.html, one self-contained page, for a run directory.

    python scripts/report.py runs/mnist-direct-fast-20261123-120000
"""

import argparse
import os

from jaxfool.cli import run_main
from jaxfool.errors import CheckpointError
from jaxfool.report import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a directory written by scripts/run.py (or jaxfool.fool)")
    parser.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.run_dir, "summary.json")):
        raise CheckpointError(f"{args.run_dir} has no summary.json: not a finished run directory")
    print(write_report(args.run_dir, args.out))
    return 0


if __name__ == "__main__":
    run_main(main)
