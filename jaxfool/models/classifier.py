"""The one interface every target network implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A trained network that maps images to class logits.

    Attributes:
      name: registry name, e.g. ``"lenet-mnist"``.
      apply_fn: pure ``apply_fn(params, images) -> logits``; images are float32
        ``[N, H, W, ch]`` in ``value_range`` and logits float32 ``[N, num_classes]``. It is
        jit- and vmap-friendly, so the engine compiles it into its fused step.
      params: the network's parameter pytree.
      input_shape: ``(H, W, ch)`` of one image.
      class_names: one name per output, ``len == num_classes``.
      value_range: ``(low, high)`` pixel range the network expects (encodings render to it).
      module: the Flax module, where there is one (``None`` for a plain function).
      info: provenance (test accuracy, seed, data hashes) from the checkpoint's metadata.

    Classifiers compare by identity: two loads of the same checkpoint are different objects,
    which keeps them usable as static arguments of ``jax.jit``.
    """

    name: str
    apply_fn: LogitsFn
    params: Any
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    module: Any = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def logits(self, images: jax.Array) -> jax.Array:
        """float32 images ``[N, H, W, ch]`` in [0, 1] -> float32 logits ``[N, num_classes]``
        (rescaled to ``value_range`` first, as in :meth:`log_probs`)."""
        return self.apply_fn(self.params, self._to_range(images))

    def log_probs(self, params: Any, images: jax.Array, compute_dtype: str = "float32") -> jax.Array:
        """The one scoring path: float32 images ``[N, H, W, ch]`` in [0, 1] -> float32
        log-softmax over all classes ``[N, num_classes]``. Images are rescaled to the network's
        ``value_range`` first. Pure in ``(params, images)``: jit, vmap and differentiate it;
        every scorer in the library (MAP-Elites, gradient ascent, the single-class baseline,
        transfer, retraining) calls it.

        ``compute_dtype="bfloat16"`` runs the network on bfloat16 images and weights (mixed
        precision); the logits are cast back, so the softmax and all that follows is float32.
        """
        x = self._to_range(images)
        if compute_dtype != "float32":
            dtype = jnp.dtype(compute_dtype)
            params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(jnp.result_type(p), jnp.floating) else p, params)
            x = x.astype(dtype)
        return jax.nn.log_softmax(self.apply_fn(params, x).astype(jnp.float32), axis=-1)

    def _to_range(self, images: jax.Array) -> jax.Array:
        low, high = self.value_range
        return images if (low, high) == (0.0, 1.0) else low + (high - low) * images

    def class_index(self, name_or_index: str | int) -> int:
        """Resolves a class given by index or (case-insensitive) name."""
        from jaxfool.errors import ClassifierError

        if isinstance(name_or_index, (int, np.integer)) or str(name_or_index).lstrip("-").isdigit():
            index = int(name_or_index)
            if not 0 <= index < self.num_classes:
                raise ClassifierError(
                    f"class index {index} out of range for {self.name} ({self.num_classes} classes)"
                )
            return index
        lowered = [c.lower() for c in self.class_names]
        key = str(name_or_index).strip().lower()
        if key in lowered:
            return lowered.index(key)
        raise ClassifierError(f"{self.name} has no class named {name_or_index!r}")

    def class_indices(self, selection: Sequence[str | int] | None) -> tuple[int, ...]:
        """Resolves a list of class names/indices; ``None`` means every class."""
        if selection is None or len(selection) == 0:
            return tuple(range(self.num_classes))
        indices = tuple(self.class_index(s) for s in selection)
        if len(set(indices)) != len(indices):
            from jaxfool.errors import ClassifierError

            raise ClassifierError(f"classes listed twice in {list(selection)}")
        return indices


def check_classifier(classifier: Classifier, batches: tuple[int, ...] = (2,)) -> None:
    """Traces the classifier (abstractly: nothing is computed) on each of ``batches`` images
    (a run passes the batch its scorer will feed) and checks the logits' shape.

    Raises:
      ClassifierError: one line naming what was expected, if the function fails on images of
        its declared shape or returns anything but ``[N, num_classes]``.
    """
    from jaxfool.errors import ClassifierError

    shape = tuple(classifier.input_shape)
    if len(shape) != 3 or any(int(d) < 1 for d in shape):
        raise ClassifierError(f"image_shape must be (height, width, channels), got {shape}")
    for n in dict.fromkeys(batches):
        probe = jax.ShapeDtypeStruct((n, *shape), jnp.float32)
        try:
            out = jax.eval_shape(classifier.apply_fn, classifier.params, probe)
        except Exception as e:  # noqa: BLE001 - any failure here is the user's function failing
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClassifierError(
                f"{classifier.name}: logits_fn failed on images of shape {probe.shape} (float32 in [0, 1]): {first}"
            ) from None
        expected = (n, classifier.num_classes)
        if not hasattr(out, "shape") or tuple(out.shape) != expected:
            got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ClassifierError(
                f"{classifier.name}: logits_fn returned {got} for images of shape {probe.shape}; expected logits of shape {expected}"
            )
