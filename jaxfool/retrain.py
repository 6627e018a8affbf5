"""Training networks to recognise fooling images, iterated (the paper's Section 3.4).

Iteration i (1-based, as the paper counts DNN_1 = the original network):
  1. evolve fooling images against DNN_i with MAP-Elites (``seeds`` vmapped runs), scoring only
     the n real classes, though the softmax covers DNN_i's extra "fooling" output too;
  2. hold out a fraction of them; add the rest to a pool that grows over the iterations;
  3. record DNN_i's test accuracy, its accuracy on the held-out fooling images of earlier
     iterations (how many it puts in class n+1), and how fast evolution fooled it;
  4. DNN_{i+1} is trained from scratch on real MNIST plus class n+1 = ``fooling_per_class``
     images drawn from the pool (about as many as a real class has).

The run directory holds ``retrain.csv``, ``retrain.png``, ``retrain.json`` (config and rows:
a rerun skips finished iterations), ``pool.npz`` and ``iteration_XX/`` with the evolution's
run directory (elites, progress) and ``dnn.msgpack``, the next network, which is a classifier
``scripts/run.py --classifier`` can target.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxfool import pictures
from jaxfool.config import option
from jaxfool.data import MNIST_CLASS_NAMES, load_mnist
from jaxfool.errors import ConfigError
from jaxfool.models import init_lenet, load_classifier, save_checkpoint
from jaxfool.presets import load_preset
from jaxfool.runner import run
from jaxfool.scoring import log_probabilities
from jaxfool.tables import median_or_none, write_csv, write_json
from jaxfool.training import TrainConfig, accuracy, train_classifier
from jaxfool.transfer import load_elites

FOOLING = "fooling"
NUM_REAL = 10


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Settings of :func:`retrain`."""

    iterations: int = option(15, "networks to evolve against (the paper: 15 on MNIST)")
    classifier: str = option("lenet-mnist", "DNN_1")
    preset: str = option("mnist-direct-fast", "evolution preset (mnist-direct-fast, mnist-direct, mnist-cppn)")
    seeds: int = option(100, "MAP-Elites runs per iteration (each gives one image per class)")
    generations: int = option(200, "generation cap of each evolution")
    holdout: float = option(0.1, "fraction of each iteration's fooling images kept for testing later networks")
    fooling_per_class: int = option(6000, "images of class n+1 per training (drawn from the pool, as many as a real class)")
    epochs: int = option(4, "training epochs per network")
    num_train: int = option(0, "real training images used (0: all 60 000; for quick tests)")
    score_chunk: int = option(8192, "images scored at once during evolution (bounds memory with many seeds)")
    seed: int = option(0, "seeds evolution, holdout split, sampling and training")

    def validate(self) -> RetrainConfig:
        for name in ("iterations", "seeds", "generations", "fooling_per_class", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.num_train < 0 or self.score_chunk < 0:
            raise ConfigError("num_train and score_chunk must be >= 0")
        load_preset(self.preset)  # unknown preset: one-line error now, not after an hour
        return self


def _iteration_dir(out_dir: str, i: int) -> str:
    return os.path.join(out_dir, f"iteration_{i:02d}")


def _dnn_spec(config: RetrainConfig, out_dir: str, i: int) -> str:
    """Classifier spec of DNN_i."""
    return config.classifier if i == 1 else os.path.join(_iteration_dir(out_dir, i - 1), "dnn.msgpack")


def _evolve(config: RetrainConfig, out_dir: str, i: int, progress: bool) -> dict:
    run_dir = os.path.join(_iteration_dir(out_dir, i), "evolution")
    evolution = load_preset(
        config.preset,
        classifier=_dnn_spec(config, out_dir, i),
        classes=tuple(str(c) for c in range(NUM_REAL)),  # real classes only; the softmax still has n+1
        seeds=config.seeds,
        seed=config.seed + 100_000 * i,
        generations=config.generations,
        score_chunk=config.score_chunk,
    )
    resume = os.path.exists(os.path.join(run_dir, "config.json"))
    return run(evolution, run_dir, resume=resume, progress_bar=progress) | {"run_dir": run_dir}


def _load_pool(path: str) -> dict[str, np.ndarray]:
    if os.path.exists(path):
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    return {"images": np.zeros((0, 28, 28, 1), np.uint8), "iteration": np.zeros(0, np.int32), "heldout": np.zeros(0, bool)}


def _save_pool(path: str, pool: dict[str, np.ndarray]) -> None:
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **pool)
    os.replace(tmp, path)


