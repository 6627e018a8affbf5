"""How regular an image is, by number, so direct and CPPN elites can be compared as the paper
compares them by eye.

* :func:`neighbour_correlation`: correlation between horizontally and vertically adjacent
  pixels; ~0 for independent noise, near 1 for smooth patterns.
* :func:`png_bits_per_pixel`: size of the lossless PNG; regular images compress better.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from jaxfool.pictures import to_uint8


def neighbour_correlation(image: np.ndarray) -> float:
    """Pearson correlation of adjacent pixel pairs (both directions, all channels) of
    ``image`` float ``[H, W, ch]``; 1.0 for a constant image (perfectly regular)."""
    x = np.asarray(image, np.float64)
    a = np.concatenate([x[:, :-1].ravel(), x[:-1, :].ravel()])
    b = np.concatenate([x[:, 1:].ravel(), x[1:, :].ravel()])
    if a.std() == 0 or b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def png_bits_per_pixel(image: np.ndarray) -> float:
    """Bits per pixel of ``image`` float ``[H, W, ch]`` as an 8-bit PNG (maximum compression)."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG", optimize=True)
    return 8.0 * buffer.tell() / (image.shape[0] * image.shape[1])


def regularity(images: np.ndarray) -> dict[str, float]:
    """Mean of both measures over ``images`` float ``[n, H, W, ch]``."""
    return {
        "neighbour_correlation": float(np.mean([neighbour_correlation(im) for im in images])),
        "png_bits_per_pixel": float(np.mean([png_bits_per_pixel(im) for im in images])),
    }
