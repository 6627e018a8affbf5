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

A small file must not be able to take much time or memory, so the limits come from the file:
memo indexes must count up as picklers write them (checked on the opcodes before unpickling);
no zip member may claim more bytes than the archive, nor a storage more than its member or the
rest of a legacy file; a tensor may not hold more elements than the storage it views unless it
is a broadcast of at most :data:`SMALL_BROADCAST` elements, and all tensors together at most a
few times the file's bytes; dicts nest at most :data:`MAX_DEPTH` deep and are walked at most
about once per file byte. Stand-ins are built afresh for each load and refuse ``BUILD``. Every
failure is one :class:`~jaxfool.errors.ClassifierError` line naming the file
(``tests/test_torch_pth.py`` crafts each attack and fuzzes 520 mutants).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
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


class _Frozen:
    """Our stand-ins and the objects they build refuse pickle's ``BUILD`` (``__setstate__``), which
    could otherwise overwrite their fields (a storage type's element type, a tensor's strides)."""

    def __setstate__(self, state):
        raise ClassifierError(f"the pickle tries to change a {type(self).__name__.strip('_')} (BUILD)")


class _StorageType(_Frozen):
    """Stand-in for a torch storage class such as ``torch.FloatStorage``."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _numpy_dtype(_STORAGE_DTYPES[name])


class _Storage(_Frozen):
    """A storage named by a persistent id; its bytes are attached once they have been read."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None  # 1-D, ``numel`` elements


class _StorageView(_Frozen):
    """Legacy files may point a tensor at a window ``[offset, offset + size)`` of a storage."""

    def __init__(self, root: _Storage, offset: int, size: int):
        self.root, self.offset, self.size = root, offset, size


class _Tensor(_Frozen):
    """A tensor waiting for its storage's bytes: ``storage[offset :: strides]`` of shape ``size``."""

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise ClassifierError(f"a tensor is built from a {type(storage).__name__}")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)


