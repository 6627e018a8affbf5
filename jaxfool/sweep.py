"""Sweeps: a grid over config fields, run as few compiled programs as the grid allows.

Every (point, seed) is a *lane*. Points that differ only in traced fields (rates, etas,
threshold, generation cap: :data:`jaxfool.config.KINDS`) share an engine, so their lanes are
stacked into one group and run vmapped in one compiled program, each lane with its own row of
``Params``; static fields (encoding, batch, classifier, ...) split the grid into groups, each
compiled once. Lanes stop independently: a lane whose classes are all fooled is frozen and
stops counting evaluations; a group ends when all its lanes are done.

The output layout is per point, as if each had run alone: ``points/<point>/`` holds the same
files as a run directory (``summary.json`` with the same schema, pictures, ``metrics.jsonl``,
``config.json``). Each group checkpoints its stacked state under ``groups/<group>/``: a
killed sweep resumes where it stopped and finishes bit-identical to an uninterrupted one, and
finished groups are skipped. ``sweep.csv`` has one row per point, ``sweep.png`` compares them and
``sweep.html`` shows every point's elites beside its numbers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxfool import checkpointing, pictures
from jaxfool.config import RunConfig
from jaxfool.distributed import decided_by_main, is_main_process
from jaxfool.errors import ConfigError
from jaxfool.presets import load_preset
from jaxfool.report import write_sweep_report
from jaxfool.seed_statistics import seed_table
from jaxfool.tables import median_or_none, write_csv, write_json


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


def summary_row(point: dict[str, Any], summary: dict) -> dict[str, Any]:
    """One ``sweep.csv`` row from a point's summary."""
    seeds = summary["seeds"]
    threshold = summary["config"]["threshold"]
    best = np.array([s["best_confidence"] for s in seeds])
    to_9999 = [s["generations_to_0.9999"] for s in seeds]
    return {
        **{k: "+".join(v) if isinstance(v, tuple) else v for k, v in point.items()},
        "seeds": len(seeds),
        "median_generations_to_99": median_or_none([s["generations_to_0.99"] for s in seeds]),
        "median_generations_to_9999": median_or_none(to_9999),
        "min_generations_to_9999": min((g for g in to_9999 if g is not None), default=None),
        "max_generations_to_9999": max(to_9999) if all(g is not None for g in to_9999) else None,
        "seeds_fooled": sum(s["classes_fooled"] == len(summary["classes"]) for s in seeds),
        "median_best_confidence": float(np.median(best)),
        "threshold": threshold,
        **seed_table(summary),
        "evals_per_s": summary["evals_per_s"],
        "wall_time_s": summary["wall_time_s"],
    }


def check_axes(grid: dict[str, list[Any]]) -> None:
    """Grid axes must be static or traced fields (or ``preset``): seeds are lanes already
    (``--seeds``), and host settings do not change results."""
    kinds = {f.name: f.metadata.get("kind") for f in dataclasses.fields(RunConfig)}
    for key in grid:
        if kinds.get(key) == "lanes":
            raise ConfigError(f"--grid {key}: seeds are lanes of every point already; use --seed and --seeds")
        if kinds.get(key) == "host":
            raise ConfigError(f"--grid {key}: a host setting, not an experiment axis; give it once as --{key.replace('_', '-')}")


def group_name(names: list[str]) -> str:
    """A stable directory name for a group of points."""
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:10]
    return f"{len(names)}-points-{digest}"


