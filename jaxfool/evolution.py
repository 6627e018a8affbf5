"""The in-memory run core: a stack of lanes driven through compiled chunks to a :class:`Result`.

    lanes = Lanes.of([build_experiment(config)])   # the K seeds of one config: K lanes
    result = evolve(lanes)                         # no files written
    result.fitness                                 # float32 [L, C], best log-probability per cell
    result.evaluations                             # int64 [L], generation 0 included

A *lane* is one (config, seed): its own key, state and row of traced ``Params``. The lanes of
one :class:`Lanes` share one engine, so they run vmapped in one compiled program: the seeds of
a run, or every (point, seed) of a sweep group whose points differ only in traced fields. Lanes
stop independently (a lane whose cells are all fooled, or that reached its generation cap, is
frozen and stops counting evaluations); :func:`evolve` returns when every lane is done.

Observers (metrics logs, checkpoints, pictures, progress bars: :mod:`jaxfool.writers`) are
called between chunks with the result so far; they read it and never change it.

Evaluations per second are defined once, here: images scored by the chunks after the first
one of this session, over the wall time they took (the first chunk pays for compilation).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import jax
import numpy as np

from jaxfool.distributed import Plan
from jaxfool.errors import ConfigError, DeviceMemoryError
from jaxfool.experiment import Experiment
from jaxfool.map_elites import MapElites, Params, State, init_seeds, run_generations, seed_keys, stack_lanes

REPORTED = (0.99, 0.9999)  # thresholds every result tracks besides each config's own


@dataclasses.dataclass(frozen=True, eq=False)
class Lanes:
    """Experiments that share one engine, one lane per (experiment, seed), experiment-major.

    Attributes:
      experiments: the points; each contributes ``config.seeds`` lanes.
    """

    experiments: tuple[Experiment, ...]

    @classmethod
    def of(cls, experiments: list[Experiment] | tuple[Experiment, ...]) -> Lanes:
        """Checks that the experiments can share a program (same engine, same chunk length)."""
        experiments = tuple(experiments)
        if not experiments:
            raise ConfigError("no experiments to run")
        first = experiments[0]
        for exp in experiments[1:]:
            if exp.engine is not first.engine or exp.config.chunk != first.config.chunk:
                raise ConfigError("lanes of one program must differ only in traced fields and seeds")
        return cls(experiments)

    @property
    def engine(self) -> MapElites:
        return self.experiments[0].engine

    @property
    def chunk(self) -> int:
        return self.experiments[0].config.chunk

    @functools.cached_property
    def point(self) -> np.ndarray:
        """int ``[L]``: the experiment of each lane."""
        return np.repeat(np.arange(len(self.experiments)), [e.config.seeds for e in self.experiments])

    @functools.cached_property
    def seeds(self) -> np.ndarray:
        """int ``[L]``: the seed of each lane."""
        return np.concatenate([np.asarray(e.seeds) for e in self.experiments])

    def __len__(self) -> int:
        return len(self.point)

    def lanes_of(self, i: int) -> slice:
        """The (contiguous) lanes of experiment ``i``."""
        start = sum(e.config.seeds for e in self.experiments[:i])
        return slice(start, start + self.experiments[i].config.seeds)

    def params(self) -> Params:
        """Per-lane traced values stacked ``[L]``, the classifier's weights shared."""
        rows = [self.experiments[p].params for p in self.point]
        return stack_lanes(self.experiments[0].params.model, rows)

    def keys(self) -> jax.Array:
        return seed_keys([int(s) for s in self.seeds])

    @functools.cached_property
    def stop(self) -> np.ndarray:
        """float32 ``[L]``: the fitness at which each lane stops (+inf: never)."""
        return np.asarray([self.experiments[p].params.stop for p in self.point], np.float32)

    @functools.cached_property
    def caps(self) -> np.ndarray:
        """int ``[L]``: each lane's generation cap."""
        return np.asarray([self.experiments[p].params.max_generation for p in self.point], np.int64)

    def thresholds(self) -> tuple[float, ...]:
        return tuple(sorted(set(REPORTED) | {e.config.threshold for e in self.experiments}))


