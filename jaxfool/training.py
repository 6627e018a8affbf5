"""Supervised training of a classifier with optax (the LeNets, the MLP, and the retrained
networks), optionally adversarial: PGD (Madry et al. 2018) inside every training step.

An epoch is one jitted ``lax.scan`` over minibatches, so the host is touched once per epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfool.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_classifier` (defaults reach >= 99.0 % on MNIST)."""

    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    adversarial_eps: float = 0.0  # PGD radius (L-infinity, pixels in [0, 1]) of adversarial training; 0: clean training
    pgd_steps: int = 7  # PGD steps per training batch
    pgd_step_size: float = 0.1  # PGD step (about 2.5 eps / steps, as in Madry et al.)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "pgd_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.adversarial_eps <= 1.0 or not self.pgd_step_size > 0:
            raise ConfigError(f"adversarial_eps must be in [0, 1] and pgd_step_size > 0, got {self.adversarial_eps}, {self.pgd_step_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")


def pgd(apply_fn: Callable, params: Any, images: jax.Array, labels: jax.Array, key: jax.Array, eps: float, steps: int,
        step_size: float) -> jax.Array:
    """Projected gradient descent on the cross-entropy (Madry et al. 2018): from a uniform random
    start in the L-infinity ball of radius ``eps``, ``steps`` signed-gradient steps, each
    projected back into the ball and into [0, 1]. Images float32 ``[B, H, W, ch]`` ->
    adversarial images of the same shape (no gradient flows back to ``params``)."""
    params = jax.lax.stop_gradient(params)

    def loss(x):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), labels).sum()

    def step(_, x):
        x = x + step_size * jnp.sign(jax.grad(loss)(x))
        return jnp.clip(jnp.clip(x, images - eps, images + eps), 0.0, 1.0)

    start = jnp.clip(images + jax.random.uniform(key, images.shape, minval=-eps, maxval=eps), 0.0, 1.0)
    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, step, start))


# Madry et al.'s MNIST evaluation: the attack every checkpoint's "pgd_accuracy" is measured with.
PGD_EVALUATION = {"eps": 0.3, "steps": 40, "step_size": 0.01}


