"""ImageNet EfficientNet-Lite0, CPPN encoding for speed: deeper starting networks whose weights a gradient emitter climbs beside the paper's mutation.

As ``imagenet-cppn`` (H, L, S outputs, the paper's structural mutations, parents from cells still
below the threshold), but every genome starts as a CPPN with three hidden layers of 12 nodes, each
joined fully to the next (He-style weights; room to grow to 40 hidden nodes and 400 connections),
and each generation 10 of its 30 images come from the gradient emitter: Adam steps of 0.0025 on
genes (0.05 of a weight) up an elite's class log-probability through the differentiable render,
an instance moving on after 40 generations without progress. The images stay CPPNs: smooth,
regular patterns. With fewer classes than 10, pass ``--gradient-instances`` = the number of
classes (instances on one cell would retrace each other).
"""

from jaxfool.presets import imagenet_cppn

OVERRIDES = {
    **imagenet_cppn.OVERRIDES,
    "init_layers": (12, 12, 12),
    "max_hidden": 40,
    "max_conns": 400,
    "emitters": ("mutation", "gradient"),
    "gradient_instances": 10,
    "gradient_lr": 0.0025,
    "es_restart": 40,
    "batch": 30,
    "chunk": 10,
    "checkpoint_every": 100,
}
