"""Reader for the IDX format of the MNIST files (optionally gzip-compressed).

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the data. MNIST uses dtype ``0x08`` (unsigned byte): images have 3 dims
``[N, 28, 28]`` and labels 1 dim ``[N]``.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from jaxfool.errors import DataError

_UBYTE = 0x08


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Reads an unsigned-byte IDX file with ``ndim`` dimensions.

    Args:
      path: a ``.gz`` or uncompressed IDX file.
      ndim: the expected number of dimensions (3 for images, 1 for labels).

    Returns:
      uint8 array of the shape the header declares.

    Raises:
      DataError: the file is missing, truncated, not gzip where it says so, or its header does
        not match (wrong magic number, wrong dtype, sizes that disagree with the data length).
    """
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt") from None

    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    expected = (_UBYTE << 8) | ndim
    if magic != expected:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    body = len(raw) - header
    if body != size:
        what = "truncated" if body < size else "has trailing bytes"
        raise DataError(f"{path}: {what}: header declares shape {shape} = {size} bytes, found {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
