"""Where jaxfool keeps things worth reusing between runs.

``$JAXFOOL_CACHE`` (default ``~/.cache/jaxfool``) holds ``models/`` (converted pretrained
weights) and ``xla/`` (JAX's persistent compilation cache, used by the scripts).
``JAXFOOL_CACHE=off`` keeps nothing on disk.
"""

from __future__ import annotations

import os

ENV_VAR = "JAXFOOL_CACHE"


def cache_root() -> str | None:
    """``$JAXFOOL_CACHE``, else ``~/.cache/jaxfool``; ``None`` when it is ``off``."""
    root = os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "jaxfool")
    return None if root == "off" else root


def cache_dir(kind: str) -> str | None:
    """A subdirectory of the cache root (``models`` or ``xla``); ``None`` when caching is off."""
    root = cache_root()
    return None if root is None else os.path.join(root, kind)