class _Call(_Frozen):
    """A stand-in function (refusing ``BUILD`` too)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # Also serves _rebuild_tensor_v2 (extra args: requires_grad, backward_hooks[, metadata]).
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    # nn.Parameter(data, requires_grad[, backward_hooks]) -> the data.
    return data


def _stand_ins() -> dict[tuple[str, str], Any]:
    """The only globals a pickle may name: (module, name) -> stand-in; fresh for every load, so
    nothing one file does to them can reach the next."""
    return {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _Call(_rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _Call(_rebuild_tensor),
        ("torch._utils", "_rebuild_parameter"): _Call(_rebuild_parameter),
        **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
    }


# Limits no real state dict comes near, each derived from the file where possible.
MAX_DEPTH = 64  # nesting of dicts ({"state_dict": {...}} is 2)
SMALL_BROADCAST = 1 << 20  # elements a tensor may hold beyond its storage (a stride-0 broadcast)
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_opcodes(buf: io.BytesIO) -> None:
    """Walks one pickle's opcodes (without running them) from ``buf``'s position, which it
    restores. Memo indexes must count up from 0 as picklers write them: CPython's unpickler
    sizes its memo by the largest index, so a 10-byte pickle with ``LONG_BINPUT 2**30`` would
    take 16 GiB."""
    start, puts = buf.tell(), 0
    try:
        for opcode, arg, _pos in pickletools.genops(buf):
            if opcode.name in _PUTS:
                if not isinstance(arg, int) or arg > puts:
                    raise ClassifierError(f"memo index {arg} out of order")
                puts += 1
            elif opcode.name == "MEMOIZE":
                puts += 1
    except ClassifierError:
        raise
    except Exception as e:  # truncated or unknown opcodes
        raise ClassifierError(f"damaged pickle ({type(e).__name__}: {e})") from None
    buf.seek(start)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only this load's stand-ins and torch's storage ids."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages
        self._allowed = _stand_ins()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"pickle calls {module}.{name} (only tensors and storages are allowed)") from None

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata]) -- zip files omit the last.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise _Refused(f"unexpected persistent id of type {type(pid).__name__}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ClassifierError(f"storage type {type(storage_type).__name__}")
        key = str(key)
        if key not in self._storages:
            if int(numel) < 0:
                raise ClassifierError(f"storage {key[:40]} has {int(numel)} elements")
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        storage = self._storages[key]
        view = pid[5] if len(pid) == 6 else None
        if view is not None:
            view_key, offset, size = view
            if str(view_key) not in self._storages:
                self._storages[str(view_key)] = _StorageView(storage, int(offset), int(size))
            return self._storages[str(view_key)]
        return storage


class _Refused(ClassifierError):
    """A pickle that asks for something outside the allow-list (reported as a refusal)."""


def _unpickle(buf: io.BytesIO, storages: dict[str, _Storage]) -> Any:
    _check_opcodes(buf)
    return _RestrictedUnpickler(buf, storages).load()


def _read_legacy(buf: io.BytesIO) -> Any:
    if _unpickle(buf, {}) != LEGACY_MAGIC:
        raise ClassifierError("not a PyTorch .pth file (bad magic number)")
    protocol = _unpickle(buf, {})
    if protocol != 1001:
        raise ClassifierError(f"unsupported .pth protocol version {protocol}")
    sys_info = _unpickle(buf, {})
    little = not isinstance(sys_info, Mapping) or sys_info.get("little_endian", True)
    storages: dict[str, _Storage] = {}
    obj = _unpickle(buf, storages)
    keys = _unpickle(buf, {})
    for key in keys:
        storage = storages.get(str(key))
        if not isinstance(storage, _Storage):
            raise ClassifierError(f"storage {str(key)[:40]} is not referenced")
        head = buf.read(8)
        if len(head) != 8:
            raise ClassifierError(f"truncated before storage {key}")
        (numel,) = struct.unpack("<q", head)
        if numel != storage.numel:
            raise ClassifierError(f"storage {key} has {numel} elements, expected {storage.numel}")
        nbytes = numel * storage.dtype.itemsize
        raw = buf.read(nbytes)
        if len(raw) != nbytes:
            raise ClassifierError(f"truncated inside storage {key}")
        dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
        storage.data = np.frombuffer(raw, dtype).astype(storage.dtype, copy=False)
    return obj


def _read_member(z: zipfile.ZipFile, name: str, archive_bytes: int) -> bytes:
    """A zip member, refused if it claims more bytes than the whole archive (a zip bomb)."""
    info = z.getinfo(name)
    if info.file_size > archive_bytes:
        raise ClassifierError(f"zip member {name[:60]} claims {info.file_size} bytes, more than the archive's {archive_bytes}")
    return z.read(info)


def _read_zip(path: str, archive_bytes: int) -> Any:
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ClassifierError("zip has no single <prefix>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            little = _read_member(z, prefix + "byteorder", archive_bytes).strip() != b"big"
        storages: dict[str, _Storage] = {}
        obj = _unpickle(io.BytesIO(_read_member(z, pickles[0], archive_bytes)), storages)
        for key, storage in storages.items():
            if not isinstance(storage, _Storage):
                continue
            record = f"{prefix}data/{key}"
            if record not in names:
                raise ClassifierError(f"storage file {record[:60]} missing")
            nbytes = storage.numel * storage.dtype.itemsize
            if nbytes > z.getinfo(record).file_size:
                raise ClassifierError(f"storage {key[:40]} claims {nbytes} bytes, its file holds {z.getinfo(record).file_size}")
            raw = _read_member(z, record, archive_bytes)
            dtype = storage.dtype if little else storage.dtype.newbyteorder(">")
            storage.data = np.frombuffer(raw[:nbytes], dtype).astype(storage.dtype, copy=False)
    return obj


class _Budget:
    """What flattening may still produce: elements (shared with tied weights and broadcasts,
    bounded by a few times the file's own storage bytes) and dict entries visited."""

    def __init__(self, file_bytes: int):
        self.bytes = 4 * file_bytes + 8 * SMALL_BROADCAST
        self.entries = max(10_000, file_bytes)

    def spend_bytes(self, n: int) -> None:
        self.bytes -= n
        if self.bytes < 0:
            raise ClassifierError("its tensors hold far more data than the file (overlapping or broadcast views)")

    def spend_entry(self) -> None:
        self.entries -= 1
        if self.entries < 0:
            raise ClassifierError("more dict entries than the file can hold (a shared dict referenced many times)")


def _materialise(t: _Tensor, budget: _Budget) -> np.ndarray:
    """Copies ``t`` out of its storage, checking every element it touches lies inside it and
    that it holds no more elements than its storage (save a small broadcast)."""
    storage, base = t.storage, 0
    if isinstance(storage, _StorageView):
        storage, base, limit = storage.root, storage.offset, storage.size
    else:
        limit = storage.numel
    if not isinstance(storage, _Storage) or storage.data is None:
        raise ClassifierError(f"storage {getattr(storage, 'key', '?')} has no data")
    if len(t.size) != len(t.stride) or len(t.size) > MAX_DEPTH or any(int(n) < 0 for n in t.size) or any(int(s) < 0 for s in t.stride):
        raise ClassifierError(f"tensor size {str(t.size)[:60]} / stride {str(t.stride)[:60]}")
    shape = tuple(int(n) for n in t.size)
    numel = math.prod(shape)
    if numel > max(limit, SMALL_BROADCAST):
        raise ClassifierError(f"a tensor of shape {shape} ({numel} elements) views a storage of {limit}")
    budget.spend_bytes(numel * storage.dtype.itemsize)
    if numel == 0:
        return np.zeros(shape, storage.dtype)
    last = t.offset + sum((n - 1) * int(s) for n, s in zip(shape, t.stride))
    # An out-of-range offset or stride would make as_strided read foreign memory.
    if t.offset < 0 or base < 0 or last >= limit or base + limit > storage.data.size:
        raise ClassifierError(f"tensor reaches past its storage {storage.key}")
    flat = storage.data[base + t.offset :]
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat, shape, tuple(int(s) * item for s in t.stride), writeable=False)
    return np.array(view, order="C")  # C-order copy, independent of the file's buffer


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray], budget: _Budget, depth: int = 0) -> None:
    if isinstance(obj, _Tensor):
        out[prefix] = _materialise(obj, budget)
    elif isinstance(obj, Mapping):
        if depth >= MAX_DEPTH:
            raise ClassifierError(f"dicts nested deeper than {MAX_DEPTH}")
        for k, v in obj.items():
            budget.spend_entry()
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, budget, depth + 1)
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
    try:
        size = os.path.getsize(path)
        if zipfile.is_zipfile(path):
            obj = _read_zip(path, size)
        else:
            with open(path, "rb") as f:
                obj = _read_legacy(io.BytesIO(f.read()))
        out: dict[str, np.ndarray] = {}
        _flatten(obj, "", out, _Budget(size))
    except _Refused as e:
        raise ClassifierError(f"refusing to load {path}: {e}") from None
    except ClassifierError as e:
        raise ClassifierError(f"cannot read {path}: {_one_line(str(e))}") from None
    except Exception as e:  # a damaged file can fail in many ways deep inside pickle, zipfile or numpy
        raise ClassifierError(f"cannot read {path}: damaged .pth ({type(e).__name__}: {_one_line(str(e))})") from None
    if not out:
        raise ClassifierError(f"{path} holds no tensors")
    return out


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
