"""``jaxfool.fool``: how easily is *my* model fooled?

    import jaxfool
    result = jaxfool.fool(logits_fn, params, image_shape=(28, 28, 1), num_classes=10)
    result.best_confidence      # [C]
    result.images               # [C, H, W, ch], exactly what was scored
    result.generations_to       # [C]: generation each class first reached the threshold, or -1
    result.save("runs/mine")    # the same files as scripts/run.py

``logits_fn(params, images)`` takes float32 images ``[N, *image_shape]`` in [0, 1] and returns
logits ``[N, num_classes]``; it must be a pure JAX function (it is jitted and vmapped).

A PyTorch model works too (the ``torch`` extra), with no params: ``jaxfool.fool(module,
image_shape=(28, 28, 1), input_mean=(0.1307,), input_std=(0.3081,))`` lowers it through
:func:`jaxfool.models.from_torch`; so does a ``torch.export`` program, or a
:class:`~jaxfool.models.Classifier` built by ``from_torch`` itself.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxfool.config import TORCH_CONVENTIONS
from jaxfool.errors import ConfigError
from jaxfool.models.classifier import Classifier, check_classifier

PRESET_FOR_ENCODING = {"direct": "mnist-direct-fast", "cppn": "mnist-cppn"}


@dataclasses.dataclass
class FoolResult:
    """What :func:`fool` found (all in memory; :meth:`save` writes it as a run directory).

    Attributes:
      best_confidence: float64 ``[C]``: each class's best softmax probability.
      images: float32 ``[C, *image_shape]``: the elites, on the 8-bit grid, exactly as scored.
      generations_to: int ``[C]``: generation at which each class first reached the threshold
        (-1: never).
      evaluations: images scored in total (generation 0 included).
      class_names: C names.
      summary: what ``summary.json`` of the run holds, as a dict.
      run_dir: where the run's files were written (``out_dir`` or :meth:`save`), else ``None``.
    """

    best_confidence: np.ndarray
    images: np.ndarray
    generations_to: np.ndarray
    evaluations: int
    class_names: tuple[str, ...]
    summary: dict
    run_dir: str | None = None
    _run: tuple = dataclasses.field(default=(), repr=False)

    @property
    def all_fooled(self) -> bool:
        return bool((self.generations_to >= 0).all())

    def save(self, directory: str, overwrite: bool = False) -> str:
        """Writes the run's files to ``directory``: what ``scripts/run.py`` writes
        (elites.png, elites/, progress.png, metrics.jsonl, summary.json, report.html,
        config.json, checkpoints/). A directory holding files is refused unless ``overwrite``."""
        from jaxfool.writers import write_run

        write_run(directory, *self._run, overwrite=overwrite)
        self.run_dir = directory
        return directory


def fool(
    logits_fn: Callable[[Any, jax.Array], jax.Array] | Any,
    params: Any = None,
    *,
    image_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
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
        images float32 in [0, 1]; or a ``torch.nn.Module`` / ``torch.export`` program (no
        params; its conventions as ``input_mean=``, ``input_std=``, ``input_range=``,
        ``outputs=``, see :class:`jaxfool.models.torch_bridge.TorchInput`); or a
        :class:`~jaxfool.models.Classifier`.
      params: its parameters (any pytree); ``None`` for a PyTorch model or a Classifier.
      image_shape: ``(height, width, channels)``; 1 or 3 channels (a PyTorch program's or a
        Classifier's own when ``None``).
      num_classes: number of logits (read from a PyTorch model's output when ``None``).
      encoding: "direct" (one gene per pixel) or "cppn" (regular patterns).
      generations: generation cap; the run stops earlier once every class is fooled.
      batch: images per generation.
      seed: PRNG seed.
      threshold: confidence that counts as fooled.
      class_names: names for pictures and the summary (default "0", "1", ...).
      progress: show a progress bar.
      out_dir: also write the run's files here (default: nothing is written).
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
    from jaxfool.evolution import History, Lanes, evolve
    from jaxfool.experiment import build_experiment
    from jaxfool.presets import load_preset
    from jaxfool.summary import summarize
    from jaxfool.writers import ProgressBar

    if encoding not in PRESET_FOR_ENCODING:
        raise ConfigError(f"unknown encoding {encoding!r}; choose one of {', '.join(PRESET_FOR_ENCODING)}")
    if "seeds" in config and config["seeds"] != 1:
        raise ConfigError("fool runs one seed; call it once per seed (or use scripts/run.py --seeds)")
    classifier = _classifier(logits_fn, params, image_shape, num_classes, class_names, config)
    num_classes, names = classifier.num_classes, classifier.class_names
    check_classifier(classifier)
    overrides = {"generations": generations, "batch": batch, "seed": seed, "threshold": threshold, **config}
    run_config = load_preset(PRESET_FOR_ENCODING[encoding], **overrides)
    if encoding == "direct" and run_config.recombine and batch <= num_classes:
        run_config = run_config.replace(recombine=False)  # too few evaluations to spare one per class

    experiment = build_experiment(run_config, classifier=classifier)
    history = History()
    observers = [history] + ([ProgressBar(generations, num_classes, threshold)] if progress else [])
    result = evolve(Lanes.of([experiment]), observers)
    summary = summarize(experiment, result, slice(0, 1))
    fool_result = FoolResult(
        best_confidence=np.exp(np.asarray(result.fitness[0], np.float64)),
        images=result.images()[0],
        generations_to=result.reached[threshold][0].copy(),
        evaluations=int(result.evaluations[0]),
        class_names=names,
        summary=summary,
        _run=(experiment, result, history),
    )
    missed = np.flatnonzero(fool_result.generations_to < 0)
    if len(missed):  # one line, so a script that only looks at the result is still told
        names_missed = ", ".join(names[i] for i in missed[:5]) + (", ..." if len(missed) > 5 else "")
        warnings.warn(f"{len(missed)} of {num_classes} classes not fooled at {100 * threshold:g}% within "
                      f"{int(result.generations[0])} generations ({names_missed}); raise generations= or try encoding='cppn'",
                      stacklevel=2)
    if out_dir is not None:
        fool_result.save(out_dir)
    return fool_result


def _classifier(model, params, image_shape, num_classes, class_names, config: dict) -> Classifier:
    """What :func:`fool` was given, as a :class:`Classifier`; pops the PyTorch conventions
    from ``config``."""
    from jaxfool.models.torch_bridge import TorchInput, from_torch, is_torch_model

    torch_options = {k: config.pop(k) for k in TORCH_CONVENTIONS if k in config}
    if isinstance(model, Classifier) or is_torch_model(model):
        if params is not None:
            raise ConfigError("params are part of the model here: pass params only with a JAX logits_fn")
        if isinstance(model, Classifier):
            return model
        conventions = TorchInput.from_fields(torch_options)
        input_shape = None if image_shape is None else (image_shape[-1], *image_shape[:-1]) if len(image_shape) == 3 else tuple(image_shape)
        return from_torch(model, input_shape=input_shape, num_classes=num_classes, class_names=class_names, conventions=conventions)
    if torch_options:
        raise ConfigError(f"{next(iter(torch_options))} applies to PyTorch models only")
    if image_shape is None:
        raise ConfigError("image_shape=(height, width, channels) is needed with a JAX logits_fn")
    if not (isinstance(num_classes, (int, np.integer)) and num_classes >= 2):
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    names = tuple(str(n) for n in class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
    if len(names) != num_classes:
        raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
    return Classifier(
        name=getattr(model, "__name__", "model"),
        apply_fn=model,
        params=params,
        input_shape=tuple(int(d) for d in image_shape),
        class_names=names,
    )
