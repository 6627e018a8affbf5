"""Run checkpoints with orbax: the engine state (arrays) plus host bookkeeping (JSON).

Saves are synchronous and atomic (orbax writes a temporary directory and renames it), so a run
killed at any moment leaves its last complete checkpoint intact; the newest two are kept. Each
checkpoint carries a SHA-256 of its arrays and host data, checked on restore: a checkpoint that
fails to read or to verify (truncated, bytes flipped, metadata mangled) is reported in one line
and the one before it is used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
from typing import Any

import jax
import numpy as np

from jaxfool.errors import CheckpointError

CHECKSUM = "sha256"  # key of the checksum in the host data


def _manager(directory: str, create: bool = True):
    import orbax.checkpoint as ocp  # imported on first use: it is slow to import

    # A save that failed (disk full) leaves a temporary directory: the next save removes it.
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=create)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _host_arrays(tree: Any) -> list[np.ndarray]:
    """Every leaf as a complete numpy array, on every process (a collective with several)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    leaves = jax.tree.leaves(tree)
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x) for x in leaves]


def checksum(state: Any, host: dict) -> str:
    """SHA-256 over the state's arrays (shape, dtype, bytes) and the host data (without its
    checksum)."""
    digest = hashlib.sha256()
    for x in _host_arrays(state):
        digest.update(f"{x.shape}{x.dtype}".encode())
        digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(json.dumps({k: v for k, v in host.items() if k != CHECKSUM}, sort_keys=True).encode())
    return digest.hexdigest()


def save_checkpoint(directory: str, step: int, state: Any, host: dict) -> None:
    """Writes checkpoint ``step`` of ``state`` (a pytree of arrays) and ``host`` (JSON-able),
    with their checksum."""
    import orbax.checkpoint as ocp

    host = {**host, CHECKSUM: checksum(state, host)}
    manager = _manager(directory)
    if step in manager.all_steps():
        return
    _quiet_failed_saves()
    try:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)))
        manager.wait_until_finished()
    except Exception as e:
        # tensorstore reports a full disk as ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']"):
        # an OSError again, for the caller to report in one line (the temporary directory is
        # never renamed into a checkpoint, so the previous one stays the newest).
        code = re.search(r"os_error_code='(\d+)'", str(e))
        if isinstance(e, OSError) or not code:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), f"checkpoint {step} in {directory}") from None
    finally:
        manager.close()


class _NotFromOrbaxWriters(logging.Filter):
    """Drops log records of an exception raised inside orbax's checkpoint code (or naming its
    temporary directory): a failed save, which ``save_checkpoint`` raises to its caller, who
    reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if ".orbax-checkpoint-tmp" in record.getMessage():
            return False
        tb = record.exc_info[2] if record.exc_info else None
        while tb is not None:
            if _ORBAX in tb.tb_frame.f_code.co_filename:
                return False
            tb = tb.tb_next
        return True


_ORBAX = os.sep + os.path.join("orbax", "checkpoint") + os.sep


@functools.cache
def _quiet_failed_saves() -> None:
    """Keeps a failed save (disk full) to the one line its caller prints. The failure reaches the
    caller while the save's other writers are still failing, and they go on reporting it for a
    while, up to interpreter exit: each writer thread logs a traceback (absl), asyncio logs the
    gathered futures nobody read, and tensorstore's callbacks hit orbax's closed event loop
    (unraisable). Installed once per process (cached); everything else is still printed."""
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_NotFromOrbaxWriters())
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook


def all_steps(directory: str) -> list[int]:
    """Complete checkpoints' steps, oldest first ([] if none or unreadable)."""
    if not os.path.isdir(directory):
        return []
    try:
        manager = _manager(directory, create=False)
        steps = sorted(manager.all_steps())
        manager.close()
    except Exception:  # a mangled directory: nothing usable here
        return []
    return steps


def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint's step, or ``None``."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def _restore(directory: str, step: int, like: Any) -> tuple[Any, dict]:
    import orbax.checkpoint as ocp

    manager = _manager(directory, create=False)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore())
        )
    finally:
        manager.close()
    state, host = restored["state"], restored["host"]
    if not isinstance(host, dict) or not {"generation", "reached"} <= set(host):
        raise CheckpointError("its host data is malformed")
    if CHECKSUM in host and host[CHECKSUM] != checksum(state, host):  # (checkpoints of older versions have none)
        raise CheckpointError("its checksum does not match its contents")
    return state, host


def restore_checkpoint(directory: str, like: Any) -> tuple[int, Any, dict]:
    """Restores the newest checkpoint that reads and verifies; ``like`` gives the state's
    structure, shapes, dtypes and shardings. A bad one is reported in one line on stderr
    and the one before it is tried.

    Returns:
      ``(step, state, host)``.
    """
    steps = all_steps(directory)
    if not steps:
        raise CheckpointError(f"no complete checkpoint in {directory}")
    problems = []
    for step in reversed(steps):
        try:
            state, host = _restore(directory, step, like)
        except Exception as e:  # any failure to read or verify: try the older checkpoint
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problems.append(f"checkpoint {step}: {reason}")
            if jax.process_index() == 0:
                print(f"warning: checkpoint {step} in {directory} is unusable ({reason[:200]}); trying an older one",
                      file=sys.stderr)
            continue
        return step, state, host
    raise CheckpointError(f"no usable checkpoint in {directory} ({'; '.join(p[:120] for p in problems)}); "
                          "start afresh with a new --out")
