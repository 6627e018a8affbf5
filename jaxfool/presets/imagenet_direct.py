"""ImageNet EfficientNet-Lite0, direct encoding (HSV genes, like the paper's), the paper's mutation and 400 images per generation.

224x224x3 genes, uint8, interpreted as hue, saturation and value (``--color-space rgb`` for
RGB genes); each mutates with probability 0.1 by polynomial mutation (index 15); parents
come from cells still below the threshold. Otherwise as ``imagenet-cppn``.
"""

from jaxfool.presets import imagenet_cppn

OVERRIDES = {**imagenet_cppn.OVERRIDES, "encoding": "direct", "color_space": "hsv"}
