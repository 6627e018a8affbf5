"""The host side of a run: compiled chunks, progress, metrics, checkpoints, resume, outputs.

A run directory holds::

    config.json      the RunConfig (a resumed run reads it back)
    metrics.jsonl    one line per generation: per seed, best log-confidence per cell
    checkpoints/     orbax checkpoints of the engine state (newest two)
    elites.png       the elites, labelled with class and confidence
    elites/          one exact PNG per cell: <class index>_<class name>.png
                     (elites/seed<s>/... when several seeds run)
    progress.png     1 - best confidence per class over generations, log scale
    summary.json     config, versions, device, wall time, evals/s, per-seed results
    report.html      all of the above on one self-contained page
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

from jaxfool import checkpointing, pictures
from jaxfool.regularity import regularity
from jaxfool.report import write_report
from jaxfool.config import RunConfig
from jaxfool.distributed import Plan, is_main_process, make_plan
from jaxfool.errors import CheckpointError, ConfigError
from jaxfool.experiment import Experiment, build_experiment
from jaxfool.map_elites import State, init_seeds, run_generations, seed_keys

REPORTED = (0.99, 0.9999)  # thresholds every summary reports
FULL_CELLS = 100  # archives up to this size log every cell; bigger ones log quantiles


@dataclasses.dataclass
class Progress:
    """Host bookkeeping that survives a resume.

    Attributes:
      generation: loop generations done (seeds that stopped early have smaller counters).
      reached: per threshold, int ``[K, C]``: generation each cell first reached it (-1: not yet).
      elapsed: wall seconds spent in earlier sessions of this run.
    """

    generation: int
    reached: dict[float, np.ndarray]
    elapsed: float = 0.0

    def to_json(self) -> dict:
        return {
            "generation": self.generation,
            "reached": {repr(t): r.tolist() for t, r in self.reached.items()},
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_json(cls, data: dict) -> Progress:
        reached = {float(t): np.asarray(r, np.int64) for t, r in data["reached"].items()}
        return cls(int(data["generation"]), reached, float(data["elapsed"]))


def _thresholds(config: RunConfig) -> tuple[float, ...]:
    return tuple(sorted(set(REPORTED) | {config.threshold}))


def _update_reached(progress: Progress, fitness: np.ndarray, generations: np.ndarray) -> None:
    """fitness ``[n, K, C]``, generations ``[n, K]``: record first crossings."""
    for t, reached in progress.reached.items():
        above = fitness >= math.log(t)  # [n, K, C]
        first = np.where(above.any(0), generations[above.argmax(0), np.arange(above.shape[1])[:, None]], -1)
        progress.reached[t] = np.where(reached >= 0, reached, first)


def _metrics_line(step: int, exp: Experiment, generations: np.ndarray, fitness: np.ndarray) -> str:
    seeds = []
    for k, seed in enumerate(exp.seeds):
        f = fitness[k]
        entry = {
            "seed": seed,
            "generation": int(generations[k]),
            "evaluations": exp.engine.evaluations(int(generations[k])),
            "fooled_99": int((f >= math.log(0.99)).sum()),
            "fooled_9999": int((f >= math.log(0.9999)).sum()),
        }
        if f.size <= FULL_CELLS:
            entry["log_confidence"] = [float(x) for x in f]
        else:
            entry["log_confidence_quantiles"] = [float(x) for x in np.quantile(f, [0, 0.25, 0.5, 0.75, 1])]
        seeds.append(entry)
    return json.dumps({"generation": step, "seeds": seeds}) + "\n"


def _read_history(path: str, upto: int) -> list[dict]:
    """Complete metrics lines with generation <= ``upto`` (a killed run may leave a torn line)."""
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                if record["generation"] > upto:
                    break
                lines.append(record)
    return lines


def _history_arrays(history: list[dict]) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(generations [T], values [T, K, C or 5], per_cell)`` from metrics records."""
    gens = np.array([h["generation"] for h in history])
    per_cell = "log_confidence" in history[0]["seeds"][0]
    key = "log_confidence" if per_cell else "log_confidence_quantiles"
    values = np.array([[s[key] for s in h["seeds"]] for h in history], np.float64)
    return gens, values, per_cell


