"""From a :class:`RunConfig` to the objects a run needs: classifier, cells, encoding, engine.

Engines are cached by the config's static fields (:meth:`RunConfig.static_key`) and the
classifier, so runs and sweep groups that differ only in traced values reuse one engine, and
so one compiled program: ``jax.jit`` caches compiled steps by the engine it is given.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os

import jax
import numpy as np

from jaxfool.config import RunConfig
from jaxfool.emitters import ESEmitter, GradientEmitter, MutationEmitter
from jaxfool.encodings import DirectEncoding, DirectParams, Encoding
from jaxfool.encodings.cppn import CPPNEncoding, CPPNParams
from jaxfool.errors import ConfigError
from jaxfool.map_elites import MapElites, Params, stack_lanes
from jaxfool.models import Classifier, check_classifier, load_classifier
from jaxfool.scoring import make_score_fn


def make_encoding(config: RunConfig, image_shape: tuple[int, int, int]) -> tuple[Encoding, type]:
    """The encoding a config names, and the class of its traced parameters (whose fields share
    their names with the config's)."""
    if config.encoding == "direct":
        return DirectEncoding(tuple(image_shape), color_space=config.color_space), DirectParams
    if config.encoding == "cppn":
        try:
            encoding = CPPNEncoding(
                tuple(image_shape),
                color_space=config.color_space,
                max_hidden=config.max_hidden,
                max_conns=config.max_conns,
                activations=tuple(config.activations),
                renderer=config.renderer,
                render_memory=config.render_memory << 20,
                init_layers=tuple(config.init_layers),
            )
        except ValueError as e:  # sizes that only the image's channels make inconsistent
            raise ConfigError(str(e)) from None
        if encoding.render_path() == "unrolled":
            try:
                encoding.check_render_memory(image_shape[0] * image_shape[1])
            except ValueError as e:
                raise ConfigError(f"{e}: raise --render-memory") from None
        return encoding, CPPNParams
    raise ConfigError(f"unknown encoding {config.encoding!r}")


def check_differentiable(classifier: Classifier, score_fn, shape: tuple[int, ...], num_cells: int) -> None:
    """Raises :class:`ConfigError` (one line, naming the classifier) if reverse mode cannot go
    through ``score_fn`` for images ``shape`` ``[B, H, W, ch]``: a gradient emitter would
    otherwise fail deep inside the compiled step."""
    images = jax.ShapeDtypeStruct(shape, np.float32)
    weights = jax.ShapeDtypeStruct((shape[0], num_cells), np.float32)
    try:
        jax.eval_shape(score_fn.value_and_grad, classifier.params, images, weights)
    except Exception as e:  # noqa: BLE001 (any tracing failure means: no gradients)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"the gradient emitter needs a differentiable classifier; {classifier.name} is not ({reason[:200]}); "
            "drop 'gradient' from --emitters"
        ) from None


def image_shape(config: RunConfig, classifier: Classifier) -> tuple[int, int, int]:
    """The evolved images' shape: the network's input, or bigger for 10-crop scoring."""
    h, w, ch = classifier.input_shape
    if not config.ten_crop:
        if config.render_size and config.render_size != h:
            raise ConfigError(f"render_size {config.render_size} differs from {classifier.name}'s input {h}; it needs --ten-crop")
        return (h, w, ch)
    side = config.render_size or (h * 8 + 6) // 7  # 224 -> 256
    if side < h or h != w:
        raise ConfigError(f"render_size ({side}) must be at least {classifier.name}'s square input ({h}x{w}) for --ten-crop")
    return (side, side, ch)


