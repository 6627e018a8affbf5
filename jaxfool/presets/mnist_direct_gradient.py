"""MNIST, direct encoding: the default preset plus a gradient emitter, for any differentiable classifier (PyTorch models included).

As ``mnist-direct-fast`` (the paper's mutation, parents from cells still below the threshold,
recombination), and 10 gradient instances, each taking one Adam step a generation up its cell's
log-probability from the cell's elite (each step counted as 3 evaluations: forward, backward,
scoring its offspring). The classifier must be differentiable in JAX: our networks and PyTorch
modules through the bridge are. On networks the paper's mutation finds slow to fool (a one-epoch
PyTorch LeNet-5 needs 22 000-28 000 evaluations with the default), a gradient says in one step
what mutation searches for.
"""

OVERRIDES = {
    "emitters": ("mutation", "gradient"),
}
