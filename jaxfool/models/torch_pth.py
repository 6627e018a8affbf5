"""Reads PyTorch ``.pth`` state dicts into numpy arrays, without torch and without running code.

A ``.pth`` file is a pickle, and unpickling can call any importable function (``os.system``
included). :func:`load_pth` unpickles with a :class:`pickle.Unpickler` whose ``find_class``
hands out only a short allow-list of *stand-ins* for torch's tensor-rebuilding functions and
storage types; every other global the pickle names is refused with a one-line
:class:`~jaxfool.errors.ClassifierError` before anything runs.

Two container formats exist:

* legacy (``torch.save(..., _use_new_zipfile_serialization=False)``, torch < 1.6): five
  pickles in a row -- magic number, protocol version, sys info, the object itself (tensors
  point at storages through persistent ids), the list of storage keys -- followed by each
  storage's raw bytes, prefixed by its element count as a little-endian int64;
* zip (torch >= 1.6): ``<prefix>/data.pkl`` holds the object and ``<prefix>/data/<key>`` each
  storage's raw bytes.

In both, a tensor is ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``; offsets and
strides count elements, and the element type comes from the storage's class
(``torch.FloatStorage`` -> float32, ...).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxfool.errors import ClassifierError

# The magic number legacy files start with (torch/serialization.py: MAGIC_NUMBER).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class -> numpy element type.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # a dependency of jax

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class _StorageType:
    """Stand-in for a torch storage class such as ``torch.FloatStorage``."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _numpy_dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage named by a persistent id; its bytes are attached once they have been read."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None  # 1-D, ``numel`` elements


class _StorageView:
    """Legacy files may point a tensor at a window ``[offset, offset + size)`` of a storage."""

    def __init__(self, root: _Storage, offset: int, size: int):
        self.root, self.offset, self.size = root, offset, size


class _Tensor:
    """A tensor waiting for its storage's bytes: ``storage[offset :: strides]`` of shape ``size``."""

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise ClassifierError(f"malformed .pth: a tensor is built from a {type(storage).__name__}")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # Also serves _rebuild_tensor_v2 (extra args: requires_grad, backward_hooks[, metadata]).
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    # nn.Parameter(data, requires_grad[, backward_hooks]) -> the data.
    return data


