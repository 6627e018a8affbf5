"""Everything a run needs, as one flat, validated, hashable dataclass. A leaf: it imports
nothing from the library, so any module (and the CLI) can read it.

Each field is declared once, with its default, its help text and its *kind*:

* ``static``: shapes the compiled program (encoding, batch, classifier, emitters, ...); runs
  that differ in a static field compile separately.
* ``traced``: a number that lives in the step's ``Params`` pytree (rates, etas, ranges,
  threshold, generation cap); runs that differ only in traced fields share one program, and a
  sweep stacks them as lanes of one ``vmap``.
* ``lanes``: which seeds run (``seed``, ``seeds``): each seed is a lane.
* ``host``: only the host loop reads it (checkpoint interval).

Presets in :mod:`jaxfool.presets` are small dicts of overrides of these defaults; every field is
a CLI flag of ``scripts/run.py`` (``--mutation-rate 0.2``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

KINDS = ("static", "traced", "lanes", "host")
ENCODINGS = ("direct", "cppn")
COLOR_SPACES = ("rgb", "hsv", "hls")
SELECTIONS = ("uniform", "unique", "unfooled")
# Evolution-strategy emitters: our name -> evosax class name.
ES_STRATEGIES = {"sep_cma_es": "Sep_CMA_ES", "snes": "SNES", "open_es": "Open_ES", "cma_es": "CMA_ES"}
# evosax strategies that sample antithetic pairs, so their population must be even.
EVEN_POPULATION = ("open_es",)
EMITTERS = ("mutation", *ES_STRATEGIES, "gradient")
PAPER_ACTIVATIONS = ("sine", "sigmoid", "gaussian", "linear")
ACTIVATIONS = (*PAPER_ACTIVATIONS, "cosine", "tanh", "abs", "square")
RENDERERS = ("auto", "grouped", "unrolled")
COMPUTE_DTYPES = ("float32", "bfloat16")
TORCH_OUTPUTS = ("auto", "logits", "log_probs", "probs")
# The fields that say how a PyTorch module takes its images and what it returns (TorchInput).
TORCH_CONVENTIONS = ("input_range", "input_mean", "input_std", "outputs")


class JaxfoolError(Exception):
    """Base class for errors caused by user input (the hierarchy is in :mod:`jaxfool.errors`;
    its root lives here so that the config stays a leaf)."""


class ConfigError(JaxfoolError):
    """A configuration field has an invalid value."""


def option(default: Any, help: str, kind: str = "static") -> Any:
    """A config field with its default, the ``help`` the CLI shows, and its kind (see above)."""
    assert kind in KINDS, kind
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind})


def fields_of_kind(cls: type, kind: str) -> tuple[str, ...]:
    """Names of ``cls``'s fields declared with ``kind``.

    >>> fields_of_kind(RunConfig, "lanes")
    ('seed', 'seeds')
    >>> RunConfig(mutation_rate=0.2).static_key() == RunConfig().static_key()  # traced: one program
    True
    """
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("kind", "static") == kind)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A MAP-Elites fooling run."""

    # What to fool.
    classifier: str = option("lenet-mnist", "registered name, checkpoint path, module:factory, or a PyTorch model: "
                             "torch:FILE.pt2 (torch.export program) or torch:FILE.py:FACTORY (with --weights)")
    weights: str = option("", "torch:FILE.py:FACTORY classifiers: a state dict (torch.save(model.state_dict(), FILE)), read with "
                          "safe loading only (weights_only=True)")
    input_shape: tuple[int, ...] = option((), "torch classifiers: channels,height,width of one image (PyTorch's order; "
                                          "a .pt2 program's own when empty)")
    input_range: tuple[float, ...] = option((0.0, 1.0), "torch classifiers: the pixel range low,high the module expects (e.g. 0,255)")
    input_mean: tuple[float, ...] = option((), "torch classifiers: per-channel mean subtracted after --input-range (empty: none)")
    input_std: tuple[float, ...] = option((), "torch classifiers: per-channel std divided by after --input-mean")
    outputs: str = option("auto", f"torch classifiers: what the module returns: {' | '.join(TORCH_OUTPUTS)} "
                          "(auto: log-probabilities and probabilities are recognised from a probe)")
    classes: tuple[str, ...] = option((), "cells for these classes only (names or indices, comma-separated); empty: all")
    # How images are encoded.
    encoding: str = option("direct", f"genome encoding: {' | '.join(ENCODINGS)}")
    color_space: str = option("rgb", f"for colour images, what the genes mean: {' | '.join(COLOR_SPACES)}")
    # Budget and stopping.
    batch: int = option(200, "offspring per generation (and random images at generation 0)")
    generations: int = option(1000, "generation cap", "traced")
    seed: int = option(0, "first seed", "lanes")
    seeds: int = option(1, "independent runs (seeds seed..seed+seeds-1) vmapped in one program", "lanes")
    threshold: float = option(0.9999, "confidence that counts as fooled", "traced")
    stop_when_fooled: bool = option(True, "stop a seed once every cell reaches --threshold", "traced")
    # Selection and variation.
    selection: str = option("unfooled", f"parent selection: {' | '.join(SELECTIONS)}")
    emitters: tuple[str, ...] = option(("mutation",), f"offspring sources splitting the batch: {', '.join(EMITTERS)} (e.g. mutation,snes)")
    es_population: int = option(20, "evolution-strategy emitters: offspring per instance per generation")
    es_std: float = option(0.1, "evolution-strategy emitters: initial search width (genes in [0, 1])")
    es_restart: int = option(10, "evolution-strategy and gradient emitters: generations without improvement before moving to another elite")
    gradient_instances: int = option(10, "gradient emitter: elites refined at once, one Adam step and one offspring each per generation "
                                     "(3 evaluations each: forward, backward, scoring); the other emitters share the rest of the batch")
    gradient_lr: float = option(0.0, "gradient emitter: Adam learning rate on genes scaled to [0, 1] (0: the encoding's own: "
                                "direct 0.05, about 13 pixel levels; CPPN 0.001, 0.02 of a weight at range 10)")
    gradient_fresh: float = option(0.0, "gradient emitter: probability that a (re)starting instance climbs from a new random genome "
                                   "(a new lineage) instead of its cell's elite")
    recombine: bool = option(True, "spend C evaluations per generation on each cell's elite plus its summed improving mutations")
    recombine_scale: float = option(0.7, "step along the summed improving mutations", "traced")
    mutation_rate: float = option(0.1, "per-gene mutation probability", "traced")
    mutation_eta: float = option(15.0, "polynomial mutation distribution index (larger: smaller steps)", "traced")
    crossover_rate: float = option(0.0, "probability of SBX crossover between two parents (0: off; off or on is static)", "traced")
    crossover_eta: float = option(10.0, "SBX distribution index", "traced")
    halving_period: int = option(0, "halve the mutation rate every this many generations (0: never)", "traced")
    # CPPN encoding (the paper's code's rates; ignored by the direct encoding).
    max_hidden: int = option(12, "CPPN: hidden node slots")
    max_conns: int = option(48, "CPPN: connection slots")
    init_layers: tuple[int, ...] = option((), "CPPN: hidden layer widths of the starting networks, each layer joined fully to the next "
                                          "(e.g. 12,12,12; weights He-style normal); empty: the paper's start, inputs joined to outputs")
    activations: tuple[str, ...] = option(PAPER_ACTIVATIONS, f"CPPN: node functions (also: {', '.join(ACTIVATIONS[4:])})")
    weight_range: float = option(10.0, "CPPN: weights and biases in [-range, range]", "traced")
    add_conn_rate: float = option(0.5, "CPPN: probability of adding a connection per offspring", "traced")
    del_conn_rate: float = option(0.3, "CPPN: probability of deleting a connection per offspring", "traced")
    add_node_rate: float = option(0.5, "CPPN: probability of splitting a connection with a new node per offspring", "traced")
    del_node_rate: float = option(0.2, "CPPN: probability of deleting a hidden node per offspring", "traced")
    change_conn_rate: float = option(0.5, "CPPN: per connection, probability of rewiring it (at most one per offspring)", "traced")
    activation_rate: float = option(0.1, "CPPN: per node, probability of resampling its function", "traced")
    renderer: str = option("auto", f"CPPN: how a population is rendered: {' | '.join(RENDERERS)} (auto: grouped on CPU, unrolled on GPU/TPU)")
    render_memory: int = option(1024, "CPPN: MiB the unrolled renderer may use at once (it renders the batch in as few chunks as fit)")
    # Execution.
    chunk: int = option(10, "generations per compiled lax.scan chunk (the host is touched between chunks)")
    checkpoint_every: int = option(100, "checkpoint every this many generations (0: only at the end)", "host")
    tensorboard: bool = option(False, "write TensorBoard event files to <run dir>/tensorboard (pip install -e '.[tensorboard]')", "host")
    score_chunk: int = option(0, "score at most this many images at once, to bound memory (0: whole batch)")
    compute_dtype: str = option("float32", f"the classifier's forward pass: {' | '.join(COMPUTE_DTYPES)} (logits, softmax and archive stay float32; bfloat16 elites are re-scored in float32 at the end)")
    ten_crop: bool = option(False, "score 10 crops (corners, centre, mirrored) of images rendered larger than the network's input, averaging their softmax (the paper's ImageNet scoring)")
    render_size: int = option(0, "side of the evolved images (0: the network's input; with --ten-crop: 8/7 of it, 256 for 224)")

    def validate(self) -> RunConfig:
        """Raises :class:`ConfigError` naming the first bad field; returns ``self``."""
        positive = ("batch", "generations", "seeds", "chunk", "render_memory")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = [e for e in self.emitters if e not in EMITTERS]
        if unknown or not self.emitters:
            raise ConfigError(f"unknown emitter {(unknown or [''])[0]!r}; choose from {', '.join(EMITTERS)}")
        if self.es_population < 2 or self.es_restart < 1 or not (math.isfinite(self.es_std) and self.es_std > 0):
            raise ConfigError(f"es_population must be >= 2, es_restart >= 1 and es_std a finite number > 0, got "
                              f"{self.es_population}, {self.es_restart}, {self.es_std}")
        if self.gradient_instances < 1 or not (math.isfinite(self.gradient_lr) and self.gradient_lr >= 0):
            raise ConfigError(f"gradient_instances must be >= 1 and gradient_lr a finite number >= 0, got "
                              f"{self.gradient_instances}, {self.gradient_lr}")
        if not 0.0 <= self.gradient_fresh <= 1.0:
            raise ConfigError(f"gradient_fresh must be in [0, 1], got {self.gradient_fresh}")
        even = [e for e in self.emitters if e in EVEN_POPULATION]
        if even and self.es_population % 2:
            raise ConfigError(f"es_population must be even for the {even[0]} emitter, got {self.es_population}")
        for name in ("checkpoint_every", "score_chunk", "halving_period", "render_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, choices in (
            ("encoding", ENCODINGS),
            ("selection", SELECTIONS),
            ("color_space", COLOR_SPACES),
            ("renderer", RENDERERS),
            ("compute_dtype", COMPUTE_DTYPES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        for name in ("mutation_rate", "crossover_rate", "add_conn_rate", "del_conn_rate", "add_node_rate",
                     "del_node_rate", "change_conn_rate", "activation_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        for name in ("mutation_eta", "crossover_eta", "recombine_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if any(w < 1 for w in self.init_layers) or sum(self.init_layers) > self.max_hidden:
            raise ConfigError(f"init_layers must be widths >= 1 summing to at most max_hidden ({self.max_hidden}), got "
                              f"{','.join(map(str, self.init_layers))}")
        if self.max_hidden < 0 or self.max_conns < 1:
            raise ConfigError(f"max_hidden must be >= 0 and max_conns >= 1, got {self.max_hidden}, {self.max_conns}")
        if not (math.isfinite(self.weight_range) and self.weight_range > 0):
            raise ConfigError(f"weight_range must be > 0, got {self.weight_range}")
        unknown = [a for a in self.activations if a not in ACTIVATIONS]
        if unknown or not self.activations:
            raise ConfigError(f"unknown activation {(unknown or [''])[0]!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.encoding == "cppn" and self.crossover_rate > 0:
            raise ConfigError("crossover_rate must be 0 with the cppn encoding (the paper's CPPNs had none)")
        torch_fields = [n for n in ("weights", "input_shape", *TORCH_CONVENTIONS) if getattr(self, n) != default(n)]
        if torch_fields and not self.classifier.startswith("torch:"):
            raise ConfigError(f"{torch_fields[0]} applies to PyTorch classifiers only (--classifier torch:FILE.pt2 or torch:FILE.py:FACTORY)")
        if self.outputs not in TORCH_OUTPUTS:
            raise ConfigError(f"unknown outputs {self.outputs!r}; choose one of {', '.join(TORCH_OUTPUTS)}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        return self

    def replace(self, **overrides: Any) -> RunConfig:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown config field {unknown[0]!r}")
        return dataclasses.replace(self, **overrides)

    def static_key(self) -> tuple:
        """What shapes the compiled program: the static fields, and whether crossover runs at
        all (its rate is traced, but SBX is compiled in only when some rate is above 0). Runs
        with equal keys share one engine and one compiled step."""
        return (*(getattr(self, n) for n in fields_of_kind(RunConfig, "static")), self.crossover_rate > 0)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


def default(name: str) -> Any:
    """The default of :class:`RunConfig` field ``name`` (the one place defaults are written)."""
    return RunConfig.__dataclass_fields__[name].default
