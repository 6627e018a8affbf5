"""Do images that fool one network fool another? (The paper's Section 3.3 question.)

Reads the elites a run saved (``elites/*.png``, exactly what was scored) and scores them on
another classifier: for every elite, the probability the other network gives the same class,
and its own top class.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxfool import pictures
from jaxfool.errors import CheckpointError, ClassifierError
from jaxfool.models.classifier import Classifier
from jaxfool.scoring import log_probabilities


def load_elites(run_dir: str) -> dict:
    """The elites of a MAP-Elites or gradient-ascent run directory.

    Returns:
      dict with ``images`` float32 ``[n, H, W, ch]``, ``classes`` int ``[n]`` (class index of
      each elite's cell), ``names`` ``[n]``, ``seeds`` ``[n]`` and ``source_confidence``
      ``[n]`` (the run's own network's confidence), and ``classifier`` (its name).
    """
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} has no summary.json: not a finished run directory")
    with open(path) as f:
        summary = json.load(f)
    cells = summary["classes"]
    classes = [c["index"] for c in cells]
    names = [c["name"] for c in cells]
    if "seeds" in summary:  # MAP-Elites
        seeds = [s["seed"] for s in summary["seeds"]]
        confidence = [s["best_confidence"] for s in summary["seeds"]]
    else:  # gradient ascent
        seeds, confidence = [None], [[c["confidence"] for c in cells]]
    paths = pictures.elite_paths(run_dir, classes, names, seeds if len(seeds) > 1 else None)
    rows = {k: [] for k in ("images", "classes", "names", "seeds", "source_confidence")}
    for k, row in enumerate(paths):
        for c, p in enumerate(row):
            if os.path.exists(p):
                rows["images"].append(pictures.load_png(p))
                rows["classes"].append(classes[c])
                rows["names"].append(names[c])
                rows["seeds"].append(seeds[k])
                rows["source_confidence"].append(confidence[k][c])
    if not rows["images"]:
        raise CheckpointError(f"{run_dir}/elites holds no elite PNGs")
    out = {k: np.asarray(v) if k != "names" else v for k, v in rows.items()}
    out["images"] = np.stack(rows["images"]).astype(np.float32)
    out["classifier"] = summary.get("classifier")
    return out


def transfer(elites: dict, target: Classifier) -> dict:
    """Scores ``elites`` (from :func:`load_elites`) on ``target``.

    The same class is matched by name when both networks have it, else by index.

    Returns:
      JSON-able dict: per elite the target's probability of the same class and its top-1
      class; per class the mean/min/max of those probabilities and how many stay >= 99 %;
      and ``probabilities`` ``[n, target classes]`` (the matrix).
    """
    images = elites["images"]
    if images.shape[-1] != target.input_shape[-1] and target.input_shape[-1] == 3:
        images = np.repeat(images, 3, axis=-1)
    if images.shape[1:] != tuple(target.input_shape):
        raise ClassifierError(
            f"the elites are {images.shape[1:]} images but {target.name} takes {tuple(target.input_shape)}"
        )
    probs = np.exp(np.asarray(log_probabilities(target, images, batch=256), np.float64))
    lowered = [n.lower() for n in target.class_names]
    same = np.array(
        [lowered.index(n.lower()) if n.lower() in lowered else c for c, n in zip(elites["classes"], elites["names"])]
    )
    if (same >= target.num_classes).any():
        raise ClassifierError(f"{target.name} has no class matching {elites['names'][int(np.argmax(same >= target.num_classes))]!r}")
    p_same = probs[np.arange(len(probs)), same]
    top = probs.argmax(-1)
    per_class = []
    for c, name in dict(zip(elites["classes"].tolist(), elites["names"])).items():
        m = elites["classes"] == c
        per_class.append({
            "index": int(c), "name": name, "images": int(m.sum()),
            "source_confidence": float(np.mean(elites["source_confidence"][m])),
            "target_confidence_mean": float(p_same[m].mean()),
            "target_confidence_min": float(p_same[m].min()),
            "target_confidence_max": float(p_same[m].max()),
            "at_least_99": int((p_same[m] >= 0.99).sum()),
        })
    return {
        "source": elites["classifier"],
        "target": target.name,
        "images": int(len(probs)),
        "at_least_99": int((p_same >= 0.99).sum()),
        "at_least_9999": int((p_same >= 0.9999).sum()),
        "same_class_top1": int((top == same).sum()),
        "median_target_confidence": float(np.median(p_same)),
        "per_class": per_class,
        "elites": [
            {"class": int(c), "seed": s if s is None else int(s), "source_confidence": float(sc),
             "target_confidence": float(p), "target_top1": target.class_names[t], "target_top1_confidence": float(probs[i, t])}
            for i, (c, s, sc, p, t) in enumerate(zip(elites["classes"], elites["seeds"], elites["source_confidence"], p_same, top))
        ],
        "probabilities": probs.tolist(),
    }


def transfer_picture(path: str, elites: dict, result: dict, class_names: list[str]) -> None:
    """Elites labelled with both networks' confidences, beside the target's probability matrix."""
    plt = pictures.pyplot()

    n = len(result["elites"])
    cols = min(n, 10)
    rows = -(-n // cols)
    show_matrix = len(class_names) <= 100
    fig = plt.figure(figsize=(1.6 * cols + (5 if show_matrix else 0), 2.0 * rows + 0.6))
    grid = fig.add_gridspec(rows, cols + (4 if show_matrix else 0))
    for i, e in enumerate(result["elites"]):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(pictures.to_uint8(elites["images"][i]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{elites['names'][i]}\n{result['source']}: {pictures.confidence_label(e['source_confidence'])}\n"
                     f"{result['target']}: {pictures.confidence_label(e['target_confidence'])}", fontsize=6)
        ax.axis("off")
    if show_matrix:
        ax = fig.add_subplot(grid[:, cols:])
        im = ax.imshow(np.asarray(result["probabilities"]), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(n), [f"{e['class']}" + (f" s{e['seed']}" if e["seed"] is not None else "") for e in result["elites"]], fontsize=5)
        ax.set_xlabel(f"{result['target']} class")
        ax.set_ylabel("elite (class, seed)")
        fig.colorbar(im, ax=ax, fraction=0.05, label="probability")
    fig.suptitle(f"Elites evolved on {result['source']}, scored by {result['target']}: "
                 f"{result['at_least_99']}/{result['images']} stay >= 99 %", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