@dataclasses.dataclass
class Result:
    """Where the lanes stand (between chunks, and at the end).

    Attributes:
      lanes: what runs.
      state: the engine state, leaves ``[L, ...]`` (device arrays).
      generation: loop generations done (lanes that stopped early have smaller counters).
      generations: int ``[L]``: each lane's generation counter.
      fitness: float32 ``[L, C]``: best log-probability per cell (-inf: empty).
      reached: per threshold, int ``[L, C]``: generation each cell first reached it (-1: not yet).
      elapsed: wall seconds of this run, earlier sessions (before a resume) included.
      timed_evaluations, timed_seconds: evaluations and wall seconds of this session's chunks
        after the first (which pays for compilation): :attr:`evals_per_s` divides them.
      stopped: why the loop ended: "fooled", "generation cap", "time limit", "chunk limit",
        "interrupted" ("" while running).
    """

    lanes: Lanes
    state: State
    generation: int
    generations: np.ndarray
    fitness: np.ndarray
    reached: dict[float, np.ndarray]
    elapsed: float = 0.0
    timed_evaluations: int = 0
    timed_seconds: float = 0.0
    stopped: str = ""
    plan: Plan | None = None
    _host: dict = dataclasses.field(default_factory=dict, repr=False)

    def archive(self) -> Any:
        """The archive as numpy ``[L, C, ...]``, complete on every process."""
        if self._host.get("archive", (None,))[0] is not self.state:
            self._host["archive"] = (self.state, _fetch(self.plan, self.state.archive))
        return self._host["archive"][1]

    def images(self) -> np.ndarray:
        """The elites rendered, float32 ``[L, C, H, W, ch]`` (exactly what was scored)."""
        if self._host.get("images", (None,))[0] is not self.state:
            rendered = render_elites(self.lanes.engine.encoding, self.state.archive.genomes)
            self._host["images"] = (self.state, np.asarray(_fetch(self.plan, rendered)))
        return self._host["images"][1]

    @property
    def evals_per_s(self) -> float | None:
        """Evaluations per second after compilation, this session (``None`` until two chunks
        have run): the one definition every summary, bar and table reports."""
        return self.timed_evaluations / self.timed_seconds if self.timed_evaluations and self.timed_seconds > 0 else None

    @property
    def evaluations(self) -> np.ndarray:
        """int64 ``[L]``: images each lane scored, generation 0 included."""
        return self.lanes.engine.evaluations(self.generations)

    @property
    def done(self) -> np.ndarray:
        """bool ``[L]``: lanes that are frozen (fooled or at their cap)."""
        return self.fooled | (self.generations >= self.lanes.caps)

    @property
    def fooled(self) -> np.ndarray:
        """bool ``[L]``: lanes stopped because every cell reached their stop fitness."""
        return (self.fitness >= self.lanes.stop[:, None]).all(-1)

    def host(self) -> dict:
        """The host bookkeeping a checkpoint keeps beside the state (JSON)."""
        return {
            "generation": self.generation,
            "reached": {repr(t): r.tolist() for t, r in self.reached.items()},
            "elapsed": self.elapsed,
        }


class Observer(Protocol):
    """Something that watches a run: it reads the result and writes elsewhere."""

    def start(self, result: Result) -> None: ...

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        """After each chunk; ``generations`` int ``[n, L]`` and ``fitness`` float32 ``[n, L, C]``
        per generation of the chunk."""

    def end(self, result: Result) -> None: ...


class History:
    """An in-memory observer keeping every generation's ``(generations [L], fitness [L, C])``
    (for :func:`jaxfool.fool` and anything else that wants the curves without files)."""

    def __init__(self):
        self.steps: list[int] = []
        self.generations: list[np.ndarray] = []
        self.fitness: list[np.ndarray] = []

    def start(self, result: Result) -> None:
        if result.generation == 0:
            self._add(0, result.generations, result.fitness)

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        first = result.generation - generations.shape[0]
        for i in range(generations.shape[0]):
            self._add(first + i + 1, generations[i], fitness[i])

    def end(self, result: Result) -> None:
        pass

    def _add(self, step: int, generations: np.ndarray, fitness: np.ndarray) -> None:
        self.steps.append(step)
        self.generations.append(np.asarray(generations))
        self.fitness.append(np.asarray(fitness))