def make_emitters(config: RunConfig, encoding: Encoding, budget: int, score_fn=None) -> tuple:
    """The emitters a config names, splitting ``budget`` offspring per generation.

    A gradient emitter takes ``gradient_instances`` offspring (all of ``budget`` when it is the
    only emitter); the others split the rest evenly. Evolution-strategy shares are rounded down
    to whole instances of ``es_population``; the paper's mutation emitter (when present) takes
    what is left. ``score_fn``: the engine's scoring, which a gradient emitter differentiates.
    """
    others = [name for name in config.emitters if name != "gradient"]
    sizes = {}
    if "gradient" in config.emitters:
        sizes["gradient"] = config.gradient_instances if others else budget
        if others and budget - sizes["gradient"] < len(others):
            raise ConfigError(
                f"gradient_instances ({config.gradient_instances}) leaves too little of the batch ({budget}) for the "
                f"{', '.join(others)} emitter(s); raise --batch or lower --gradient-instances"
            )
    rest = budget - sizes.get("gradient", 0)
    share = rest // len(others) if others else 0
    for name in others:
        if name == "mutation":
            continue
        sizes[name] = (share // config.es_population) * config.es_population
        if sizes[name] < config.es_population:
            raise ConfigError(
                f"the {name} emitter's share of the batch ({share}) is below es_population ({config.es_population}); "
                "raise --batch or lower --es-population"
            )
    if "mutation" in config.emitters:
        sizes["mutation"] = budget - sum(sizes.values())
    emitters = []
    for name in config.emitters:
        if name == "mutation":
            emitters.append(MutationEmitter(encoding, sizes[name], config.selection, config.crossover_rate > 0))
        elif name == "gradient":
            lr = config.gradient_lr or encoding.gradient_lr
            emitters.append(GradientEmitter(encoding, score_fn, sizes[name], lr, config.es_restart, config.selection,
                                            config.gradient_fresh))
        else:
            emitters.append(ESEmitter(encoding, name, sizes[name], config.es_population, config.es_std,
                                      config.es_restart, config.selection))
    return tuple(emitters)


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """A configured run.

    Attributes:
      config: the validated config.
      classifier: the target network.
      cells: class index of each archive cell.
      encoding: genome <-> image.
      engine: the static MAP-Elites algorithm (shared by every experiment with the same
        classifier and static fields).
      params: traced parameters of one lane of this config (classifier weights, variation
        rates, threshold, stop fitness, generation cap).
    """

    config: RunConfig
    classifier: Classifier
    cells: tuple[int, ...]
    encoding: Encoding
    engine: MapElites
    params: Params

    @property
    def cell_names(self) -> list[str]:
        return [self.classifier.class_names[c] for c in self.cells]

    @property
    def seeds(self) -> list[int]:
        return list(range(self.config.seed, self.config.seed + self.config.seeds))

    def lane_params(self, **fields) -> Params:
        """``params`` repeated for each seed (per-lane fields ``[K]``, the model shared), with
        ``fields`` replaced (e.g. ``stop=np.inf`` for benchmarks that never stop)."""
        row = self.params.replace(**{k: np.asarray(v, np.asarray(getattr(self.params, k)).dtype) for k, v in fields.items()})
        return stack_lanes(self.params.model, [row] * self.config.seeds)


def lane_row(config: RunConfig, variation_cls: type) -> Params:
    """The traced values of ``config`` as one lane's :class:`Params` (host numpy scalars,
    valid on any device and in every process; no model)."""
    log_threshold = np.float32(math.log(config.threshold))
    # Fixed dtypes: a lane row of Python numbers would be weakly typed and recompile the step.
    variation = variation_cls(**{
        f.name: (np.int32 if f.type in ("int", int) else np.float32)(getattr(config, f.name))
        for f in dataclasses.fields(variation_cls)
    })
    return Params(
        model=None,
        variation=variation,
        log_threshold=log_threshold,
        stop=log_threshold if config.stop_when_fooled else np.float32(np.inf),
        max_generation=np.int32(config.generations),
    )


_STATIC_CACHE: collections.OrderedDict = collections.OrderedDict()  # (classifier, static key) -> parts
_CLASSIFIER_CACHE: dict = {}


def _load_classifier(config: RunConfig) -> Classifier:
    """``load_classifier``, loaded once per spec (and version of its files) per process."""
    spec = config.classifier
    files = [spec if os.path.exists(spec) else spec + ".msgpack"]
    torch_options = {}
    if spec.startswith("torch:"):
        from jaxfool.models.torch_bridge import TorchInput, source_files

        files = source_files(spec, config.weights)
        torch_options = dict(weights=config.weights, input_shape=config.input_shape,
                             conventions=TorchInput.from_fields(dataclasses.asdict(config)))
    key = (spec, *(os.path.getmtime(f) if os.path.exists(f) else None for f in files), repr(torch_options))
    if key not in _CLASSIFIER_CACHE:
        _CLASSIFIER_CACHE[key] = load_classifier(spec, **torch_options)
    return _CLASSIFIER_CACHE[key]


def build_experiment(config: RunConfig, classifier: Classifier | None = None) -> Experiment:
    """Validates ``config`` and builds everything it names.

    Args:
      config: the run's settings.
      classifier: use this network instead of loading ``config.classifier``.
    """
    config.validate()
    classifier = classifier or _load_classifier(config)
    key = (classifier, config.static_key())
    if key in _STATIC_CACHE:
        cells, encoding, engine, variation_cls = _STATIC_CACHE[key]
        _STATIC_CACHE.move_to_end(key)
    else:
        cells, encoding, engine, variation_cls = _build_static(config, classifier)
        _STATIC_CACHE[key] = cells, encoding, engine, variation_cls
        while len(_STATIC_CACHE) > 32:  # bounded: each entry holds a classifier
            _STATIC_CACHE.popitem(last=False)
    params = lane_row(config, variation_cls).replace(model=classifier.params)
    return Experiment(config, classifier, cells, encoding, engine, params)


def _build_static(config: RunConfig, classifier: Classifier):
    check_classifier(classifier)
    cells = classifier.class_indices(config.classes or None)
    encoding, variation_cls = make_encoding(config, image_shape(config, classifier))
    if config.recombine and not hasattr(encoding, "recombine"):
        raise ConfigError(f"recombine is not available for the {config.encoding} encoding; pass --no-recombine")
    if config.recombine and config.batch <= len(cells):
        raise ConfigError(
            f"batch ({config.batch}) must exceed the number of cells ({len(cells)}) with recombine; "
            "raise --batch or pass --no-recombine"
        )
    score_fn = make_score_fn(
        classifier, cells, chunk_size=config.score_chunk or None, ten_crop=config.ten_crop, compute_dtype=config.compute_dtype
    )
    engine = MapElites(
        encoding=encoding,
        score_fn=score_fn,
        num_cells=len(cells),
        emitters=make_emitters(config, encoding, config.batch - (len(cells) if config.recombine else 0), score_fn),
        recombine=config.recombine,
        init_size=config.batch,
    )
    gradient = [e.batch_size for e in engine.emitters if isinstance(e, GradientEmitter)]
    if gradient:
        check_differentiable(classifier, score_fn, (gradient[0], *encoding.image_shape), len(cells))
    # The batches the scorer will feed the network (generation 0, the emitters' offspring, the
    # recombined children; chunked; a gradient emitter's, unchunked; 10 crops each with
    # --ten-crop): a function that only works for some batch sizes fails here in one line, not
    # deep inside the compiled step.
    fed = [config.batch, sum(e.batch_size for e in engine.emitters)] + ([len(cells)] if config.recombine else [])
    fed = [min(n, config.score_chunk) if config.score_chunk else n for n in fed] + gradient
    check_classifier(classifier, tuple(10 * n if config.ten_crop else n for n in fed))
    return cells, encoding, engine, variation_cls