def run_sweep(
    base_preset: str,
    grid: dict[str, list[Any]],
    out_dir: str,
    overrides: dict[str, Any] | None = None,
    progress_bar: bool = False,
    log: Callable[[str], None] = print,
    shard: str = "auto",
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Runs every group not yet finished; returns all rows (also ``sweep.csv``/``sweep.png``/
    ``sweep.html``). Every point is validated, and every group laid out on the devices, before
    anything compiles. A sweep directory belongs to one sweep: rerunning the same sweep resumes
    it, another one there is refused unless ``overwrite`` (which removes the old one first)."""
    from jaxfool.distributed import make_plan
    from jaxfool.evolution import Lanes, evolve
    from jaxfool.experiment import build_experiment
    from jaxfool.runner import check_writable, output_errors, restorer
    from jaxfool.writers import Checkpoints, MetricsLog, Outputs, ProgressBar, TensorBoard

    overrides = overrides or {}
    log = log if is_main_process() else (lambda _: None)
    check_axes(grid)
    grid_points = points(grid)
    configs = [point_config(base_preset, p, overrides) for p in grid_points]
    names = [point_name(p) for p in grid_points]
    experiments = [build_experiment(c) for c in configs]
    groups: dict[int, list[int]] = {}
    for i, exp in enumerate(experiments):
        groups.setdefault(id(exp.engine), []).append(i)
    plans = {}
    for key, members in groups.items():
        lanes = Lanes.of([experiments[i] for i in members])
        plans[key] = (lanes, make_plan(shard, len(lanes), lanes.engine.batch_size))
    spec = {"preset": base_preset, "grid": {k: [_plain(v) for v in vs] for k, vs in grid.items()},
            "overrides": {k: _plain(v) for k, v in overrides.items()}}
    def claim() -> None:
        _claim_sweep_dir(out_dir, spec, overwrite)
        check_writable(out_dir)

    decided_by_main(claim)
    if is_main_process():  # first: a sweep killed right after must still be recognised as itself
        write_json(os.path.join(out_dir, "sweep.json"), spec)
    os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
    with output_errors(out_dir, "run the same sweep command again to continue"):
        summaries: dict[int, dict] = {}
        for g, (key, members) in enumerate(groups.items()):
            lanes, plan = plans[key]
            dirs = [os.path.join(out_dir, "points", names[i]) for i in members]
            label = f"[group {g + 1}/{len(groups)}]"
            if all(os.path.exists(os.path.join(d, "summary.json")) for d in dirs):
                for i, d in zip(members, dirs):
                    log(f"{label} {names[i]}: done, skipped")
                    with open(os.path.join(d, "summary.json")) as f:
                        summaries[i] = json.load(f)
                continue
            group_dir = os.path.join(out_dir, "groups", group_name([names[i] for i in members]))
            ckpt_dir = os.path.join(group_dir, "checkpoints")
            if is_main_process():
                os.makedirs(group_dir, exist_ok=True)
                write_json(os.path.join(group_dir, "points.json"), [names[i] for i in members], indent=None)
            resuming = checkpointing.latest_step(ckpt_dir) is not None
            log(f"{label} {'resuming' if resuming else 'running'} {len(members)} point(s) x {configs[members[0]].seeds} seeds "
                f"= {len(lanes)} lanes in one program: {', '.join(names[i] for i in members)}")
            observers: list = []
            outputs = []
            for n, (i, d) in enumerate(zip(members, dirs)):
                os.makedirs(d, exist_ok=True)
                if is_main_process():
                    write_json(os.path.join(d, "config.json"), configs[i].to_dict())
                observers.append(MetricsLog(os.path.join(d, "metrics.jsonl"), experiments[i], lanes.lanes_of(n)))
                outputs.append(Outputs(d, experiments[i], lanes.lanes_of(n)))
                if configs[i].tensorboard:
                    observers.append(TensorBoard(d, experiments[i], lanes.lanes_of(n)))
            every = min((configs[i].checkpoint_every for i in members if configs[i].checkpoint_every), default=0)
            observers.append(Checkpoints(ckpt_dir, every))
            observers.extend(outputs)
            if progress_bar:
                first = configs[members[0]]
                observers.append(ProgressBar(max(configs[i].generations for i in members), len(experiments[members[0]].cells), first.threshold))
            evolve(lanes, observers, plan=plan, resume=restorer(ckpt_dir, resuming))
            for i, o in zip(members, outputs):
                summaries[i] = o.summary
        rows = [summary_row(p, summaries[i]) for i, p in enumerate(grid_points)]
        if is_main_process():
            write_results(out_dir, rows, [os.path.join("points", n) for n in names])
    return rows


def _claim_sweep_dir(out_dir: str, spec: dict, overwrite: bool) -> None:
    """The same sweep may continue in ``out_dir``; another is refused (its finished points would
    be taken for this sweep's), unless ``overwrite`` removes the old sweep first."""
    from jaxfool.runner import holds_files, remove_entries

    if not holds_files(out_dir):
        return
    path = os.path.join(out_dir, "sweep.json")
    try:
        with open(path) as f:
            same = json.load(f) == json.loads(json.dumps(spec))
    except (OSError, ValueError):
        same = False
    if same:
        return
    if not overwrite:
        raise ConfigError(f"{out_dir} already holds files of another sweep (or run); choose a new --out, "
                          "or pass --overwrite to replace it")
    remove_entries(out_dir, lambda name: name in ("points", "groups", "sweep.json", "sweep.csv", "sweep.png", "sweep.html"))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_ROW_FIELDS = {
    "seeds", "median_generations_to_99", "median_generations_to_9999", "min_generations_to_9999",
    "max_generations_to_9999", "seeds_fooled", "median_best_confidence", "threshold", "evals_per_s", "wall_time_s",
    *seed_table({"seeds": [{"evaluations": 1, "fraction_at_least_0.99": 1.0, "fraction_at_least_0.9999": 1.0}]}),
}


def write_results(out_dir: str, rows: list[dict[str, Any]], point_dirs: list[str]) -> None:
    """``sweep.csv``, ``sweep.png`` and ``sweep.html`` (``point_dirs``: each row's directory,
    relative to ``out_dir``)."""
    write_csv(os.path.join(out_dir, "sweep.csv"), rows)
    plt = pictures.pyplot()

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
    write_sweep_report(out_dir, rows, point_dirs, keys)
