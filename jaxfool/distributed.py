"""Scaling out with JAX's own machinery: one device mesh over every device of every process.

A run stays one jitted program; only where its arrays live changes:

* ``lanes``: the L independent lanes (the seeds of a run, the points x seeds of a sweep) are
  split over the devices: the leading axis of the state is sharded and the chunk runs under
  ``shard_map``, each device stepping its own lanes, so no device talks to another during a
  chunk and none repeats another's work.
* ``batch``: the archive is replicated and each generation's offspring are split over the
  devices (a sharding constraint in the step); XLA inserts the collectives.

Random numbers depend only on keys and array positions (threefry is partitionable; the mutation
hash is counter-based), and the recombination sums are exact, so a run gives the same archive
on 1 device, 8 devices or 2 processes.

Multi-host: :func:`initialize` calls ``jax.distributed.initialize`` (SLURM, Open MPI and TPU
pods are detected; or pass the coordinator explicitly) with gloo collectives on CPU. Every
process runs the same program; only process 0 writes files.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxfool.errors import ConfigError, JaxfoolError

AXIS = "devices"
MODES = ("auto", "none", "lanes", "batch")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Joins this process to a multi-process run (before any other JAX call).

    With no arguments, JAX detects the cluster (SLURM, Open MPI, TPU pod, Cloud TPU); give
    all three to start processes by hand, e.g. on one machine::

        python scripts/run.py --distributed --coordinator 127.0.0.1:8476 --num-processes 2 --process-id 0
    """
    # CPU processes need a collectives implementation to exchange data; GPUs and TPUs have theirs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = [coordinator, num_processes, process_id]
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise ConfigError("give --coordinator, --num-processes and --process-id together (or none, to auto-detect)")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def is_main_process() -> bool:
    """Only process 0 writes pictures, metrics and logs."""
    return jax.process_index() == 0


def decided_by_main(check: Callable[[], None]) -> None:
    """Runs ``check`` (which may look at and clear the output directory) on process 0 only; its
    one-line error (:class:`JaxfoolError`), if any, is raised on every process, and no process
    goes on (to create its folders) before process 0 is done, so the others can neither race
    the check nor hang in a collective after process 0 has stopped."""
    error: JaxfoolError | None = None
    if is_main_process():
        try:
            check()
        except JaxfoolError as e:
            error = e
    message = str(error) if error else ""
    if jax.process_count() > 1:
        data = np.zeros(_MESSAGE_BYTES, np.uint8)
        encoded = message.encode()[:_MESSAGE_BYTES]
        data[: len(encoded)] = np.frombuffer(encoded, np.uint8)
        data = np.asarray(multihost_utils.broadcast_one_to_all(data))  # also a barrier
        message = bytes(data).rstrip(b"\0").decode(errors="replace")
    if error:
        raise error
    if message:
        raise ConfigError(message)


_MESSAGE_BYTES = 2048


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a run's arrays are laid out on the mesh.

    Attributes:
      mesh: one axis, :data:`AXIS`, over ``jax.devices()`` (all processes).
      mode: "lanes" or "batch".
    """

    mesh: Mesh
    mode: str

    @property
    def lane_mesh(self) -> Mesh | None:
        """The mesh a chunk is ``shard_map`` ped over in "lanes" mode (else ``None``)."""
        return self.mesh if self.mode == "lanes" else None

    @property
    def state_sharding(self) -> NamedSharding:
        """Leading (lane) axis split over devices, or replicated."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS) if self.mode == "lanes" else PartitionSpec())

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding | None:
        """For the engine's offspring (axis 0 = batch) in "batch" mode."""
        return NamedSharding(self.mesh, PartitionSpec(AXIS)) if self.mode == "batch" else None

    def place(self, tree: Any, sharding: NamedSharding | None = None) -> Any:
        """Host values (the same on every process) -> global arrays with ``sharding``."""
        sharding = sharding or self.state_sharding

        def leaf(x):
            typed = jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)
            data = np.asarray(jax.device_get(jax.random.key_data(x) if typed else x))
            spec = sharding if data.ndim else self.replicated
            out = jax.make_array_from_callback(data.shape, spec, lambda index: data[index])
            return jax.random.wrap_key_data(out) if typed else out

        return jax.tree.map(leaf, tree)

    def fetch(self, tree: Any) -> Any:
        """Global arrays -> numpy, complete on every process."""
        if jax.process_count() == 1:
            return jax.tree.map(np.asarray, tree)
        return multihost_utils.process_allgather(tree, tiled=True)


def make_plan(mode: str, num_lanes: int, batch: int) -> Plan | None:
    """The layout for ``mode`` on all devices; ``None`` for one device or ``mode="none"``.

    ``auto`` splits lanes when they divide evenly over the devices, else the batch.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown sharding {mode!r}; choose one of {', '.join(MODES)}")
    devices = jax.devices()
    n = len(devices)
    if mode == "none" or n == 1:
        return None
    if mode == "auto":
        mode = "lanes" if num_lanes % n == 0 else "batch"
    if mode == "lanes" and num_lanes % n:
        raise ConfigError(
            f"{num_lanes} lanes (points x seeds) do not split evenly over {n} devices; "
            f"use a multiple of {n} or --shard batch"
        )
    return Plan(Mesh(np.asarray(devices), (AXIS,)), mode)