def environment() -> dict[str, Any]:
    """Versions and device, for summaries."""
    import flax
    import jaxlib
    import optax

    import jaxfool

    devices = jax.devices()
    return {
        "versions": {
            "jaxfool": jaxfool.__version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "device": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "count": len(devices),
            "processes": jax.process_count(),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
        },
    }


def _render_elites(exp: Experiment):
    """A jitted ``genomes [K, C, ...] -> images [K, C, H, W, ch]``."""
    return jax.jit(jax.vmap(exp.encoding.render))


def _fetch(plan: Plan | None, tree: Any) -> Any:
    return plan.fetch(tree) if plan is not None else jax.tree.map(np.asarray, tree)


def write_outputs(
    exp: Experiment,
    state: State,
    progress: Progress,
    out_dir: str,
    wall: float,
    evals_per_s: float | None,
    render=None,
    plan: Plan | None = None,
) -> dict:
    """Writes the pictures and ``summary.json`` for the current state; returns the summary.

    ``render`` is a compiled :func:`_render_elites` (built here when not given). Every process
    computes the summary; only process 0 writes files.
    """
    archive = _fetch(plan, state.archive)
    images = _fetch(plan, (render or _render_elites(exp))(state.archive.genomes))  # [K, C, H, W, ch]
    fitness = np.asarray(archive.fitness, np.float64)
    confidence = np.exp(fitness)
    generations = _fetch(plan, state.generation)
    write = is_main_process()

    if write:
        pictures.save_elites(out_dir, images, exp.cells, exp.cell_names, exp.seeds, np.asarray(archive.filled))

    title = f"{exp.classifier.name}, {exp.config.encoding} encoding"
    if not write:
        pass
    elif len(exp.seeds) == 1 or len(exp.cells) <= 20:
        pictures.elites_grid(
            os.path.join(out_dir, "elites.png"), images, confidence, exp.cell_names,
            row_labels=[f"seed {s}" for s in exp.seeds] if len(exp.seeds) > 1 else None, title=title,
        )
    else:
        for k, s in enumerate(exp.seeds):
            pictures.elites_grid(
                os.path.join(out_dir, f"elites-seed{s}.png"), images[k : k + 1], confidence[k : k + 1],
                exp.cell_names, title=f"{title}, seed {s}",
            )

    history = _read_history(os.path.join(out_dir, "metrics.jsonl"), progress.generation) if write else []
    if history:
        gens, values, per_cell = _history_arrays(history)
        pictures.progress_plot(
            os.path.join(out_dir, "progress.png"), gens, values, exp.cell_names if per_cell else None, title=title
        )

    seeds = []
    for k, seed in enumerate(exp.seeds):
        entry = {
            "seed": seed,
            "generations": int(generations[k]),
            "evaluations": exp.engine.evaluations(int(generations[k])),
            "best_confidence": [float(p) for p in confidence[k]],
            "classes_fooled": int((fitness[k] >= math.log(exp.config.threshold)).sum()),
            "regularity": regularity(images[k]),
        }
        for t in _thresholds(exp.config):
            reached = progress.reached[t][k]
            every = int(reached.max()) if (reached >= 0).all() else None
            entry[f"generations_to_{t:g}"] = every
            entry[f"evaluations_to_{t:g}"] = None if every is None else exp.engine.evaluations(every)
        entry["generations_to_threshold_per_class"] = [int(g) for g in progress.reached[exp.config.threshold][k]]
        seeds.append(entry)
    total_evals = sum(s["evaluations"] for s in seeds)
    summary = {
        "config": exp.config.to_dict(),
        "classifier": exp.classifier.name,
        "classes": [{"index": c, "name": exp.classifier.class_names[c]} for c in exp.cells],
        **environment(),
        "wall_time_s": wall,
        "evaluations": total_evals,
        "evals_per_s": evals_per_s,
        "evals_per_s_with_compile": total_evals / wall if wall > 0 else None,
        "all_fooled": all(s["classes_fooled"] == len(exp.cells) for s in seeds),
        "seeds": seeds,
    }
    if write:
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        write_report(out_dir)
    return summary


