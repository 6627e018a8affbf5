"""Classifier checkpoints: a msgpack file of parameters beside a JSON file of metadata.

msgpack holds only arrays, numbers and strings, so loading one cannot execute code (unlike a
pickle). The JSON names the architecture, its classes and its provenance, e.g.::

    {"architecture": "lenet", "num_classes": 10, "class_names": ["zero", ...],
     "input_shape": [28, 28, 1], "test_accuracy": 0.991, "seed": 0, "data_sha256": {...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import serialization

from jaxfool.errors import ClassifierError
from jaxfool.models.classifier import Classifier

SUFFIX = ".msgpack"


def _paths(path: str | os.PathLike) -> tuple[str, str]:
    path = os.fspath(path)
    stem = path[: -len(SUFFIX)] if path.endswith(SUFFIX) else path
    return stem + SUFFIX, stem + ".json"


def save_checkpoint(path: str | os.PathLike, params: Any, metadata: dict) -> str:
    """Writes ``<stem>.msgpack`` and ``<stem>.json`` atomically; returns the msgpack path."""
    weights, meta = _paths(path)
    os.makedirs(os.path.dirname(os.path.abspath(weights)), exist_ok=True)
    params = jax.tree.map(np.asarray, params)
    for target, data in (
        (weights, serialization.msgpack_serialize(serialization.to_state_dict(params))),
        (meta, json.dumps(metadata, indent=2, sort_keys=True).encode() + b"\n"),
    ):
        tmp = target + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return weights


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, dict]:
    """Returns ``(params, metadata)`` of a checkpoint written by :func:`save_checkpoint`."""
    weights, meta = _paths(path)
    for p in (weights, meta):
        if not os.path.exists(p):
            raise ClassifierError(f"classifier checkpoint file {p} not found")
    try:
        with open(meta) as f:
            metadata = json.load(f)
        with open(weights, "rb") as f:
            params = serialization.msgpack_restore(f.read())
    except (ValueError, TypeError, OSError) as e:
        raise ClassifierError(f"cannot read classifier checkpoint {weights}: {e}") from None
    return params, metadata


def load_checkpoint(
    path: str | os.PathLike, architectures: dict[str, Callable[[dict], Any]], name: str | None = None
) -> Classifier:
    """Builds a :class:`Classifier` from a checkpoint.

    Args:
      path: the ``.msgpack`` file (or its stem).
      architectures: maps the metadata's ``architecture`` to ``module_factory(metadata)``.
      name: the classifier's name; defaults to the file's stem.
    """
    params, meta = read_checkpoint(path)
    arch = meta.get("architecture")
    if arch not in architectures:
        raise ClassifierError(
            f"{path}: unknown architecture {arch!r}; known: {', '.join(sorted(architectures))}"
        )
    module = architectures[arch](meta)
    try:
        # Restore onto the module's own structure so a mismatched file fails here, readably.
        template = jax.eval_shape(
            module.init, jax.random.key(0), np.zeros((1, *meta["input_shape"]), np.float32)
        )["params"]
        params = serialization.from_state_dict(template, params)
        bad = [
            jax.tree_util.keystr(where)
            for where, t, p in zip(
                *zip(*jax.tree_util.tree_leaves_with_path(template)), jax.tree.leaves(params)
            )
            if t.shape != np.shape(p)
        ]
    except (KeyError, ValueError) as e:
        raise ClassifierError(f"{path}: parameters do not fit architecture {arch!r}: {e}") from None
    if bad:
        raise ClassifierError(f"{path}: parameter shapes do not fit architecture {arch!r} at {bad[0]}")
    params = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
    return Classifier(
        name=name or os.path.basename(_paths(path)[0])[: -len(SUFFIX)],
        apply_fn=lambda p, x: module.apply({"params": p}, x),
        params=params,
        input_shape=tuple(meta["input_shape"]),
        class_names=tuple(meta["class_names"]),
        value_range=tuple(meta.get("value_range", (0.0, 1.0))),
        module=module,
        info=meta,
    )
