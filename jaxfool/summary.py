"""A run's summary (what ``summary.json`` holds), a pure function of a :class:`Result`.

One experiment (a run, or one point of a sweep) owns a contiguous block of the result's lanes;
its summary covers those lanes only, with the same schema whether it ran alone or in a sweep.
"""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import jax
import numpy as np

from jaxfool.evolution import REPORTED, Result
from jaxfool.experiment import Experiment
from jaxfool.regularity import regularity


def environment() -> dict[str, Any]:
    """Versions and device, for summaries."""
    import flax
    import jaxlib
    import optax

    import jaxfool

    devices = jax.devices()
    return {
        "versions": {
            "jaxfool": jaxfool.__version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "device": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": len(devices),
            "processes": jax.process_count(),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
        },
    }


def rescore_elites(exp: Experiment, images: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """float64 ``[L, C]``: each lane's elites (``images [L, C, H, W, ch]``, as saved) re-scored by
    the network in float32, each in its own cell (for runs that evolved in lower precision, and
    for ``benchmarks/rescore.py``); ``chunk``: at most this many images at once (None: a lane)."""
    from jaxfool.scoring import make_score_fn

    score = jax.jit(make_score_fn(exp.classifier, exp.cells, ten_crop=exp.config.ten_crop))
    step = chunk or images.shape[1]
    log_p = np.stack([  # [L, C images, C cells]
        np.concatenate([np.asarray(score(exp.classifier.params, lane[i : i + step]), np.float64)
                        for i in range(0, len(lane), step)])
        for lane in images
    ])
    return np.exp(np.diagonal(log_p, axis1=1, axis2=2))


def class_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """``classes.csv``: one row per seed and class of a summary: its best confidence and the
    generation at which its cell first reached 99 % and 99.99 % (empty: never).

    >>> summary = {"classes": [{"index": 0, "name": "zero"}], "seeds": [{"seed": 0, "best_confidence": [0.995],
    ...            "generations_to_0.99_per_class": [7], "generations_to_0.9999_per_class": [None]}]}
    >>> row = class_rows(summary)[0]
    >>> row["name"], row["best_confidence"], row["generation_0.99"], row["generation_0.9999"]
    ('zero', 0.995, 7, '')
    """
    rows = []
    for s in summary["seeds"]:
        for c, cls in enumerate(summary["classes"]):
            row = {"seed": s["seed"], "class": cls["index"], "name": cls["name"], "best_confidence": s["best_confidence"][c]}
            for t in REPORTED:
                g = s[f"generations_to_{t:g}_per_class"][c]
                row[f"generation_{t:g}"] = "" if g is None else g
            rows.append(row)
    return rows


def summarize(exp: Experiment, result: Result, lanes: slice) -> dict[str, Any]:
    """The summary of experiment ``exp``, whose lanes in ``result`` are ``lanes``.

    ``evals_per_s`` is the rate of the whole program the lanes ran in (see
    :mod:`jaxfool.evolution`); ``evals_per_s_with_compile`` divides all of this experiment's
    evaluations by the wall time.
    """
    fitness = np.asarray(result.fitness[lanes], np.float64)
    confidence = np.exp(fitness)
    images = result.images()[lanes]
    generations, evaluations = result.generations[lanes], result.evaluations[lanes]
    filled = np.asarray(result.archive().filled)[lanes]
    again = rescore_elites(exp, images) if exp.config.compute_dtype != "float32" else None
    seeds = []
    for k, seed in enumerate(exp.seeds):
        entry = {
            "seed": seed,
            "generations": int(generations[k]),
            "evaluations": int(evaluations[k]),
            "best_confidence": [float(p) for p in confidence[k]],
            "classes_fooled": int((fitness[k] >= math.log(exp.config.threshold)).sum()),
            "cells_never_filled": int((~filled[k]).sum()),  # no finite score ever (a NaN/inf model)
            "regularity": regularity(images[k]),
            # The paper's ImageNet figures: the median over classes, and the share of classes at 99 % / 99.99 %.
            "median_confidence": float(np.median(confidence[k])),
            **{f"fraction_at_least_{t:g}": float((fitness[k] >= math.log(t)).mean()) for t in REPORTED},
        }
        for t in sorted(set(REPORTED) | {exp.config.threshold}):
            reached = result.reached[t][lanes][k]
            every = int(reached.max()) if (reached >= 0).all() else None
            entry[f"generations_to_{t:g}"] = every
            entry[f"evaluations_to_{t:g}"] = None if every is None else int(exp.engine.evaluations(every))
            entry[f"generations_to_{t:g}_per_class"] = [int(g) if g >= 0 else None for g in reached]
            entry[f"evaluations_to_{t:g}_per_class"] = [int(exp.engine.evaluations(int(g))) if g >= 0 else None for g in reached]
        if again is not None:
            entry["best_confidence_float32"] = [float(p) for p in again[k]]
            entry["classes_fooled_float32"] = int((again[k] >= exp.config.threshold).sum())
        seeds.append(entry)
    total = int(evaluations.sum())
    return {
        "config": exp.config.to_dict(),
        "classifier": exp.classifier.name,
        "classes": [{"index": c, "name": exp.classifier.class_names[c]} for c in exp.cells],
        **environment(),
        "wall_time_s": result.elapsed,
        "evaluations": total,
        "evals_per_s": result.evals_per_s,
        "evals_per_s_with_compile": total / result.elapsed if result.elapsed > 0 else None,
        "evaluation_budget": int(exp.engine.evaluations(exp.config.generations)),
        "stopped": result.stopped,
        "all_fooled": all(s["classes_fooled"] == len(exp.cells) for s in seeds),
        "seeds": seeds,
    }
