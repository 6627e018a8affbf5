"""The torch-free .pth reader: round trips of hand-built legacy and zip files, and refusals.

The files are written here without torch: a pure-Python pickler emits the same GLOBAL opcodes
(``torch._utils _rebuild_tensor_v2``, ``torch FloatStorage``) and persistent ids
(``('storage', <type>, key, 'cpu', numel[, view])``) that ``torch.save`` does.
"""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
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
    _zip_of_pickle(path, _pickle(obj, legacy=False), {s.key: s.data.tobytes() for s in storages})


def _zip_of_pickle(path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None, compress=zipfile.ZIP_STORED) -> None:
    """A zip .pth as torch writes it, around any pickle (hand-made ones included)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw, compress_type=compress)


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


# --- Crafted files that once made the reader hang, exhaust memory or misread later files ---


def test_build_cannot_poison_the_stand_ins_for_later_loads(tmp_path):
    # GLOBAL torch.FloatStorage, then BUILD {"dtype": int8} on it: would make every later
    # FloatStorage read as int8 if the stand-ins were shared and accepted BUILD.
    evil = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x04\x00\x00\x00int8sb0}."
    _zip_of_pickle(tmp_path / "evil.pth", evil)
    with pytest.raises(ClassifierError, match="tries to change a StorageType"):
        load_pth(tmp_path / "evil.pth")
    state, storages, expected = _example()
    write_zip(tmp_path / "good.pth", state, storages)
    assert load_pth(tmp_path / "good.pth")["fc.weight"].dtype == np.float32
    np.testing.assert_array_equal(load_pth(tmp_path / "good.pth")["fc.weight"], expected["fc.weight"])


def test_a_huge_zero_stride_view_is_refused_and_a_small_broadcast_loads(tmp_path):
    four = Storage("0", np.arange(4, dtype=np.float32))
    write_zip(tmp_path / "huge.pth", {"w": Tensor(four, 0, (2**20, 2**20), (0, 0))}, [four])  # 16 TiB from ~400 bytes
    with pytest.raises(ClassifierError, match=r"\(1099511627776 elements\) views a storage of 4"):
        load_pth(tmp_path / "huge.pth")
    write_zip(tmp_path / "small.pth", {"w": Tensor(four, 1, (1000, 3), (0, 1))}, [four])  # 3 000 elements from 4
    np.testing.assert_array_equal(load_pth(tmp_path / "small.pth")["w"], np.broadcast_to(four.data[1:4], (1000, 3)))


def test_many_views_of_one_storage_cannot_multiply_memory(tmp_path):
    big = Storage("0", np.zeros(1 << 16, np.float32))  # 256 KiB, viewed whole by 2 000 tensors = 500 MiB
    state = OrderedDict((f"w{i}", Tensor(big, 0, (1 << 16,), (1,))) for i in range(2000))
    write_zip(tmp_path / "views.pth", state, [big])
    with pytest.raises(ClassifierError, match="far more data than the file"):
        load_pth(tmp_path / "views.pth")


def test_a_compressed_member_claiming_more_than_the_archive_is_not_read(tmp_path):
    weights = Storage("0", np.zeros(16 << 20, np.float32))  # 64 MiB of zeros deflate to ~64 KiB
    _zip_of_pickle(tmp_path / "bomb.pth", _pickle({"w": Tensor(weights, 0, (16 << 20,), (1,))}, legacy=False),
                   {"0": weights.data.tobytes()}, compress=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(tmp_path / "bomb.pth") < 1 << 20
    with pytest.raises(ClassifierError, match="claims 67108864 bytes, more than the archive's"):
        load_pth(tmp_path / "bomb.pth")


def test_a_shared_dict_fanning_out_is_refused_quickly(tmp_path):
    weights = Storage("0", np.zeros(2, np.float32))
    node = {"w": Tensor(weights, 0, (2,), (1,))}
    for _ in range(40):  # 2**40 paths through 40 dicts: the pickler writes each dict once
        node = {"a": node, "b": node}
    write_zip(tmp_path / "fan.pth", node, [weights])
    assert os.path.getsize(tmp_path / "fan.pth") < 10_000
    with pytest.raises(ClassifierError, match="more dict entries than the file can hold"):
        load_pth(tmp_path / "fan.pth")


def test_deep_nesting_is_one_line(tmp_path):
    depth = 100_000  # built opcode by opcode: the pickler itself would recurse too deeply
    deep = b"\x80\x02" + b"}X\x01\x00\x00\x00a" * depth + b"}" + b"s" * depth + b"."
    _zip_of_pickle(tmp_path / "deep.pth", deep)
    with pytest.raises(ClassifierError, match="dicts nested deeper than 64"):
        load_pth(tmp_path / "deep.pth")


def test_a_huge_memo_index_is_refused_before_unpickling(tmp_path):
    # CPython's unpickler sizes its memo by the largest index: this 11-byte pickle takes 16 GiB.
    _zip_of_pickle(tmp_path / "memo.pth", b"\x80\x02Nr\xff\xff\xff\x3f.")
    with pytest.raises(ClassifierError, match="memo index 1073741823 out of order"):
        load_pth(tmp_path / "memo.pth")


def test_fuzzed_files_load_the_same_or_fail_in_one_line_within_time_and_memory(tmp_path):
    """500 mutants of a small .pth and 20 of the shipped EfficientNet-Lite0 weights, loaded in a
    process whose address space is capped at 1 GiB over its start (tests/pth_fuzz.py)."""
    state, storages, _ = _example()
    write_zip(tmp_path / "small.pth", state, storages)
    from jaxfool.models.efficientnet_weights import weights_wheel

    lite0 = weights_wheel("lite0")[0]
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "pth_fuzz.py"), str(tmp_path / "small.pth"),
                           lite0, "0", "500", "20"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 520 and {r["file"] for r in rows} == {"small.pth", os.path.basename(lite0)}
    for r in rows:
        assert r["seconds"] < 5 and r["peak_bytes"] < 1 << 30, r
        assert r["outcome"] in ("same", "loaded", "error"), r
        if r["outcome"] == "error":
            assert "\n" not in r["message"] and "MemoryError" not in r["message"], r
            assert r["message"].startswith(("cannot read ", "refusing to load ")) or r["message"].endswith("holds no tensors"), r
        if r["file"] == "small.pth" and r["kind"].startswith("file-"):
            assert r["outcome"] != "loaded", r  # the zip's checksums catch every changed byte that matters
    outcomes = {r["outcome"] for r in rows}
    assert {"same", "error"} <= outcomes  # the mutations reach both harmless and harmful bytes
