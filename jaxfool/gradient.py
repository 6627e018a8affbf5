"""Fooling images by gradient ascent on the input (the paper's Section 3.5 comparison).

For every class at once, one image ``[C, H, W, ch]`` ascends its class's log-softmax with an
optax optimiser, pixels projected back into [0, 1] after every step. A class stops once its
image, quantised to 8 bits (what a PNG stores), reaches the threshold, so the saved picture
is the one that fools. Optional regularisers in the style of Simonyan et al. / Yosinski et
al.: L2 decay toward the start image, Gaussian blur every k steps, random jitter.

    result = gradient_ascent(classifier, GradientConfig(steps=500))
    result.confidence   # [C], of the 8-bit images
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxfool.config import option
from jaxfool.encodings.base import quantize
from jaxfool.errors import ConfigError
from jaxfool.models.classifier import Classifier
from jaxfool.tables import write_json

STARTS = ("mean", "blank", "random")


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """Settings of :func:`gradient_ascent`."""

    steps: int = option(1000, "maximum optimiser steps")
    learning_rate: float = option(0.05, "Adam step size (pixels in [0, 1])")
    start: str = option("mean", f"start image: {' | '.join(STARTS)} (mean: the training set's mean image, else gray)")
    threshold: float = option(0.9999, "a class stops once its 8-bit image reaches this confidence")
    l2_decay: float = option(0.0, "weight of the squared distance to the start image")
    blur_every: int = option(0, "blur the images every this many steps (0: never)")
    blur_sigma: float = option(0.5, "Gaussian blur width in pixels")
    jitter: int = option(0, "shift the images by up to this many pixels before each step (0: never)")
    seed: int = option(0, "random start and jitter")

    def validate(self) -> GradientConfig:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.start not in STARTS:
            raise ConfigError(f"unknown start {self.start!r}; choose one of {', '.join(STARTS)}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("l2_decay", "blur_every", "blur_sigma", "jitter"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self


@struct.dataclass
class GradientResult:
    """Outcome for C cells.

    Attributes:
      images: float32 ``[C, H, W, ch]`` on the 8-bit grid (exactly what was scored).
      log_confidence: float32 ``[C]``: log-probability of each cell's class for its image.
      steps_to_threshold: int32 ``[C]``: step at which the class reached the threshold (-1: never).
      history: float32 ``[steps, C]``: log-confidence of the 8-bit images after each step.
    """

    images: jax.Array
    log_confidence: jax.Array
    steps_to_threshold: jax.Array
    history: jax.Array

    @property
    def confidence(self) -> jax.Array:
        return jnp.exp(self.log_confidence)


def start_images(classifier: Classifier, n: int, start: str, key: jax.Array) -> jax.Array:
    """float32 ``[n, H, W, ch]`` start images."""
    shape = (n, *classifier.input_shape)
    if start == "blank":
        return jnp.zeros(shape, jnp.float32)
    if start == "random":
        return jax.random.uniform(key, shape)
    mean = classifier.info.get("mean_image")
    image = jnp.asarray(mean, jnp.float32).reshape(classifier.input_shape) if mean is not None else jnp.full(classifier.input_shape, 0.5)
    return jnp.broadcast_to(image, shape)


def gaussian_blur(images: jax.Array, sigma: float) -> jax.Array:
    """Separable 5-tap Gaussian blur of ``[N, H, W, ch]`` (edges replicated)."""
    taps = jnp.exp(-0.5 * (jnp.arange(-2.0, 3.0) / jnp.maximum(sigma, 1e-3)) ** 2)
    taps = taps / taps.sum()
    padded = jnp.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    h, w = images.shape[1], images.shape[2]
    rows = sum(taps[i] * padded[:, i : i + h, :, :] for i in range(5))
    return sum(taps[i] * rows[:, :, i : i + w, :] for i in range(5))


@functools.partial(jax.jit, static_argnames=("log_probs", "config"))
def _ascend(log_probs, params, cells: jax.Array, x0: jax.Array, key: jax.Array, config: GradientConfig):
    n = x0.shape[0]
    rows = jnp.arange(n)
    stop = math.log(config.threshold)
    tx = optax.adam(config.learning_rate)

    def log_conf(x):
        return log_probs(params, x)[rows, cells]

    def loss(x, k):
        if config.jitter:
            dy, dx = jax.random.randint(k, (2,), -config.jitter, config.jitter + 1)
            x = jnp.roll(x, (dy, dx), axis=(1, 2))
        objective = log_conf(x).sum()
        if config.l2_decay:
            objective = objective - config.l2_decay * jnp.sum((x - x0) ** 2)
        return -objective

    def step(carry, i):
        x, opt_state, reached = carry
        grads = jax.grad(loss)(x, jax.random.fold_in(key, i))
        updates, opt_state = tx.update(grads, opt_state, x)
        moved = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
        if config.blur_every:
            moved = jnp.where((i + 1) % config.blur_every == 0, gaussian_blur(moved, config.blur_sigma), moved)
        done = (reached >= 0).reshape(-1, 1, 1, 1)
        x = jnp.where(done, x, moved)  # a fooled class keeps its image
        score = log_conf(quantize(x))
        reached = jnp.where((reached < 0) & (score >= stop), i + 1, reached)
        return (x, opt_state, reached), score

    init = (x0, tx.init(x0), jnp.where(log_conf(quantize(x0)) >= stop, 0, -1).astype(jnp.int32))
    (x, _, reached), history = jax.lax.scan(step, init, jnp.arange(config.steps))
    images = quantize(x)
    return GradientResult(images, log_conf(images), reached, history)


def gradient_ascent(
    classifier: Classifier, config: GradientConfig = GradientConfig(), cells: tuple[int, ...] | None = None
) -> GradientResult:
    """Ascends every cell's class log-probability in one batched, jitted optimisation.

    Args:
      classifier: any registered or user classifier (images in [0, 1]).
      config: steps, optimiser and regularisers.
      cells: class index per image; ``None``: one per class.

    >>> from jaxfool.models import load_classifier
    >>> result = gradient_ascent(load_classifier("lenet-mnist"), GradientConfig(steps=300))
    >>> bool((result.confidence >= 0.9999).all())
    True
    """
    config.validate()
    cells = tuple(range(classifier.num_classes)) if cells is None else tuple(cells)
    key_start, key_run = jax.random.split(jax.random.key(config.seed))
    x0 = start_images(classifier, len(cells), config.start, key_start)
    return _ascend(classifier.log_probs, classifier.params, jnp.asarray(cells, jnp.int32), x0, key_run, config)


def summary(result: GradientResult, classifier: Classifier, cells: tuple[int, ...]) -> dict:
    """JSON-able per-class results."""
    conf = np.exp(np.asarray(result.log_confidence, np.float64))
    steps = np.asarray(result.steps_to_threshold)
    return {
        "classes": [
            {"index": c, "name": classifier.class_names[c], "confidence": float(p), "steps_to_threshold": int(s) if s >= 0 else None}
            for c, p, s in zip(cells, conf, steps)
        ],
        "all_reached": bool((steps >= 0).all()),
        "max_steps_to_threshold": int(steps.max()) if (steps >= 0).all() else None,
    }


def write_outputs(out_dir: str, classifier: Classifier, cells: tuple[int, ...], config: GradientConfig,
                  result: GradientResult, wall: float) -> dict:
    """Writes a gradient-ascent run as a run directory (``elites/``, ``elites.png``,
    ``progress.png`` over optimiser steps, ``summary.json``); returns the summary."""
    from jaxfool import pictures

    os.makedirs(out_dir, exist_ok=True)
    images = np.asarray(result.images)
    names = [classifier.class_names[c] for c in cells]
    pictures.save_elites(out_dir, images[None], cells, names)
    confidence = np.exp(np.asarray(result.log_confidence, np.float64))
    pictures.elites_grid(os.path.join(out_dir, "elites.png"), images[None], confidence[None], names,
                         title=f"{classifier.name}, gradient ascent from {config.start}")
    report = {"classifier": classifier.name, "config": dataclasses.asdict(config), "wall_time_s": wall,
              **summary(result, classifier, cells)}
    history = np.asarray(result.history, np.float64)
    last = report["max_steps_to_threshold"]  # the curves are flat once every class is there
    history = history[: max(last, 1) + 1] if last is not None else history
    pictures.progress_plot(os.path.join(out_dir, "progress.png"), np.arange(1, len(history) + 1), history[:, None, :],
                           names, title=f"{classifier.name}, gradient ascent", xlabel="optimiser step")
    write_json(os.path.join(out_dir, "summary.json"), report)
    return report
