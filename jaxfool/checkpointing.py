"""Run checkpoints with orbax: the engine state (arrays) plus host bookkeeping (JSON).

Saves are synchronous and atomic (orbax writes a temporary directory and renames it), so a run
killed at any moment leaves its last complete checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxfool.errors import CheckpointError


def _manager(directory: str, create: bool = True):
    import orbax.checkpoint as ocp  # imported on first use: it is slow to import

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_checkpoint(directory: str, step: int, state: Any, host: dict) -> None:
    """Writes checkpoint ``step`` of ``state`` (a pytree of arrays) and ``host`` (JSON-able)."""
    import orbax.checkpoint as ocp

    manager = _manager(directory)
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)))
    manager.wait_until_finished()
    manager.close()


def latest_step(directory: str) -> int | None:
    """The newest complete checkpoint's step, or ``None``."""
    if not os.path.isdir(directory):
        return None
    manager = _manager(directory, create=False)
    step = manager.latest_step()
    manager.close()
    return step


def restore_checkpoint(directory: str, like: Any) -> tuple[int, Any, dict]:
    """Restores the newest checkpoint; ``like`` gives the state's structure, shapes and dtypes.

    Returns:
      ``(step, state, host)``.
    """
    import orbax.checkpoint as ocp

    step = latest_step(directory)
    if step is None:
        raise CheckpointError(f"no complete checkpoint in {directory}")
    manager = _manager(directory, create=False)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore())
        )
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CheckpointError(f"checkpoint {step} in {directory} does not match this run: {e}") from None
    finally:
        manager.close()
    return step, restored["state"], restored["host"]
