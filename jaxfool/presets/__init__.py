"""Named experiments: each preset module holds ``OVERRIDES``, a dict over :class:`RunConfig`.

    config = load_preset("mnist-direct")            # the paper's MNIST direct-encoding run
    config = load_preset("mnist-direct", batch=100)  # ... with an override
"""

from __future__ import annotations

import importlib
import pkgutil

from jaxfool.config import RunConfig
from jaxfool.errors import ConfigError

DEFAULT = "mnist-direct-fast"


def available() -> list[str]:
    """Preset names (module names with ``_`` written as ``-``)."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__))


def describe(name: str) -> str:
    """The first line of a preset's docstring."""
    return (_module(name).__doc__ or "").strip().splitlines()[0]


def _module(name: str):
    if name not in available():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def load_preset(name: str = DEFAULT, **overrides) -> RunConfig:
    """The preset's config, with ``overrides`` applied on top, validated."""
    return RunConfig().replace(**_module(name).OVERRIDES).replace(**overrides).validate()
