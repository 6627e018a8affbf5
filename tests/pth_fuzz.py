"""Fuzzes the .pth reader in a process of its own, with its address space capped.

    python tests/pth_fuzz.py SMALL.pth LITE0.pth SEED SMALL_CASES LITE0_CASES

Mutates each file (bit flips, byte swaps and truncations of the whole file -- of a legacy file,
flips and swaps only within its pickles, as its storage bytes carry no checksum; bit flips, opcode
swaps, opcode replacements and truncations of its object pickle, written back as a valid file
so that the unpickler, not a zip checksum, meets them) and loads every mutant. Prints one JSON
line per case: ``{"case", "file", "kind", "outcome": "same" | "loaded" | "error", "seconds",
"message", "peak_bytes"}`` -- "same" when every array equals the original's, "loaded" when a
pickle-level mutant is a different but well-formed state dict. The address space is capped at
what the process had plus 1 GiB, so a mutant that tried to allocate more would end as a
``MemoryError``, which the test refuses to count as a one-line error.
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import random
import resource
import sys
import tempfile
import time
import tracemalloc
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxfool.errors import ClassifierError  # noqa: E402
from jaxfool.models.torch_pth import load_pth  # noqa: E402

GIB = 1 << 30


def _opcode_positions(data: bytes, start: int = 0) -> tuple[list[int], int]:
    """Offsets of the opcodes of the pickle at ``start`` and the offset just past its STOP."""
    buf = io.BytesIO(data)
    buf.seek(start)
    positions = [pos for _op, _arg, pos in pickletools.genops(buf)]
    return positions, buf.tell()


def _object_pickle(data: bytes) -> tuple[int, int]:
    """(start, end) of the pickle holding the state dict in a legacy file."""
    start = 0
    for _ in range(3):  # magic number, protocol version, sys info
        start = _opcode_positions(data, start)[1]
    return start, _opcode_positions(data, start)[1]


def _mutate_bytes(data: bytes, rng: random.Random, lo: int, hi: int, positions: list[int] | None) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "swap"] if positions is None else ["flip", "truncate", "opswap", "opcode"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(lo, hi)
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        cut = rng.randrange(lo, hi)
        return bytes(b[:cut]) + (bytes(data[hi:]) if positions is not None else b""), kind
    elif kind == "swap":
        i, j = rng.randrange(lo, hi), rng.randrange(lo, hi)
        b[i], b[j] = b[j], b[i]
    elif kind == "opswap":
        i, j = rng.choice(positions), rng.choice(positions)
        b[i], b[j] = b[j], b[i]
    else:  # any opcode byte in place of another
        b[rng.choice(positions)] = rng.choice(list({op.code.encode("latin-1")[0] for op in pickletools.opcodes}))
    return bytes(b), kind


def _zip_with_pickle(original: str, pickle_bytes: bytes, out: str) -> None:
    with zipfile.ZipFile(original) as z, zipfile.ZipFile(out, "w") as w:
        for info in z.infolist():
            w.writestr(info, pickle_bytes if info.filename.endswith("/data.pkl") else z.read(info))


def mutants(path: str, count: int, rng: random.Random, workdir: str):
    """Yields (kind, mutant path) ``count`` times: half whole-file, half pickle-level."""
    data = open(path, "rb").read()
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        with zipfile.ZipFile(path) as z:
            pkl = z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
        start, end = 0, len(pkl)
    else:
        pkl = data
        start, end = _object_pickle(data)
    positions = _opcode_positions(pkl, start)[0]
    out = os.path.join(workdir, "mutant.pth")
    for n in range(count):
        if n % 2 == 0:
            mutated, kind = _mutate_bytes(data, rng, 0, len(data) if is_zip else end, None)
            if kind == "truncate" and not is_zip:
                mutated = data[: rng.randrange(len(data))]
            with open(out, "wb") as f:
                f.write(mutated)
            yield "file-" + kind, out
        else:
            mutated, kind = _mutate_bytes(pkl, rng, start, end, positions)
            if is_zip:
                _zip_with_pickle(path, mutated, out)
            else:
                with open(out, "wb") as f:
                    f.write(mutated)
            yield "pickle-" + kind, out


def main() -> None:
    small, lite0, seed, small_cases, lite0_cases = sys.argv[1:6]
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + GIB, vm + GIB))
    rng = random.Random(int(seed))
    tracemalloc.start()
    case = 0
    with tempfile.TemporaryDirectory() as workdir:
        for path, count in ((small, int(small_cases)), (lite0, int(lite0_cases))):
            if not count:
                continue
            original = load_pth(path)
            for kind, mutant in mutants(path, count, rng, workdir):
                tracemalloc.reset_peak()
                t = time.perf_counter()
                message = ""
                try:
                    loaded = load_pth(mutant)
                    same = list(loaded) == list(original) and all(
                        loaded[k].dtype == original[k].dtype and np.array_equal(loaded[k], original[k], equal_nan=True) for k in original
                    )
                    well_formed = all(isinstance(v, np.ndarray) for v in loaded.values())
                    outcome = "same" if same else ("loaded" if well_formed else "bad")
                except ClassifierError as e:
                    outcome, message = "error", str(e)
                except BaseException as e:  # noqa: BLE001 -- reported, and the test fails on it
                    outcome, message = "crash", f"{type(e).__name__}: {e}"
                seconds = time.perf_counter() - t
                peak = tracemalloc.get_traced_memory()[1]
                print(json.dumps({"case": case, "file": os.path.basename(path), "kind": kind, "outcome": outcome,
                                  "seconds": seconds, "message": message[:300], "peak_bytes": peak}), flush=True)
                case += 1


if __name__ == "__main__":
    main()
