"""jaxfool: evolve images that a trained classifier labels with >= 99.99 % confidence.

A JAX reproduction of Nguyen, Yosinski & Clune, "Deep Neural Networks are Easily Fooled"
(CVPR 2015): MAP-Elites with one cell per class, direct and CPPN encodings, compiled into one
fused step that runs many generations and seeds per call.
"""

__version__ = "0.1.0"

from jaxfool.api import FoolResult, fool  # noqa: E402

__all__ = ["FoolResult", "fool", "__version__"]
