"""MNIST, found offline: an IDX directory (flag or ``JAXFOOL_DATA``), else a prepared TFDS copy.

Images are returned as float32 ``[N, 28, 28, 1]`` in [0, 1] and labels as int32 ``[N]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from jaxfool.data.idx import read_idx
from jaxfool.errors import DataError

ENV_VAR = "JAXFOOL_DATA"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_WHERE = (
    f"pass --data DIR or set {ENV_VAR}=DIR, where DIR holds the four MNIST IDX files "
    f"({', '.join(n + '.gz' for pair in FILES.values() for n in pair)}), "
    "or prepare the TFDS copy with `tfds build mnist`"
)


@dataclasses.dataclass(frozen=True)
class Split:
    """One MNIST split.

    Attributes:
      images: float32 ``[N, 28, 28, 1]`` in [0, 1].
      labels: int32 ``[N]`` in 0..9.
      sha256: hash of the raw uint8 images and labels, to record which data a model saw.
      source: where the split was read from.
    """

    images: np.ndarray
    labels: np.ndarray
    sha256: str
    source: str


def _find(directory: str, stem: str) -> str:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise DataError(f"MNIST file {stem}.gz not found in {directory}: {_WHERE}")


def _from_arrays(images: np.ndarray, labels: np.ndarray, source: str) -> Split:
    images = np.asarray(images, np.uint8).reshape(-1, 28, 28, 1)
    labels = np.asarray(labels).reshape(-1)
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{source}: labels outside 0..9 (found {labels.min()}..{labels.max()})")
    digest = hashlib.sha256(images.tobytes() + labels.astype(np.uint8).tobytes()).hexdigest()
    return Split(images.astype(np.float32) / 255.0, labels.astype(np.int32), digest, source)


def _load_idx(directory: str, split: str) -> Split:
    if not os.path.isdir(directory):
        raise DataError(f"MNIST directory {directory} does not exist: {_WHERE}")
    image_stem, label_stem = FILES[split]
    images_path, labels_path = _find(directory, image_stem), _find(directory, label_stem)
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    return _from_arrays(images, labels, os.path.abspath(directory))


def _load_tfds(split: str, data_dir: str | None = None) -> Split | None:
    """Reads an already prepared TFDS ``mnist``; ``None`` when there is none (never downloads)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    try:
        source = tfds.data_source("mnist", split=split, download=False, data_dir=data_dir)
        examples = [source[i] for i in range(len(source))]
    except Exception:  # noqa: BLE001 - any failure means "no usable TFDS copy"
        return None
    if not examples:
        return None
    images = np.stack([np.asarray(e["image"]) for e in examples])
    labels = np.array([int(e["label"]) for e in examples])
    return _from_arrays(images, labels, f"tfds:mnist/{split}")


def load_mnist(split: str = "train", data_dir: str | None = None) -> Split:
    """Loads an MNIST split without touching the network.

    Looks in ``data_dir``, else in ``$JAXFOOL_DATA``, else in a prepared TFDS copy.

    Args:
      split: ``"train"`` (60 000 images) or ``"test"`` (10 000).
      data_dir: directory with the IDX files; overrides ``JAXFOOL_DATA``.

    Raises:
      DataError: with one line saying where to put the files when nothing is found, or what
        is wrong with the files that were found.
    """
    if split not in FILES:
        raise DataError(f"unknown MNIST split {split!r}; choose 'train' or 'test'")
    directory = data_dir or os.environ.get(ENV_VAR)
    if directory:
        return _load_idx(directory, split)
    found = _load_tfds(split)
    if found is None:
        raise DataError(f"MNIST not found: {_WHERE}")
    return found