def _load_run_config(out_dir: str) -> RunConfig:
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{out_dir} is not a run directory (no config.json)")
    with open(path) as f:
        return RunConfig.from_dict(json.load(f))


def resume_config(out_dir: str, **overrides: Any) -> RunConfig:
    """The config of the run in ``out_dir``; only ``generations`` may be changed on resume."""
    config = _load_run_config(out_dir)
    changed = {k: v for k, v in overrides.items() if getattr(config, k) != v}
    if set(changed) - {"generations"}:
        field = sorted(set(changed) - {"generations"})[0]
        raise ConfigError(f"cannot change {field} when resuming (the run used {getattr(config, field)!r})")
    return config.replace(**changed).validate()


def run(
    exp: Experiment | RunConfig,
    out_dir: str,
    resume: bool = False,
    progress_bar: bool = True,
    max_chunks: int | None = None,
    shard: str = "auto",
    time_limit: float | None = None,
) -> dict:
    """Runs (or resumes) MAP-Elites until every seed is fooled or hits the generation cap.

    Args:
      exp: an :class:`Experiment`, or a config to build one from.
      out_dir: the run directory.
      resume: continue from the newest checkpoint in ``out_dir`` (starting afresh if the run
        was killed before its first checkpoint).
      progress_bar: show a tqdm bar on stderr.
      max_chunks: stop after this many chunks (tests of interruption); the run stays resumable.
      time_limit: stop after the chunk that passes this many seconds of this session's wall
        time (checkpoint and outputs written; ``resume`` continues it), as for a cluster job.
      shard: how to lay the run out over several devices (:func:`jaxfool.distributed.make_plan`):
        "auto", "none", "seeds" or "batch". The archive is the same whatever the layout.

    Returns:
      the summary (also written to ``summary.json``).
    """
    exp = exp if isinstance(exp, Experiment) else build_experiment(exp)
    config = exp.config
    plan = make_plan(shard, len(exp.seeds), exp.engine.batch_size)
    if plan is not None and plan.batch_sharding is not None:
        exp = dataclasses.replace(exp, engine=dataclasses.replace(exp.engine, batch_sharding=plan.batch_sharding))
    write = is_main_process()
    os.makedirs(out_dir, exist_ok=True)
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    start = time.perf_counter()

    keys = seed_keys(exp.seeds)
    stop_fitness, cap = exp.stop_fitness, np.int32(config.generations)
    state, keys, params, chunk_fn, render = _prepare(exp, plan, keys, stop_fitness, cap)
    state, progress = _start_or_resume(exp, plan, state, out_dir, resume)

    def finished(s: State) -> bool:
        g, f = _fetch(plan, (s.generation, s.archive.fitness))
        return bool(((g >= config.generations) | (f >= float(stop_fitness)).all(-1)).all())

    def out_of_time() -> bool:
        return time_limit is not None and time.perf_counter() - start >= time_limit

    bar = None
    if progress_bar and write:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.generations, initial=min(progress.generation, config.generations), unit="gen", dynamic_ncols=True)
    loop_start, loop_evals, chunks = None, 0, 0
    last_saved = progress.generation
    try:
        while not finished(state) and (max_chunks is None or chunks < max_chunks) and not out_of_time():
            before = _fetch(plan, state.generation)
            new_state, metrics = chunk_fn(params, state, keys, stop_fitness, cap)
            fitness, gens = _fetch(plan, (metrics.fitness, metrics.generation))  # [n, K, C], [n, K]
            state = new_state
            chunks += 1
            if loop_start is None:  # the first chunk pays for compilation
                loop_start = time.perf_counter()
            else:
                loop_evals += int((gens[-1] - before).sum()) * config.batch
            if write:
                with open(metrics_path, "a") as f:
                    for i in range(gens.shape[0]):
                        if (gens[i] > (gens[i - 1] if i else before)).any():
                            f.write(_metrics_line(progress.generation + i + 1, exp, gens[i], fitness[i]))
            _update_reached(progress, fitness, gens)
            progress.generation += gens.shape[0]
            if config.checkpoint_every and progress.generation - last_saved >= config.checkpoint_every:
                _save(ckpt_dir, state, progress, start)
                last_saved = progress.generation
            if bar is not None:
                fooled = int((fitness[-1] >= math.log(config.threshold)).sum(-1).min())
                rate = loop_evals / (time.perf_counter() - loop_start) if loop_evals else 0.0
                bar.set_postfix_str(f"fooled {fooled}/{len(exp.cells)}  {rate:,.0f} evals/s", refresh=False)
                bar.update(min(progress.generation, config.generations) - bar.n)
    except KeyboardInterrupt:
        _save(ckpt_dir, state, progress, start)
        write_outputs(exp, state, progress, out_dir, progress.elapsed + time.perf_counter() - start, None, render, plan)
        raise
    finally:
        if bar is not None:
            bar.close()
    _save(ckpt_dir, state, progress, start)
    loop_time = time.perf_counter() - loop_start if loop_start else 0.0
    evals_per_s = loop_evals / loop_time if loop_evals and loop_time > 0 else None
    return write_outputs(exp, state, progress, out_dir, progress.elapsed + time.perf_counter() - start, evals_per_s, render, plan)