def _update_reached(reached: dict[float, np.ndarray], fitness: np.ndarray, generations: np.ndarray) -> None:
    """fitness ``[n, L, C]``, generations ``[n, L]``: record first crossings."""
    for t, r in reached.items():
        above = fitness >= math.log(t)  # [n, L, C]
        first = np.where(above.any(0), generations[above.argmax(0), np.arange(above.shape[1])[:, None]], -1)
        reached[t] = np.where(r >= 0, r, first)


def _fetch(plan: Plan | None, tree: Any) -> Any:
    return plan.fetch(tree) if plan is not None else jax.tree.map(np.asarray, tree)


@functools.partial(jax.jit, static_argnums=0)
def render_elites(encoding: Any, genomes: Any) -> jax.Array:
    """``genomes`` leaves ``[L, C, ...]`` -> float32 images ``[L, C, H, W, ch]``."""
    return jax.vmap(encoding.render)(genomes)


@functools.lru_cache(maxsize=64)
def _with_batch_sharding(engine: MapElites, sharding: Any) -> MapElites:
    """One engine object per (engine, layout), so a layout compiles once per process."""
    return dataclasses.replace(engine, batch_sharding=sharding)


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()  # (engine, length, input shapes) -> compiled chunk


def clear_caches() -> None:
    """Forgets every cached engine and compiled chunk program (benchmarks that time
    compilation start from here)."""
    from jaxfool import experiment

    experiment._STATIC_CACHE.clear()
    _PROGRAMS.clear()
    _with_batch_sharding.cache_clear()


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves)


def prepare(lanes: Lanes, plan: Plan | None) -> tuple[State, Params, jax.Array, Any]:
    """Generation 0 and the chunk program: ``(state, params, keys, chunk_fn)``.

    On one device the chunk program compiles on a second thread while generation 0 compiles
    and runs here (XLA compiles outside the GIL, and short runs are mostly compilation), and is
    kept for the next run with the same engine and shapes. With a plan, every array is placed
    on the mesh and compilation happens at the first call.
    """
    engine, length = lanes.engine, lanes.chunk
    params, keys = lanes.params(), lanes.keys()
    if plan is None:
        like = jax.eval_shape(functools.partial(init_seeds, engine), params, keys)
        key = (engine, length, _signature(params), _signature(keys))
        if key in _PROGRAMS:
            _PROGRAMS.move_to_end(key)
            return init_seeds(engine, params, keys), params, keys, _PROGRAMS[key]
        with ThreadPoolExecutor(max_workers=1) as pool:
            compiling = pool.submit(lambda: run_generations.lower(engine, params, like, keys, length).compile())
            state = init_seeds(engine, params, keys)
            _PROGRAMS[key] = program = compiling.result()
        while len(_PROGRAMS) > 32:  # bounded, as the engine cache
            _PROGRAMS.popitem(last=False)
        return state, params, keys, program

    if plan.batch_sharding is not None:
        engine = _with_batch_sharding(engine, plan.batch_sharding)
    mesh = plan.lane_mesh
    params = plan.place(params.replace(model=None)).replace(model=plan.place(params.model, plan.replicated))
    keys = plan.place(keys)
    state = init_seeds(engine, params, keys, mesh)

    def chunk_fn(params, state, keys):
        return run_generations(engine, params, state, keys, length, mesh)

    return state, params, keys, chunk_fn


