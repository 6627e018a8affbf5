"""ImageNet EfficientNet-Lite0, direct encoding (HSV genes, like the paper's), the paper's mutation and 400 images per generation.

224x224x3 genes, uint8, interpreted as hue, saturation and value (``--color-space rgb`` for
RGB genes); each mutates with probability 0.1 by polynomial mutation (index 15); parents
come from cells still below the threshold.
"""

OVERRIDES = {
    "classifier": "efficientnet-lite0-imagenet",
    "encoding": "direct",
    "color_space": "hsv",
    "batch": 400,
    "generations": 5000,
    "selection": "unfooled",
    "recombine": False,
    "score_chunk": 64,
    "chunk": 5,
    "checkpoint_every": 25,
}