def _train(config: RetrainConfig, pool: dict, real, i: int) -> tuple[Any, Any]:
    """DNN_{i+1}: real data plus ``fooling_per_class`` pool images as class n+1."""
    rng = np.random.default_rng(config.seed + i)
    usable = np.flatnonzero(~pool["heldout"])
    pick = rng.choice(usable, size=config.fooling_per_class, replace=len(usable) < config.fooling_per_class)
    images = np.concatenate([real.images, pool["images"][pick].astype(np.float32) / 255.0])
    labels = np.concatenate([real.labels, np.full(len(pick), NUM_REAL, np.int32)])
    module, params = init_lenet(jax.random.key(config.seed + i), num_classes=NUM_REAL + 1)
    apply_fn = lambda p, x: module.apply({"params": p}, x)  # noqa: E731
    params = train_classifier(jax.random.key(config.seed + 1000 + i), apply_fn, params, images, labels, TrainConfig(epochs=config.epochs))
    return apply_fn, params


def retrain(
    config: RetrainConfig,
    out_dir: str,
    data_dir: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Runs (or continues) the iterations; returns one row per finished iteration."""
    config.validate()
    os.makedirs(out_dir, exist_ok=True)
    state_path = os.path.join(out_dir, "retrain.json")
    rows: list[dict] = []
    if os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
        if saved["config"] | {"iterations": config.iterations} != dataclasses.asdict(config):
            raise ConfigError(f"{out_dir} holds a retraining run with other settings; use another --out")
        rows = saved["rows"]
    pool_path = os.path.join(out_dir, "pool.npz")
    pool = _load_pool(pool_path)
    real_train = load_mnist("train", data_dir)
    if config.num_train:
        real_train = dataclasses.replace(real_train, images=real_train.images[: config.num_train], labels=real_train.labels[: config.num_train])
    real_test = load_mnist("test", data_dir)

    for i in range(len(rows) + 1, config.iterations + 1):
        if i > 1 and not os.path.exists(_dnn_spec(config, out_dir, i)):
            # DNN_i learns the fooling images of iterations < i (the pool holds nothing newer).
            apply_fn, params = _train(config, pool, real_train, i - 1)
            acc = accuracy(apply_fn, params, real_test.images, real_test.labels)
            save_checkpoint(
                _dnn_spec(config, out_dir, i),
                params,
                {
                    "architecture": "lenet",
                    "num_classes": NUM_REAL + 1,
                    "class_names": list(MNIST_CLASS_NAMES) + [FOOLING],
                    "input_shape": [28, 28, 1],
                    "value_range": [0.0, 1.0],
                    "test_accuracy": acc,
                    "retrain_iteration": i,
                    "fooling_images": config.fooling_per_class,
                    "seed": config.seed + i - 1,
                },
            )
            log(f"trained DNN_{i} on real MNIST plus {config.fooling_per_class} fooling images: test accuracy {100 * acc:.2f}%")
        dnn = load_classifier(_dnn_spec(config, out_dir, i))
        test_acc = float(np.mean(log_probabilities(dnn, real_test.images).argmax(-1) == real_test.labels))
        held = pool["heldout"] & (pool["iteration"] < i)
        fooling_acc = None
        if held.any() and dnn.num_classes > NUM_REAL:
            pred = log_probabilities(dnn, pool["images"][held].astype(np.float32) / 255.0).argmax(-1)
            fooling_acc = float(np.mean(pred == NUM_REAL))
        log(f"iteration {i}: DNN_{i} test accuracy {100 * test_acc:.2f}%"
            + (f", recognises {100 * fooling_acc:.1f}% of held-out fooling images" if fooling_acc is not None else "")
            + f"; evolving {config.seeds} runs against it")

        summary = _evolve(config, out_dir, i, progress)
        elites = load_elites(summary["run_dir"])
        new = np.round(elites["images"] * 255).astype(np.uint8)
        rng = np.random.default_rng(config.seed + 7 * i)
        heldout = rng.random(len(new)) < config.holdout
        pool = {
            "images": np.concatenate([pool["images"], new]),
            "iteration": np.concatenate([pool["iteration"], np.full(len(new), i, np.int32)]),
            "heldout": np.concatenate([pool["heldout"], heldout]),
        }

        seeds = summary["seeds"]
        to_9999 = [s["generations_to_0.9999"] for s in seeds]
        best = np.array([s["best_confidence"] for s in seeds])
        row = {
            "iteration": i,
            "dnn": _dnn_spec(config, out_dir, i),
            "test_accuracy": test_acc,
            "heldout_fooling_accuracy": fooling_acc,
            "runs": len(seeds),
            "runs_all_classes_9999": int(sum(g is not None for g in to_9999)),
            "median_generations_to_9999": median_or_none(to_9999),
            "median_best_confidence": float(np.median(best)),
            "min_best_confidence": float(best.min()),
            "images_at_least_9999": int((best >= 0.9999).sum()),
            "images_at_least_99": int((best >= 0.99).sum()),
            "pool_images": int((~pool["heldout"]).sum()),
        }
        log(f"  evolution: {row['runs_all_classes_9999']}/{row['runs']} runs fooled all {NUM_REAL} classes at >= 99.99% "
            f"(median generation {row['median_generations_to_9999']}); median best confidence {100 * row['median_best_confidence']:.4f}%")

        _save_pool(pool_path, pool)
        rows.append(row)
        write_json(state_path, {"config": dataclasses.asdict(config), "rows": rows})
        write_table(out_dir, rows)
    return rows


def write_table(out_dir: str, rows: list[dict]) -> None:
    """``retrain.csv`` and ``retrain.png`` from the rows."""
    write_csv(os.path.join(out_dir, "retrain.csv"), rows)
    plt = pictures.pyplot()

    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(it, [100 * r["test_accuracy"] for r in rows], "o-", label="real MNIST test set")
    held = [(r["iteration"], 100 * r["heldout_fooling_accuracy"]) for r in rows if r["heldout_fooling_accuracy"] is not None]
    if held:
        axes[0].plot(*zip(*held), "s-", label="held-out fooling images of earlier iterations")
    axes[0].set(xlabel="iteration (DNN_i)", ylabel="accuracy (%)", title="DNN_i accuracy")
    axes[0].legend(fontsize=7)
    axes[1].bar(it, [100 * r["runs_all_classes_9999"] / r["runs"] for r in rows], color="#4c72b0")
    for r in rows:
        if r["median_generations_to_9999"] is not None:
            axes[1].annotate(f"{r['median_generations_to_9999']:g}", (r["iteration"], 100 * r["runs_all_classes_9999"] / r["runs"]),
                             textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    axes[1].set(xlabel="iteration (DNN_i)", ylabel="runs (%)",
                title="runs fooling every class at 99.99 %\n(label: median generation)", ylim=(0, 110))
    gap = [max(1 - r["median_best_confidence"], 1e-9) for r in rows]
    axes[2].plot(it, gap, "o-", label="median")
    axes[2].plot(it, [max(1 - r["min_best_confidence"], 1e-9) for r in rows], "v:", label="lowest")
    axes[2].axhline(1e-4, color="k", ls="--", lw=0.8)
    axes[2].set_yscale("log")
    axes[2].invert_yaxis()
    axes[2].set(xlabel="iteration (DNN_i)", ylabel="1 - best confidence", title="evolved images' confidence")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xticks(it)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "retrain.png"), dpi=100)
    plt.close(fig)