@contextlib.contextmanager
def _ctrl_c_between_chunks():
    """While running chunks, the first Ctrl-C (SIGINT) only asks the loop to stop after the
    current chunk, so it is never lost inside a finalizer, a background checkpoint or XLA (which
    would swallow a KeyboardInterrupt); a second one interrupts at once. Yields
    ``interrupted() -> bool``. Off the main thread, or where SIGINT is ignored, nothing changes."""
    asked = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    previous = signal.getsignal(signal.SIGINT)
    # Signals are caught on the main thread only; a process told to ignore Ctrl-C keeps ignoring it.
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield lambda: False
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def _out_of_memory_named(lanes: Lanes):
    """Turns the device's out-of-memory error (an XLA dump) into one line naming the batch and
    the flags that lower it. Nothing is written on this path, so the last checkpoint stays."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        raise DeviceMemoryError(
            f"out of device memory running {len(lanes)} lane(s) x batch {lanes.engine.batch_size}: lower --batch or "
            "--seeds (for big images also --score-chunk, and --render-memory for CPPNs); the last checkpoint is "
            "intact, so --resume continues from it"
        ) from None


def evolve(
    lanes: Lanes,
    observers: tuple[Observer, ...] | list[Observer] = (),
    plan: Plan | None = None,
    resume: Any = None,
    time_limit: float | None = None,
    max_chunks: int | None = None,
) -> Result:
    """Runs every lane until it is fooled or at its generation cap.

    Args:
      lanes: what to run (:meth:`Lanes.of`).
      observers: called with the result at the start, after each chunk and at the end
        (also when interrupted by Ctrl-C, with ``stopped="interrupted"``, before re-raising).
      plan: how to lay the lanes out over several devices (:func:`jaxfool.distributed.make_plan`).
      resume: ``resume(state) -> (state, host) | None``: given generation 0's state, a restored
        checkpoint of the same structure and its :meth:`Result.host` data, or ``None`` to start
        afresh.
      time_limit: stop after the chunk that passes this many seconds of this session (at
        least one chunk runs).
      max_chunks: stop after this many chunks (tests of interruption).

    Returns:
      the final :class:`Result`.
    """
    session = time.perf_counter()
    with _out_of_memory_named(lanes):
        state, params, keys, chunk_fn = prepare(lanes, plan)
    restored = resume(state) if resume is not None else None
    num_cells = lanes.engine.num_cells
    if restored is not None:
        state, host = restored
        reached = {float(t): np.asarray(r, np.int64) for t, r in host["reached"].items()}
        generation, elapsed = int(host["generation"]), float(host["elapsed"])
    else:
        reached = {t: np.full((len(lanes), num_cells), -1, np.int64) for t in lanes.thresholds()}
        generation, elapsed = 0, 0.0
    generations, fitness = _fetch(plan, (state.generation, state.archive.fitness))
    if restored is None:
        _update_reached(reached, fitness[None], np.zeros((1, len(lanes)), np.int64))
    result = Result(lanes, state, generation, np.asarray(generations, np.int64), fitness, reached, elapsed, plan=plan)
    for o in observers:
        o.start(result)

    def clock() -> float:
        return elapsed + time.perf_counter() - session

    timed_from, chunks = None, 0
    try:
        with _ctrl_c_between_chunks() as interrupted:
            while not result.done.all():
                if interrupted():
                    raise KeyboardInterrupt
                if max_chunks is not None and chunks >= max_chunks:
                    result.stopped = "chunk limit"
                    break
                before = result.evaluations.sum()
                with _out_of_memory_named(lanes):
                    state, metrics = chunk_fn(params, state, keys)
                gens, fit = _fetch(plan, (metrics.generation, metrics.fitness))  # [n, L], [n, L, C]
                chunks += 1
                result.state, result.generations, result.fitness = state, np.asarray(gens[-1], np.int64), fit[-1]
                result.generation += gens.shape[0]
                _update_reached(result.reached, fit, gens)
                if timed_from is None:  # the first chunk pays for compilation
                    timed_from = time.perf_counter()
                else:
                    result.timed_evaluations += int(result.evaluations.sum() - before)
                    result.timed_seconds = time.perf_counter() - timed_from
                result.elapsed = clock()
                for o in observers:
                    o.chunk(result, gens, fit)
                # Checked after a chunk, so every session makes progress however slow compiling is.
                if time_limit is not None and time.perf_counter() - session >= time_limit and not result.done.all():
                    result.stopped = "time limit"
                    break
            else:
                result.stopped = "fooled" if result.fooled.all() else "generation cap"
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        result.elapsed = clock()
        for o in observers:
            o.end(result)
        raise
    result.elapsed = clock()
    for o in observers:
        o.end(result)
    return result
