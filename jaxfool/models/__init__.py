"""Target networks: one :class:`Classifier` interface, a registry, and the shipped LeNets."""

from jaxfool.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from jaxfool.models.classifier import Classifier, check_classifier
from jaxfool.models.lenet import LeNet, init_lenet
from jaxfool.models.registry import ARCHITECTURES, available, load_classifier, register
from jaxfool.models.torch_bridge import TorchInput, from_torch

__all__ = [
    "ARCHITECTURES",
    "Classifier",
    "check_classifier",
    "from_torch",
    "TorchInput",
    "LeNet",
    "available",
    "init_lenet",
    "load_checkpoint",
    "load_classifier",
    "read_checkpoint",
    "register",
    "save_checkpoint",
]
