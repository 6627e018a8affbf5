"""``jaxfool.fool``: how easily is *my* model fooled?

    import jaxfool
    result = jaxfool.fool(logits_fn, params, image_shape=(28, 28, 1), num_classes=10)
    result.best_confidence      # [C]
    result.images               # [C, H, W, ch], exactly what was scored
    result.generations_to       # [C]: generation each class first reached the threshold, or -1
    result.save("runs/mine")    # the same files as scripts/run.py

``logits_fn(params, images)`` takes float32 images ``[N, *image_shape]`` in [0, 1] and returns
logits ``[N, num_classes]``; it must be a pure JAX function (it is jitted and vmapped).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxfool import pictures
from jaxfool.errors import ConfigError
from jaxfool.models.classifier import Classifier, check_classifier

PRESET_FOR_ENCODING = {"direct": "mnist-direct-fast", "cppn": "mnist-cppn"}


@dataclasses.dataclass
class FoolResult:
    """What :func:`fool` found.

    Attributes:
      best_confidence: float64 ``[C]``: each class's best softmax probability.
      images: float32 ``[C, *image_shape]``: the elites, on the 8-bit grid, exactly as scored.
      generations_to: int ``[C]``: generation at which each class first reached the threshold
        (-1: never).
      evaluations: images scored in total.
      class_names: C names.
      summary: the run's ``summary.json`` as a dict.
      run_dir: where the run's files are (a temporary directory until :meth:`save`).
    """

    best_confidence: np.ndarray
    images: np.ndarray
    generations_to: np.ndarray
    evaluations: int
    class_names: tuple[str, ...]
    summary: dict
    run_dir: str

    @property
    def all_fooled(self) -> bool:
        return bool((self.generations_to >= 0).all())

    def save(self, directory: str) -> str:
        """Copies the run's files (elites.png, elites/, progress.png, metrics.jsonl,
        summary.json, checkpoints/: what ``scripts/run.py`` writes) to ``directory``."""
        shutil.copytree(self.run_dir, directory, dirs_exist_ok=True)
        return directory


def fool(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    *,
    image_shape: Sequence[int],
    num_classes: int,
    encoding: str = "direct",
    generations: int = 1000,
    batch: int = 200,
    seed: int = 0,
    threshold: float = 0.9999,
    class_names: Sequence[str] | None = None,
    progress: bool = False,
    out_dir: str | None = None,
    **config: Any,
) -> FoolResult:
    """Evolves, for every class, an image ``logits_fn`` labels with ``threshold`` confidence.

    Args:
      logits_fn: ``logits_fn(params, images [N, *image_shape]) -> logits [N, num_classes]``,
        images float32 in [0, 1].
      params: its parameters (any pytree).
      image_shape: ``(height, width, channels)``; 1 or 3 channels.
      num_classes: number of logits.
      encoding: "direct" (one gene per pixel) or "cppn" (regular patterns).
      generations: generation cap; the run stops earlier once every class is fooled.
      batch: images per generation.
      seed: PRNG seed.
      threshold: confidence that counts as fooled.
      class_names: names for pictures and the summary (default "0", "1", ...).
      progress: show a progress bar.
      out_dir: write the run's files here (default: a temporary directory, removed when the
        result is garbage-collected unless saved with :meth:`FoolResult.save`).
      **config: any other :class:`jaxfool.config.RunConfig` field (``mutation_rate=0.2``,
        ``selection="uniform"``, ``emitters=("mutation", "snes")``, ...).

    Returns:
      a :class:`FoolResult`.

    Example (a model the project has never seen)::

        import flax.linen as nn, jax, jaxfool
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(10)(nn.relu(nn.Dense(64)(x.reshape(len(x), -1))))
        net = Net()
        params = net.init(jax.random.key(0), jax.numpy.zeros((1, 28, 28, 1)))
        result = jaxfool.fool(net.apply, params, image_shape=(28, 28, 1), num_classes=10)
        print(result.best_confidence)
    """
    from jaxfool.presets import load_preset
    from jaxfool.runner import run

    if encoding not in PRESET_FOR_ENCODING:
        raise ConfigError(f"unknown encoding {encoding!r}; choose one of {', '.join(PRESET_FOR_ENCODING)}")
    if "seeds" in config and config["seeds"] != 1:
        raise ConfigError("fool runs one seed; call it once per seed (or use scripts/run.py --seeds)")
    if not (isinstance(num_classes, (int, np.integer)) and num_classes >= 2):
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    names = tuple(str(n) for n in class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
    if len(names) != num_classes:
        raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
    classifier = Classifier(
        name=getattr(logits_fn, "__name__", "model"),
        apply_fn=logits_fn,
        params=params,
        input_shape=tuple(int(d) for d in image_shape),
        class_names=names,
    )
    check_classifier(classifier)
    overrides = {"generations": generations, "batch": batch, "seed": seed, "threshold": threshold, **config}
    run_config = load_preset(PRESET_FOR_ENCODING[encoding], **overrides)
    if encoding == "direct" and run_config.recombine and batch <= num_classes:
        run_config = run_config.replace(recombine=False)  # too few evaluations to spare one per class

    from jaxfool.experiment import build_experiment

    experiment = build_experiment(run_config, classifier=classifier)
    run_dir = out_dir or tempfile.mkdtemp(prefix="jaxfool-")
    summary = run(experiment, run_dir, progress_bar=progress)
    seed_summary = summary["seeds"][0]
    paths = pictures.elite_paths(run_dir, list(range(num_classes)), names)[0]
    images = np.stack([pictures.load_png(p, channels=classifier.input_shape[-1]) for p in paths])
    result = FoolResult(
        best_confidence=np.asarray(seed_summary["best_confidence"]),
        images=images,
        generations_to=np.asarray(seed_summary["generations_to_threshold_per_class"]),
        evaluations=int(seed_summary["evaluations"]),
        class_names=names,
        summary=summary,
        run_dir=run_dir,
    )
    if out_dir is None:
        weakref.finalize(result, shutil.rmtree, run_dir, True)
    return result
