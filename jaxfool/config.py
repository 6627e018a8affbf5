"""Everything a run needs, as one flat, validated, hashable dataclass.

Each field is a CLI flag of ``scripts/run.py`` (``--mutation-rate 0.2``); presets in
:mod:`jaxfool.presets` are small dicts of overrides of these defaults.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxfool.errors import ConfigError
from jaxfool.map_elites import SELECTIONS

ENCODINGS = ("direct", "cppn")
COLOR_SPACES = ("rgb", "hsv", "hls")


def _f(default: Any, help: str, **kw) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A MAP-Elites fooling run."""

    # What to fool.
    classifier: str = _f("lenet-mnist", "registered name, checkpoint path, or module:factory")
    classes: tuple[str, ...] = _f((), "cells for these classes only (names or indices, comma-separated); empty: all")
    # How images are encoded.
    encoding: str = _f("direct", f"genome encoding: {' | '.join(ENCODINGS)}")
    color_space: str = _f("rgb", f"for colour images, what the genes mean: {' | '.join(COLOR_SPACES)}")
    # Budget and stopping.
    batch: int = _f(200, "offspring per generation (and random images at generation 0)")
    generations: int = _f(1000, "generation cap")
    seed: int = _f(0, "first seed")
    seeds: int = _f(1, "independent runs (seeds seed..seed+seeds-1) vmapped in one program")
    threshold: float = _f(0.9999, "confidence that counts as fooled")
    stop_when_fooled: bool = _f(True, "stop a seed once every cell reaches --threshold")
    # Selection and variation.
    selection: str = _f("unfooled", f"parent selection: {' | '.join(SELECTIONS)}")
    recombine: bool = _f(True, "spend C evaluations per generation on each cell's elite plus its summed improving mutations")
    recombine_scale: float = _f(0.7, "step along the summed improving mutations")
    mutation_rate: float = _f(0.1, "per-gene mutation probability")
    mutation_eta: float = _f(15.0, "polynomial mutation distribution index (larger: smaller steps)")
    crossover_rate: float = _f(0.0, "probability of SBX crossover between two parents (0: off)")
    crossover_eta: float = _f(10.0, "SBX distribution index")
    halving_period: int = _f(0, "halve the mutation rate every this many generations (0: never)")
    # Execution.
    chunk: int = _f(10, "generations per compiled lax.scan chunk (the host is touched between chunks)")
    checkpoint_every: int = _f(100, "checkpoint every this many generations (0: only at the end)")
    score_chunk: int = _f(0, "score at most this many images at once, to bound memory (0: whole batch)")

    def validate(self) -> RunConfig:
        """Raises :class:`ConfigError` naming the first bad field; returns ``self``."""
        positive = ("batch", "generations", "seeds", "chunk")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "score_chunk", "halving_period"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, choices in (
            ("encoding", ENCODINGS),
            ("selection", SELECTIONS),
            ("color_space", COLOR_SPACES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        for name in ("mutation_rate", "crossover_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        for name in ("mutation_eta", "crossover_eta", "recombine_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        return self

    def replace(self, **overrides: Any) -> RunConfig:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown config field {unknown[0]!r}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})