# The only globals a pickle may name: (module, name) -> stand-in.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED` globals and torch's storage ids."""

    def __init__(self, file, path: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ClassifierError(
                f"refusing to load {self._path}: pickle calls {module}.{name} "
                "(only tensors and storages are allowed)"
            ) from None

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata]) -- zip files omit the last.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ClassifierError(f"refusing to load {self._path}: unexpected persistent id {str(pid)[:80]}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ClassifierError(f"malformed .pth {self._path}: storage type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        storage = self._storages[key]
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            view_key, offset, size = view
            if str(view_key) not in self._storages:
                self._storages[str(view_key)] = _StorageView(storage, int(offset), int(size))
            return self._storages[str(view_key)]
        return storage


def _unpickle(file, path: str, storages: dict[str, _Storage]) -> Any:
    try:
        return _RestrictedUnpickler(file, path, storages).load()
    except ClassifierError:
        raise
    except Exception as e:  # truncated or corrupt pickles raise many kinds of error
        raise ClassifierError(f"cannot read {path}: corrupt pickle ({type(e).__name__}: {e})") from None


def _plain_unpickle(file, path: str) -> Any:
    """The small header pickles of legacy files hold numbers and dicts; still no globals."""
    return _unpickle(file, path, {})


def _read_legacy(f, path: str) -> tuple[Any, dict[str, _Storage]]:
    if _plain_unpickle(f, path) != LEGACY_MAGIC:
        raise ClassifierError(f"cannot read {path}: not a PyTorch .pth file (bad magic number)")
    protocol = _plain_unpickle(f, path)
    if protocol != 1001:
        raise ClassifierError(f"cannot read {path}: unsupported .pth protocol version {protocol}")
    sys_info = _plain_unpickle(f, path)
    little = not isinstance(sys_info, Mapping) or sys_info.get("little_endian", True)
    storages: dict[str, _Storage] = {}
    obj = _unpickle(f, path, storages)
    keys = _plain_unpickle(f, path)
    for key in keys:
        storage = storages.get(str(key))
        if not isinstance(storage, _Storage):
            raise ClassifierError(f"malformed .pth {path}: storage {key!r} is not referenced")
        head = f.read(8)
        if len(head) != 8:
            raise ClassifierError(f"cannot read {path}: truncated before storage {key}")
        (numel,) = struct.unpack("<q", head)
        if numel != storage.numel:
            raise ClassifierError(
                f"malformed .pth {path}: storage {key} has {numel} elements, expected {storage.numel}"
            )
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ClassifierError(f"cannot read {path}: truncated inside storage {key}")
        dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
        storage.data = np.frombuffer(raw, dtype).astype(storage.dtype, copy=False)
    return obj, storages


def _read_zip(path: str) -> tuple[Any, dict[str, _Storage]]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ClassifierError(f"cannot read {path}: zip has no single <prefix>/data.pkl")
            prefix = pickles[0][: -len("data.pkl")]
            little = True
            if prefix + "byteorder" in names:
                little = z.read(prefix + "byteorder").strip() != b"big"
            storages: dict[str, _Storage] = {}
            with z.open(pickles[0]) as f:
                obj = _unpickle(f, path, storages)
            for key, storage in storages.items():
                if not isinstance(storage, _Storage):
                    continue
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise ClassifierError(f"malformed .pth {path}: storage file {record} missing")
                raw = z.read(record)
                nbytes = storage.numel * storage.dtype.itemsize
                if len(raw) < nbytes:
                    raise ClassifierError(f"malformed .pth {path}: storage {key} is short")
                dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
                storage.data = np.frombuffer(raw[:nbytes], dtype).astype(storage.dtype, copy=False)
    except zipfile.BadZipFile as e:
        raise ClassifierError(f"cannot read {path}: {e}") from None
    return obj, storages


def _materialise(t: _Tensor, path: str) -> np.ndarray:
    """Copies ``t`` out of its storage, checking every element it touches lies inside it."""
    storage, base = t.storage, 0
    if isinstance(storage, _StorageView):
        storage, base, limit = storage.root, storage.offset, storage.size
    elif isinstance(storage, _Storage):
        limit = storage.numel
    else:
        raise ClassifierError(f"malformed .pth {path}: a tensor is built from {type(storage).__name__}")
    if not isinstance(storage, _Storage) or storage.data is None:
        raise ClassifierError(f"malformed .pth {path}: storage {storage.key} has no data")
    if len(t.size) != len(t.stride) or any(int(n) < 0 for n in t.size) or any(int(s) < 0 for s in t.stride):
        raise ClassifierError(f"malformed .pth {path}: tensor size {t.size} / stride {t.stride}")
    shape = tuple(int(n) for n in t.size)
    if 0 in shape:
        return np.zeros(shape, storage.dtype)
    last = t.offset + sum((n - 1) * int(s) for n, s in zip(shape, t.stride))
    # An out-of-range offset or stride would make as_strided read foreign memory.
    if t.offset < 0 or last >= limit or base + limit > storage.data.size:
        raise ClassifierError(f"malformed .pth {path}: tensor reaches past its storage {storage.key}")
    flat = storage.data[base + t.offset :]
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat, shape, tuple(int(s) * item for s in t.stride), writeable=False)
    return np.array(view, order="C")  # C-order copy, independent of the file's buffer


def _flatten(obj: Any, path: str, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, _Tensor):
        out[prefix] = _materialise(obj, path)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _flatten(v, path, f"{prefix}.{k}" if prefix else str(k), out)
    # numbers, strings, ... (e.g. a checkpoint's "epoch") are not parameters: skipped


def load_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch ``.pth`` state dict: ``{"layer.weight": np.ndarray, ...}``.

    Nested dicts (``{"state_dict": {...}}``) are flattened with dots; entries that are not
    tensors are skipped. Arrays keep torch's layout (``[O, I, kh, kw]`` for convolutions) and
    element type (float32 for ``torch.FloatStorage``, int64 for ``torch.LongStorage``, ...).

    Raises:
      ClassifierError: the file is missing, malformed, or its pickle names any global outside
        the tensor/storage allow-list (nothing named by the pickle is ever called then).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ClassifierError(f"PyTorch weights file {path} not found")
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path)
    else:
        with open(path, "rb") as f:
            obj, _ = _read_legacy(f, path)
    out: dict[str, np.ndarray] = {}
    try:
        _flatten(obj, path, "", out)
    except (TypeError, ValueError, AttributeError, OverflowError) as e:
        raise ClassifierError(f"malformed .pth {path}: {type(e).__name__}: {e}") from None
    if not out:
        raise ClassifierError(f"{path} holds no tensors")
    return out
