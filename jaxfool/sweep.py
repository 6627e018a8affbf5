"""Sweeps: a grid over config fields, each point a MAP-Elites run of K vmapped seeds.

Points run one after another in one process (each is one compiled program; parameters that
are traced, like rates, reuse it) or as separate jobs. Each point has its own run directory
under ``points/``: a finished point (its ``summary.json`` exists) is skipped, an unfinished one
resumes from its checkpoint, so a killed sweep restarts where it stopped. ``sweep.csv`` gets one
row per point and ``sweep.png`` compares them.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxfool.config import RunConfig
from jaxfool.errors import ConfigError
from jaxfool.presets import load_preset


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """``["encoding=direct,cppn", "mutation_rate=0.1,0.2"]`` -> typed value lists.

    Keys are :class:`RunConfig` fields (dashes or underscores) or ``preset``.
    """
    hints = typing.get_type_hints(RunConfig)
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"grid axis {spec!r} must look like field=value1,value2")
        if key != "preset" and key not in hints:
            raise ConfigError(f"unknown config field {key!r} in --grid")
        kind = str if key == "preset" else hints[key]
        parsed = []
        for text in values.split(","):
            text = text.strip()
            try:
                if kind is bool:
                    if text.lower() not in ("true", "false"):
                        raise ValueError
                    parsed.append(text.lower() == "true")
                elif typing.get_origin(kind) is tuple:
                    parsed.append(tuple(t for t in text.split("+") if t))  # tuples: a+b
                else:
                    parsed.append(kind(text))
            except ValueError:
                raise ConfigError(f"--grid {key}: {text!r} is not a valid {getattr(kind, '__name__', kind)}") from None
        grid[key] = parsed
    return grid


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in order."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict[str, Any]) -> str:
    """A directory name for a point: ``encoding=cppn_mutation_rate=0.2``."""
    text = "_".join(f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in point.items()) or "base"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text)


def point_config(base_preset: str, point: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """The config of one point: its preset (or the base), the shared overrides, its values."""
    values = dict(point)
    preset = values.pop("preset", base_preset)
    return load_preset(preset, **{**overrides, **values})


def _median_or_none(values: list[int | None]) -> float | None:
    finite = sorted(v if v is not None else np.inf for v in values)
    m = float(np.median(finite))
    return m if np.isfinite(m) else None


def summary_row(point: dict[str, Any], summary: dict) -> dict[str, Any]:
    """One ``sweep.csv`` row from a point's summary."""
    seeds = summary["seeds"]
    threshold = summary["config"]["threshold"]
    best = np.array([s["best_confidence"] for s in seeds])
    to_9999 = [s["generations_to_0.9999"] for s in seeds]
    return {
        **{k: "+".join(v) if isinstance(v, tuple) else v for k, v in point.items()},
        "seeds": len(seeds),
        "median_generations_to_99": _median_or_none([s["generations_to_0.99"] for s in seeds]),
        "median_generations_to_9999": _median_or_none(to_9999),
        "min_generations_to_9999": min((g for g in to_9999 if g is not None), default=None),
        "max_generations_to_9999": max(to_9999) if all(g is not None for g in to_9999) else None,
        "seeds_fooled": sum(s["classes_fooled"] == len(summary["classes"]) for s in seeds),
        "median_best_confidence": float(np.median(best)),
        "threshold": threshold,
        "evals_per_s": summary["evals_per_s"],
        "wall_time_s": summary["wall_time_s"],
    }


def run_sweep(
    base_preset: str,
    grid: dict[str, list[Any]],
    out_dir: str,
    overrides: dict[str, Any] | None = None,
    progress_bar: bool = False,
    log: Callable[[str], None] = print,
    shard: str = "auto",
) -> list[dict[str, Any]]:
    """Runs every point not yet finished; returns all rows (also ``sweep.csv``/``sweep.png``)."""
    from jaxfool.runner import resume_config, run

    overrides = overrides or {}
    todo = [(p, point_config(base_preset, p, overrides)) for p in points(grid)]  # validate all first
    os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump({"preset": base_preset, "grid": {k: [list(v) if isinstance(v, tuple) else v for v in vs] for k, vs in grid.items()},
                   "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}}, f, indent=2)
    rows = []
    for i, (point, config) in enumerate(todo):
        run_dir = os.path.join(out_dir, "points", point_name(point))
        summary_path = os.path.join(run_dir, "summary.json")
        if os.path.exists(summary_path):
            log(f"[{i + 1}/{len(todo)}] {point_name(point)}: done, skipped")
            with open(summary_path) as f:
                summary = json.load(f)
        else:
            resuming = os.path.exists(os.path.join(run_dir, "config.json"))
            log(f"[{i + 1}/{len(todo)}] {point_name(point)}: {'resuming' if resuming else 'running'} {config.seeds} seeds")
            if resuming:
                config = resume_config(run_dir, generations=config.generations)
            summary = run(config, run_dir, resume=resuming, progress_bar=progress_bar, shard=shard)
        rows.append(summary_row(point, summary))
        write_results(out_dir, rows)
    return rows


_ROW_FIELDS = {
    "seeds", "median_generations_to_99", "median_generations_to_9999", "min_generations_to_9999",
    "max_generations_to_9999", "seeds_fooled", "median_best_confidence", "threshold", "evals_per_s", "wall_time_s",
}


def write_results(out_dir: str, rows: list[dict[str, Any]]) -> None:
    """``sweep.csv`` and ``sweep.png``."""
    with open(os.path.join(out_dir, "sweep.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k not in _ROW_FIELDS]  # the grid's own fields
    labels = ["\n".join(f"{k}={r[k]}" for k in keys) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.8 * len(rows)), 4.8))
    x = np.arange(len(rows))

    def column(name):
        return np.array([r[name] if r[name] is not None else np.nan for r in rows], float)

    med, lo, hi = column("median_generations_to_9999"), column("min_generations_to_9999"), column("max_generations_to_9999")
    axes[0].bar(x, np.nan_to_num(med), color="#4c72b0")
    axes[0].errorbar(x, np.nan_to_num(med), yerr=[np.nan_to_num(med - lo), np.nan_to_num(hi - med)], fmt="none", ecolor="k", capsize=3)
    for i, r in enumerate(rows):
        top = np.nanmax([med[i], hi[i], 0.0])
        axes[0].annotate(f"{r['seeds_fooled']}/{r['seeds']} fooled", (i, top), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    axes[0].set(title="generations to 99.99 % in every class\n(median over seeds, min to max)", ylabel="generations")
    axes[1].plot(x, [max(1 - r["median_best_confidence"], 1e-9) for r in rows], "o", color="#dd8452", ms=9)
    axes[1].set_yscale("log")
    axes[1].invert_yaxis()
    axes[1].axhline(1e-4, color="k", ls="--", lw=0.8)
    axes[1].text(x[-1], 1e-4, " 99.99 %", va="bottom", ha="right", fontsize=8)
    axes[1].set(title="1 - median best confidence\n(higher on the page is better)", ylabel="1 - p")
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "sweep.png"), dpi=100)
    plt.close(fig)
