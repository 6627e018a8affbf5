"""Re-score the saved elite PNGs of finished runs, and compare runs class by class.

For each RUN_DIR: every ``elites/*.png`` (first seed) is read back, scored by the run's network
exactly as the run scored it (one crop, or ten with ``--ten-crop``), and compared with the
confidence the run reported; then the images' regularity (neighbour-pixel correlation, PNG
bits per pixel). Prints one JSON line per run and a Markdown table: per class the re-scored
confidence in each run, and the median over classes, with evaluations and wall time.

    python benchmarks/rescore.py runs/exp17/faithful10 runs/exp17/fast10
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from jaxfool.cli import run_main
from jaxfool.errors import ConfigError
from jaxfool.experiment import build_experiment
from jaxfool.pictures import elite_paths, load_png
from jaxfool.regularity import regularity
from jaxfool.runner import resume_config
from jaxfool.summary import rescore_elites


def rescore(run_dir: str) -> dict:
    """The first seed's elites of ``run_dir``, re-scored from their PNGs (see above)."""
    summary_path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(summary_path):
        raise ConfigError(f"{run_dir} has no summary.json: not a finished run")
    with open(summary_path) as f:
        summary = json.load(f)
    exp = build_experiment(resume_config(run_dir))
    paths = elite_paths(run_dir, exp.cells, exp.cell_names, exp.seeds)[0]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise ConfigError(f"{missing[0]} is missing: re-scoring needs every elite's PNG")
    images = np.stack([load_png(p, exp.encoding.image_shape[-1]) for p in paths])
    confidence = rescore_elites(exp, images[None], chunk=16)[0]
    seed = summary["seeds"][0]
    reported = np.asarray(seed["best_confidence"], np.float64)
    return {
        "run": run_dir,
        "preset_emitters": list(exp.config.emitters),
        "evaluations": seed.get("evaluations"),
        "generations": seed.get("generations"),
        "wall_time_s": round(summary.get("wall_time_s", float("nan")), 1),
        "classes": exp.cell_names,
        "rescored": [round(float(c), 6) for c in confidence],
        "max_abs_difference_from_reported": float(np.max(np.abs(confidence - reported))),
        "median": float(np.median(confidence)),
        "at_least_0.99": int((confidence >= 0.99).sum()),
        "at_least_0.9999": int((confidence >= 0.9999).sum()),
        **regularity(images),
    }


def table(rows: list[dict]) -> str:
    """Markdown: one row per class (runs side by side, re-scored confidence in %), then medians."""
    names = rows[0]["classes"]
    if any(r["classes"] != names for r in rows):
        raise ConfigError("the runs evolved different classes; compare runs of the same --classes")
    head = "| class | " + " | ".join(os.path.basename(r["run"].rstrip("/")) for r in rows) + " |"
    lines = [head, "|---" * (len(rows) + 1) + "|"]
    for c, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{100 * r['rescored'][c]:.2f}" for r in rows) + " |")
    lines.append("| **median** | " + " | ".join(f"**{100 * r['median']:.2f}**" for r in rows) + " |")
    lines.append("| evaluations | " + " | ".join(f"{r['evaluations']:,}" for r in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run directories")
    args = parser.parse_args()
    rows = [rescore(r) for r in args.runs]
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "classes"}))
    print(table(rows))


if __name__ == "__main__":
    run_main(main)
