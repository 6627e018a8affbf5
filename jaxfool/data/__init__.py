"""Data sets the classifiers are trained and tested on."""

from jaxfool.data.idx import read_idx
from jaxfool.data.mnist import CLASS_NAMES as MNIST_CLASS_NAMES
from jaxfool.data.mnist import ENV_VAR, Split, load_mnist

__all__ = ["ENV_VAR", "MNIST_CLASS_NAMES", "Split", "load_mnist", "read_idx"]
