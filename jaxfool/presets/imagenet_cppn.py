"""ImageNet EfficientNet-Lite0, CPPN encoding (H, L, S outputs), the paper's CPPN operators and 400 images per generation.

The paper fooled AlexNet on 1000 classes with CPPNs whose three outputs are hue, lightness
and saturation (its code writes H, L, S), 400 offspring per generation. Here the target is
EfficientNet-Lite0 (pretrained weights from the ``imagenet`` extra). Parents come from cells
still below the threshold. ``--classes`` restricts the cells; ``--ten-crop`` scores 10 crops.
"""

OVERRIDES = {
    "classifier": "efficientnet-lite0-imagenet",
    "encoding": "cppn",
    "color_space": "hls",
    "batch": 400,
    "generations": 5000,
    "selection": "unfooled",
    "recombine": False,
    "score_chunk": 64,
    "chunk": 5,
    "checkpoint_every": 25,
}