def pgd_accuracy(apply_fn: Callable, params: Any, images: np.ndarray, labels: np.ndarray, eps: float = PGD_EVALUATION["eps"],
                 steps: int = PGD_EVALUATION["steps"], step_size: float = PGD_EVALUATION["step_size"], seed: int = 0,
                 batch: int = 500) -> float:
    """Accuracy under :func:`pgd` (by default :data:`PGD_EVALUATION`: eps 0.3, 40 steps of 0.01)."""
    attack = jax.jit(lambda p, x, y, k: apply_fn(p, pgd(apply_fn, p, x, y, k, eps, steps, step_size)).argmax(-1) == y)
    keys = jax.random.split(jax.random.key(seed), -(-len(images) // batch))
    hits = [np.asarray(attack(params, jnp.asarray(images[i : i + batch]), jnp.asarray(labels[i : i + batch]), k))
            for k, i in zip(keys, range(0, len(images), batch))]
    return float(np.concatenate(hits).mean())


def _optimizer(config: TrainConfig, steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(config.learning_rate, decay_steps=steps)
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def train_classifier(
    key: jax.Array,
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[int, float], None] | None = None,
) -> Any:
    """Minimises softmax cross-entropy; returns the trained parameters.

    Args:
      key: shuffles the data each epoch.
      apply_fn: ``apply_fn(params, images [B, H, W, ch]) -> logits [B, n]``.
      params: initial parameters.
      images: float32 ``[N, H, W, ch]``.
      labels: int32 ``[N]`` in ``0..n-1``.
      config: epochs, batch size, learning rate, weight decay; with ``adversarial_eps > 0``
        every batch is replaced by its PGD adversarial examples (:func:`pgd`) before the step.
      on_epoch: called with ``(epoch, mean training loss)`` after every epoch.
    """
    config.validate()
    n = len(images)
    if n < config.batch_size:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {n} training images")
    steps_per_epoch = n // config.batch_size
    tx = _optimizer(config, steps_per_epoch * config.epochs)
    opt_state = tx.init(params)
    images, labels = jnp.asarray(images), jnp.asarray(labels)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()

    # The data is an argument, not a closure: a captured array becomes an XLA constant.
    @jax.jit
    def epoch(carry, key, images, labels):
        order = jax.random.permutation(key, n)[: steps_per_epoch * config.batch_size]
        batches = order.reshape(steps_per_epoch, config.batch_size)

        def train_step(carry, batch):
            p, s = carry
            idx, k = batch
            x, y = images[idx], labels[idx]
            if config.adversarial_eps > 0:
                x = pgd(apply_fn, p, x, y, k, config.adversarial_eps, config.pgd_steps, config.pgd_step_size)
            loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        carry, losses = jax.lax.scan(train_step, carry, (batches, jax.random.split(jax.random.fold_in(key, 1), steps_per_epoch)))
        return carry, losses.mean()

    carry = (params, opt_state)
    for e, k in enumerate(jax.random.split(key, config.epochs)):
        carry, loss = epoch(carry, k, images, labels)
        if on_epoch is not None:
            on_epoch(e + 1, float(loss))
    return carry[0]


def predict(
    apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, images: np.ndarray, batch: int = 1000
) -> np.ndarray:
    """Logits float32 ``[N, n]`` for float32 images ``[N, H, W, ch]``, in jitted batches."""
    fn = jax.jit(apply_fn)
    return np.concatenate(
        [np.asarray(fn(params, jnp.asarray(images[i : i + batch]))) for i in range(0, len(images), batch)]
    )


def accuracy(
    apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, images: np.ndarray, labels: np.ndarray
) -> float:
    """Fraction of ``images`` whose arg-max logit equals ``labels``."""
    return float(np.mean(predict(apply_fn, params, images).argmax(-1) == np.asarray(labels)))


ARCHS = ("lenet", "mlp")


def train_mnist(
    seed: int,
    data_dir: str | None = None,
    config: TrainConfig = TrainConfig(),
    num_train: int | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    arch: str = "lenet",
    pgd_test: int = 1000,
) -> tuple[Any, dict]:
    """Trains an MNIST classifier (the Caffe LeNet, or an MLP); returns ``(params, metadata)``
    for a checkpoint.

    Args:
      seed: initialises the weights and shuffles the data.
      arch: ``"lenet"`` or ``"mlp"`` (two hidden layers of 512).
      pgd_test: test images on which PGD accuracy (eps 0.3, 40 steps) is measured (0: none).
      data_dir: MNIST IDX directory (else ``$JAXFOOL_DATA``, else TFDS).
      config: optimiser settings.
      num_train: train on the first ``num_train`` images only (quick tests).
      on_epoch: progress callback ``(epoch, loss)``.

    The metadata records the test accuracy, the seed, the training settings and the SHA-256 of
    the data, and is what :func:`jaxfool.models.save_checkpoint` writes beside the weights.
    """
    from jaxfool.data import MNIST_CLASS_NAMES, load_mnist
    from jaxfool.models import init_lenet
    from jaxfool.models.mlp import init_mlp

    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if num_train is not None and num_train < 1:
        raise ConfigError(f"num_train must be >= 1 (or left out for all 60 000 images), got {num_train}")
    train, test = load_mnist("train", data_dir), load_mnist("test", data_dir)
    images, labels = train.images[:num_train], train.labels[:num_train]
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    module, params = init_lenet(init_key) if arch == "lenet" else init_mlp(init_key)
    apply_fn = lambda p, x: module.apply({"params": p}, x)  # noqa: E731
    params = train_classifier(shuffle_key, apply_fn, params, images, labels, config, on_epoch)
    robust = {}
    if pgd_test:
        robust = {"pgd_accuracy": pgd_accuracy(apply_fn, params, test.images[:pgd_test], test.labels[:pgd_test]),
                  "pgd_attack": {**PGD_EVALUATION, "test_images": pgd_test}}
    metadata = {
        "architecture": arch,
        **({"hidden": list(module.hidden)} if arch == "mlp" else {}),
        "num_classes": 10,
        "class_names": list(MNIST_CLASS_NAMES),
        "input_shape": [28, 28, 1],
        "value_range": [0.0, 1.0],
        "seed": seed,
        "train_config": dataclasses.asdict(config),
        "num_train": len(images),
        "test_accuracy": accuracy(apply_fn, params, test.images, test.labels),
        **robust,
        "mean_image": np.round(images.mean(0)[..., 0], 6).tolist(),  # gradient ascent's "mean" start
        "data_sha256": {"train": train.sha256, "test": test.sha256},
        "versions": {"jax": jax.__version__, "optax": optax.__version__},
    }
    return params, metadata
