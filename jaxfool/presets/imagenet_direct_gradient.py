"""ImageNet EfficientNet-Lite0, direct encoding with a gradient emitter beside the paper's mutation: every class at 99.99 % in minutes on CPU.

As ``imagenet-direct`` (HSV genes, the paper's mutation, parents from cells still below the
threshold, 400 images per generation), plus 10 gradient instances, each taking one Adam step a
generation up its cell's log-probability from the cell's elite (each step counted as 3
evaluations). On 150 528 genes a gradient says in one step what mutation searches for: on the
10-class subset every class passes 99.99 % after about 100 generations, where the paper's
operators leave the median near 6 % after 500. It is the preset the ImageNet
fooling-susceptibility rows use (``benchmarks/susceptibility.py``).
"""

from jaxfool.presets import imagenet_direct

OVERRIDES = {**imagenet_direct.OVERRIDES, "emitters": ("mutation", "gradient")}
