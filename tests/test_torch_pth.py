"""The torch-free .pth reader: round trips of hand-built legacy and zip files, and refusals.

The files are written here without torch: a pure-Python pickler emits the same GLOBAL opcodes
(``torch._utils _rebuild_tensor_v2``, ``torch FloatStorage``) and persistent ids
(``('storage', <type>, key, 'cpu', numel[, view])``) that ``torch.save`` does.
"""

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from jaxfool.errors import ClassifierError
from jaxfool.models.torch_pth import LEGACY_MAGIC, load_pth

STORAGE_TYPES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class Global:
    """Pickles as ``GLOBAL module name`` without that module having to exist."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # never called; the pickler only wants a callable to reduce with
        raise AssertionError(f"{self.module}.{self.name} called")


class Storage:
    """A flat torch storage: pickled as a persistent id, its bytes written after/beside the pickle."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class Tensor:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, OrderedDict())
        return Global("torch._utils", "_rebuild_tensor_v2"), args


class Call:
    """A pickle that calls ``module.name(*args)`` when loaded (what a malicious .pth does)."""

    def __init__(self, module: str, name: str, *args):
        self.fn, self.args = Global(module, name), args

    def __reduce__(self):
        return self.fn, self.args


class TorchLikePickler(pickle._Pickler):  # the pure-Python pickler lets us add GLOBALs by hand
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy: bool, views: dict | None = None):
        super().__init__(file, protocol=2)
        self.legacy, self.views = legacy, views or {}

    def _save_global(self, obj: Global):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[Global] = _save_global

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        root = self.views.get(obj.key)  # a legacy view: (root storage, offset)
        kind = Global("torch", STORAGE_TYPES[obj.data.dtype])
        if root is not None:
            base, offset = root
            return ("storage", kind, base.key, "cpu", base.data.size, (obj.key, offset, obj.data.size))
        pid = ("storage", kind, obj.key, "cpu", obj.data.size)
        return pid + (None,) if self.legacy else pid


def _pickle(obj, legacy: bool, views=None) -> bytes:
    buf = io.BytesIO()
    TorchLikePickler(buf, legacy, views).dump(obj)
    return buf.getvalue()


def write_legacy(path, obj, storages: list[Storage], views=None) -> None:
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}):
            pickle.dump(header, f, protocol=2)
        f.write(_pickle(obj, legacy=True, views=views))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.data.size))
            f.write(s.data.tobytes())


def write_zip(path, obj, storages: list[Storage]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickle(obj, legacy=False))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data.tobytes())


WRITERS = {"legacy": write_legacy, "zip": write_zip}


def _example():
    """A state dict exercising offsets, strides, shared storages and several element types."""
    rng = np.random.default_rng(0)
    shared = Storage("0", rng.standard_normal(40).astype(np.float32))
    conv = Storage("1", rng.standard_normal(2 * 3 * 3 * 3).astype(np.float32))
    counts = Storage("2", np.array([7, -3, 12], np.int64))
    half = Storage("3", rng.standard_normal(6).astype(np.float16))
    flags = Storage("4", np.array([True, False, True]))
    state = OrderedDict(
        [
            ("fc.weight", Tensor(shared, 0, (4, 5), (5, 1))),  # contiguous
            ("fc.weight_t", Tensor(shared, 0, (5, 4), (1, 5))),  # transposed view of the same storage
            ("fc.bias", Tensor(shared, 20, (5,), (1,))),  # offset into the shared storage
            ("every_other", Tensor(shared, 25, (3, 2), (4, 2))),
            ("conv.weight", Tensor(conv, 0, (2, 3, 3, 3), (1, 2, 18, 6))),  # channels-last strides
            ("bn.num_batches_tracked", Tensor(counts, 2, (), ())),  # a scalar
            ("half", Tensor(half, 0, (2, 3), (3, 1))),
            ("flags", Tensor(flags, 0, (3,), (1,))),
        ]
    )
    s = shared.data
    expected = {
        "fc.weight": s[:20].reshape(4, 5),
        "fc.weight_t": s[:20].reshape(4, 5).T,
        "fc.bias": s[20:25],
        "every_other": np.lib.stride_tricks.as_strided(s[25:], (3, 2), (16, 8)),
        "conv.weight": np.lib.stride_tricks.as_strided(conv.data, (2, 3, 3, 3), (4, 8, 72, 24)),
        "bn.num_batches_tracked": np.array(12, np.int64),
        "half": half.data.reshape(2, 3),
        "flags": flags.data,
    }
    return state, [shared, conv, counts, half, flags], expected


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_round_trip(tmp_path, fmt):
    state, storages, expected = _example()
    path = tmp_path / "model.pth"
    WRITERS[fmt](path, state, storages)
    loaded = load_pth(path)
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        got = loaded[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.c_contiguous and got.flags.owndata


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_nested_checkpoint_is_flattened(tmp_path, fmt):
    weights = Storage("0", np.arange(6, dtype=np.float32))
    checkpoint = {"epoch": 3, "state_dict": OrderedDict([("w", Tensor(weights, 0, (2, 3), (3, 1)))])}
    WRITERS[fmt](tmp_path / "c.pth", checkpoint, [weights])
    loaded = load_pth(tmp_path / "c.pth")
    assert list(loaded) == ["state_dict.w"]  # the epoch number is not a parameter
    np.testing.assert_array_equal(loaded["state_dict.w"], np.arange(6).reshape(2, 3))


def test_legacy_storage_view(tmp_path):
    # Old torch pickled views of a storage as ('storage', type, root_key, loc, numel, (view_key, offset, size)).
    root = Storage("root", np.arange(10, dtype=np.float32))
    view = Storage("view", root.data[4:8])
    write_legacy(tmp_path / "v.pth", {"v": Tensor(view, 1, (2,), (1,))}, [root], views={"view": (root, 4)})
    np.testing.assert_array_equal(load_pth(tmp_path / "v.pth")["v"], [5.0, 6.0])


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("call", [("os", "system"), ("builtins", "eval"), ("posix", "system")])
def test_code_in_the_pickle_is_refused_and_not_run(tmp_path, fmt, call):
    marker = tmp_path / "pwned"
    command = f"open({str(marker)!r}, 'w').write('x')" if call[1] == "eval" else f"touch {marker}"
    weights = Storage("0", np.zeros(3, np.float32))
    state = OrderedDict([("w", Tensor(weights, 0, (3,), (1,))), ("evil", Call(*call, command))])
    WRITERS[fmt](tmp_path / "evil.pth", state, [weights])
    with pytest.raises(ClassifierError) as e:
        load_pth(tmp_path / "evil.pth")
    message = str(e.value)
    assert "refusing to load" in message and f"pickle calls {call[0]}.{call[1]}" in message
    assert "\n" not in message
    assert not marker.exists()


def test_out_of_bounds_strides_are_refused(tmp_path):
    weights = Storage("0", np.zeros(6, np.float32))
    write_zip(tmp_path / "oob.pth", {"w": Tensor(weights, 2, (3, 3), (3, 1))}, [weights])
    with pytest.raises(ClassifierError, match="reaches past its storage"):
        load_pth(tmp_path / "oob.pth")


def test_not_a_pth(tmp_path):
    with pytest.raises(ClassifierError, match="not found"):
        load_pth(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(ClassifierError, match="cannot read"):
        load_pth(tmp_path / "text.pth")
    truncated = tmp_path / "short.pth"
    state, storages, _ = _example()
    write_legacy(truncated, state, storages)
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(ClassifierError, match="truncated"):
        load_pth(truncated)
    assert os.path.exists(truncated)
