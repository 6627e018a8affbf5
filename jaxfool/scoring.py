"""From images to the score matrix MAP-Elites needs: log-probability of each cell's class.

The softmax runs over all of the classifier's outputs, even when only some classes have cells
(``--classes`` on ImageNet, or the n real classes of a network retrained with an extra
"fooling" class).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfool.models.classifier import Classifier


def ten_crops(images: jax.Array, size: int) -> jax.Array:
    """The paper's 10 crops: 4 corners and the centre, each also mirrored.

    ``[B, H, W, ch] -> [10, B, size, size, ch]``.
    """
    h, w = images.shape[1], images.shape[2]
    top, left = (h - size) // 2, (w - size) // 2
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
    crops = [images[:, y : y + size, x : x + size] for y, x in corners]
    return jnp.stack(crops + [c[:, :, ::-1] for c in crops])


def make_score_fn(
    classifier: Classifier,
    cells: Sequence[int] | None = None,
    chunk_size: int | None = None,
    ten_crop: bool = False,
    compute_dtype: str = "float32",
):
    """Builds ``score_fn(model_params, images) -> scores``.

    Args:
      classifier: the target network.
      cells: the class index of each archive cell; ``None`` means one cell per class.
      chunk_size: score at most this many images at once (``lax.map`` over chunks) to bound
        activation memory for big networks; ``None`` scores the whole batch at once.
      ten_crop: score the 10 crops of :func:`ten_crops` (images larger than the network's
        input) and average their softmax, as the paper scored ImageNet images.

    Returns:
      A pure function mapping float32 images ``[B, H, W, ch]`` in [0, 1] to float32
      ``[B, len(cells)]`` log-softmax values. Its attribute ``value_and_grad(model_params,
      images, weights [B, C])`` returns those scores and the gradient of
      ``sum(weights * scores)`` with respect to the images (one forward and one backward pass,
      for gradient emitters).
    """
    cells = jnp.asarray(range(classifier.num_classes) if cells is None else cells, jnp.int32)
    log_probs = functools.partial(classifier.log_probs, compute_dtype=compute_dtype)
    size = classifier.input_shape[0]

    def score(model_params: Any, images: jax.Array) -> jax.Array:
        if not ten_crop:
            return log_probs(model_params, images)[:, cells]
        crops = ten_crops(images, size)
        lp = log_probs(model_params, crops.reshape(-1, *crops.shape[2:])).reshape(10, images.shape[0], -1)
        # log of the mean probability over crops, computed stably
        return (jax.nn.logsumexp(lp, axis=0) - jnp.log(10.0))[:, cells]

    def value_and_grad(model_params: Any, images: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
        # One forward and one backward pass of the same scoring, never chunked (gradient
        # emitters feed it a few images): scores [B, C] and d(sum(weights * scores))/d images.
        scores, pullback = jax.vjp(lambda x: score(model_params, x), images)
        return scores, pullback(weights)[0]

    if chunk_size is None:
        scorer = fold_vmap(score)
    else:

        def chunked(model_params: Any, images: jax.Array) -> jax.Array:
            n = images.shape[0]
            if n <= chunk_size:
                return score(model_params, images)
            pad = -n % chunk_size
            padded = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)])
            out = jax.lax.map(lambda x: score(model_params, x), padded.reshape(-1, chunk_size, *images.shape[1:]))
            return out.reshape(-1, out.shape[-1])[:n]

        scorer = fold_vmap(chunked)

    def score_fn(model_params: Any, images: jax.Array) -> jax.Array:
        return scorer(model_params, images)

    # custom_vmap has no reverse mode, so the gradient is folded on its own (same scoring).
    score_fn.value_and_grad = fold_vmap(value_and_grad)
    return score_fn


def fold_vmap(fn):
    """Makes ``vmap`` of ``fn(model_params, *batches)`` (each ``[B, ...]``; over seeds) run
    ``fn`` on one set of ``[B, ...]`` batches at a time in a ``lax.map``, instead of batching
    every layer.

    XLA CPU runs a convolution followed by pooling up to 5x slower on a ``[K, B, H, W, C]``
    batch than on ``[B, H, W, C]`` ones. Keeping every forward pass at shape ``[B, ...]`` also
    makes results independent of how many seeds a device holds: XLA may round the last bit
    differently for another batch shape, and a run must give the same archive on 1 or 8
    devices. Where the model parameters themselves are batched, ordinary batching is used.
    """
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, model_params, *batches):
        params_batched, *batched = in_batched
        if any(jax.tree.leaves(params_batched)) or not all(batched):
            in_axes = (jax.tree.map(lambda b: 0 if b else None, params_batched), *[0 if b else None for b in batched])
            out = jax.vmap(fn, in_axes=in_axes)(model_params, *batches)
        else:
            out = jax.lax.map(lambda xs: wrapped(model_params, *xs), batches)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def log_probabilities(classifier: Classifier, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """float32 log-softmax ``[N, num_classes]`` of float32 images ``[N, H, W, ch]`` in [0, 1],
    in jitted batches, through :meth:`Classifier.log_probs` (so ``value_range`` is honoured)."""
    fn = jax.jit(classifier.log_probs)
    return np.concatenate(
        [np.asarray(fn(classifier.params, jnp.asarray(images[i : i + batch]))) for i in range(0, len(images), batch)]
    )