def _prepare(exp: Experiment, plan: Plan | None, keys, stop_fitness, cap):
    """Generation 0 and the compiled chunk: ``(state, keys, params, chunk_fn, render)``.

    On one device the chunk program compiles on a second thread while generation 0 compiles
    and runs here (XLA compiles outside the GIL, and short runs are mostly compilation). With a
    plan, every array is placed on the mesh and compilation happens at the first call.
    """
    chunk = exp.config.chunk
    render = _render_elites(exp)
    if plan is None:
        like = jax.eval_shape(functools.partial(init_seeds, exp.engine), exp.params, keys)
        with ThreadPoolExecutor(max_workers=1) as pool:
            compiling = pool.submit(
                lambda: (
                    run_generations.lower(exp.engine, exp.params, like, keys, chunk, stop_fitness, cap).compile(),
                    render.lower(like.archive.genomes).compile(),
                )
            )
            state = init_seeds(exp.engine, exp.params, keys)
            chunk_fn, render = compiling.result()
        return state, keys, exp.params, chunk_fn, render

    def chunk_fn(params, state, keys, stop, max_generation):
        return run_generations(exp.engine, params, state, keys, chunk, stop, max_generation)

    state = plan.place(init_seeds(exp.engine, exp.params, keys))
    return state, plan.place(keys), plan.place(exp.params, plan.replicated), chunk_fn, render


def _start_or_resume(exp: Experiment, plan: Plan | None, state: State, out_dir: str, resume: bool) -> tuple[State, Progress]:
    """Restores the newest checkpoint (trimming metrics written after it), or starts the run
    directory's files from generation 0."""
    num_seeds, num_cells = len(exp.seeds), len(exp.cells)
    progress = Progress(0, {t: np.full((num_seeds, num_cells), -1, np.int64) for t in _thresholds(exp.config)})
    ckpt_dir, metrics_path = os.path.join(out_dir, "checkpoints"), os.path.join(out_dir, "metrics.jsonl")
    write = is_main_process()
    if resume and checkpointing.latest_step(ckpt_dir) is not None:
        step, state, host = checkpointing.restore_checkpoint(ckpt_dir, state)
        if write:
            history = _read_history(metrics_path, step)
            with open(metrics_path, "w") as f:
                f.writelines(json.dumps(h) + "\n" for h in history)
        return state, Progress.from_json(host)
    fitness0 = _fetch(plan, state.archive.fitness)
    _update_reached(progress, fitness0[None], np.zeros((1, num_seeds), np.int64))
    if write:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(exp.config.to_dict(), f, indent=2)
        with open(metrics_path, "w") as f:
            f.write(_metrics_line(0, exp, np.zeros(num_seeds, int), fitness0))
    return state, progress


def _save(ckpt_dir: str, state: State, progress: Progress, start: float) -> None:
    host = dataclasses.replace(progress, elapsed=progress.elapsed + time.perf_counter() - start).to_json()
    checkpointing.save_checkpoint(ckpt_dir, progress.generation, state, host)
