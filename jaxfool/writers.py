"""Observers of a run (:class:`jaxfool.evolution.Observer`): they read the result between
chunks and write files or the terminal; none changes the run.

* :class:`MetricsLog`: ``metrics.jsonl``, one line per generation for one experiment's lanes.
* :class:`Checkpoints`: orbax checkpoints of all lanes every N generations and at the end.
* :class:`ProgressBar`: a tqdm bar on stderr that ends by saying why the run stopped.
* :class:`Outputs`: pictures, ``summary.json`` and ``report.html`` of one experiment at the end.

Only process 0 writes (:func:`jaxfool.distributed.is_main_process`); the others still compute.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from jaxfool import checkpointing, pictures
from jaxfool.distributed import is_main_process
from jaxfool.evolution import Result
from jaxfool.experiment import Experiment
from jaxfool.report import write_report
from jaxfool.summary import class_rows, summarize
from jaxfool.tables import write_csv, write_json

FULL_CELLS = 100  # archives up to this size log every cell; bigger ones log quantiles


def metrics_line(step: int, exp: Experiment, generations: np.ndarray, fitness: np.ndarray) -> str:
    """One ``metrics.jsonl`` line: ``generations [K]``, ``fitness [K, C]`` of one experiment."""
    seeds = []
    for k, seed in enumerate(exp.seeds):
        f = fitness[k]
        entry = {
            "seed": seed,
            "generation": int(generations[k]),
            "evaluations": int(exp.engine.evaluations(int(generations[k]))),
            "fooled_99": int((f >= math.log(0.99)).sum()),
            "fooled_9999": int((f >= math.log(0.9999)).sum()),
        }
        if f.size <= FULL_CELLS:
            entry["log_confidence"] = [float(x) for x in f]
        else:
            entry["log_confidence_quantiles"] = [float(x) for x in np.quantile(f, [0, 0.25, 0.5, 0.75, 1])]
        seeds.append(entry)
    return json.dumps({"generation": step, "seeds": seeds}) + "\n"


def metrics_lines(exp: Experiment, steps, generations, fitness, before: np.ndarray | None = None):
    """``metrics.jsonl`` lines of experiment ``exp``, one per generation in which some of its
    lanes still moved (``generations [K]`` past the previous ones; ``before``: the counters
    before the first; ``None`` writes the first)."""
    for step, gens, fit in zip(steps, generations, fitness):
        if before is None or (gens > before).any():
            yield metrics_line(step, exp, gens, fit)
        before = gens


def read_history(path: str, upto: int) -> list[dict]:
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


class MetricsLog:
    """``metrics.jsonl`` of experiment ``exp`` (lanes ``lanes`` of the result). A resumed run
    first drops the lines written after its checkpoint."""

    def __init__(self, path: str, exp: Experiment, lanes: slice):
        self.path, self.exp, self.lanes = path, exp, lanes
        self.write = is_main_process()

    def start(self, result: Result) -> None:
        self.last = result.generations[self.lanes]
        if not self.write:
            return
        if result.generation == 0:
            lines = [metrics_line(0, self.exp, self.last, result.fitness[self.lanes])]
        else:
            lines = [json.dumps(h) + "\n" for h in read_history(self.path, result.generation)]
        with open(self.path, "w") as f:
            f.writelines(lines)

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        gens, fit = generations[:, self.lanes], fitness[:, self.lanes]
        first, before = result.generation - gens.shape[0], self.last
        self.last = gens[-1]
        if not self.write:
            return
        with open(self.path, "a") as f:
            f.writelines(metrics_lines(self.exp, range(first + 1, first + 1 + gens.shape[0]), gens, fit, before))

    def end(self, result: Result) -> None:
        pass


class Checkpoints:
    """Saves all lanes' state and the host bookkeeping every ``every`` generations (0: only at
    the end), at the end, and on Ctrl-C; orbax keeps the newest two."""

    def __init__(self, directory: str, every: int):
        self.directory, self.every = directory, every
        self.last = None

    def start(self, result: Result) -> None:
        self.last = result.generation

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        if self.every and result.generation - self.last >= self.every:
            self.save(result)

    def end(self, result: Result) -> None:
        self.save(result)

    def save(self, result: Result) -> None:
        checkpointing.save_checkpoint(self.directory, result.generation, result.state, result.host())
        self.last = result.generation


class TensorBoard:
    """TensorBoard event files (``tensorboardX``, no TensorFlow) in ``<out_dir>/tensorboard``
    for experiment ``exp`` (lanes ``lanes``): per generation and seed, the best confidence of
    each class (quantiles over classes for big archives) and the fooled cells; evals/s per chunk;
    the elites as one image at the end. A resumed run drops the events written after its
    checkpoint."""

    def __init__(self, out_dir: str, exp: Experiment, lanes: slice):
        try:  # checked here, before anything compiles
            import tensorboardX  # noqa: F401
        except ImportError:
            from jaxfool.errors import ConfigError

            raise ConfigError("--tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from None
        self.logdir, self.exp, self.lanes = os.path.join(out_dir, "tensorboard"), exp, lanes
        self.writer = None

    def start(self, result: Result) -> None:
        if not is_main_process():
            return
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(self.logdir, purge_step=result.generation + 1 if result.generation else None)
        if result.generation == 0:
            self._scalars(0, result.fitness[self.lanes])

    def _scalars(self, step: int, fitness: np.ndarray) -> None:
        names = self.exp.cell_names
        log_t = math.log(self.exp.config.threshold)
        for k, seed in enumerate(self.exp.seeds):
            p = np.exp(np.asarray(fitness[k], np.float64))
            if len(names) <= FULL_CELLS:
                self.writer.add_scalars(f"seed{seed}/best_confidence", dict(zip(names, p.tolist())), step)
            else:
                quantiles = np.quantile(p, [0, 0.25, 0.5, 0.75, 1])
                self.writer.add_scalars(f"seed{seed}/best_confidence", dict(zip(("min", "q1", "median", "q3", "max"), quantiles.tolist())), step)
            self.writer.add_scalar(f"seed{seed}/fooled_cells", int((fitness[k] >= log_t).sum()), step)

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        if self.writer is None:
            return
        first = result.generation - generations.shape[0]
        for i in range(generations.shape[0]):
            self._scalars(first + i + 1, fitness[i, self.lanes])
        if result.evals_per_s:
            self.writer.add_scalar("evals_per_s", result.evals_per_s, result.generation)

    def end(self, result: Result) -> None:
        if self.writer is None:
            return
        images = np.round(np.clip(result.images()[self.lanes][:, :FULL_CELLS], 0, 1) * 255).astype(np.uint8)  # [K, C, H, W, ch]
        k, c, h, w, ch = images.shape
        grid = images.transpose(0, 2, 1, 3, 4).reshape(k * h, c * w, ch)  # one row of classes per seed
        self.writer.add_image("elites", np.repeat(grid, 3, -1) if ch == 1 else grid, result.generation, dataformats="HWC")
        self.writer.close()
        self.writer = None


class ProgressBar:
    """A tqdm bar over generations, with the fewest fooled cells of any lane and evals/s; it
    ends by saying why the run stopped."""

    def __init__(self, total: int, num_cells: int, threshold: float):
        self.total, self.num_cells, self.log_threshold = total, num_cells, math.log(threshold)
        self.bar = None

    def start(self, result: Result) -> None:
        if is_main_process():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=min(result.generation, self.total), unit="gen", dynamic_ncols=True)

    def _status(self, result: Result) -> str:
        fooled = int((result.fitness >= self.log_threshold).sum(-1).min())
        rate = f"  {result.evals_per_s:,.0f} evals/s" if result.evals_per_s else ""
        return f"fooled {fooled}/{self.num_cells}{rate}"

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self._status(result), refresh=False)
            self.bar.update(min(result.generation, self.total) - self.bar.n)

    def end(self, result: Result) -> None:
        if self.bar is None:
            return
        if result.stopped == "fooled":
            # Ends at 100 %: the run is complete, not cut off.
            self.bar.total = self.bar.n = int(result.generations.max())
            why = f"all fooled by generation {int(result.generations.max())}"
        else:
            why = result.stopped
        self.bar.set_postfix_str(f"{self._status(result)}  [{why}]", refresh=False)
        self.bar.refresh()
        self.bar.close()


class Outputs:
    """At the end (and on Ctrl-C): the pictures, ``summary.json`` and ``report.html`` of
    experiment ``exp`` (lanes ``lanes``) in ``out_dir``. ``summary`` holds what was written."""

    def __init__(self, out_dir: str, exp: Experiment, lanes: slice):
        self.out_dir, self.exp, self.lanes = out_dir, exp, lanes
        self.summary: dict | None = None

    def start(self, result: Result) -> None:
        pass

    def chunk(self, result: Result, generations: np.ndarray, fitness: np.ndarray) -> None:
        pass

    def end(self, result: Result) -> None:
        self.summary = write_outputs(self.exp, result, self.lanes, self.out_dir)


def write_outputs(exp: Experiment, result: Result, lanes: slice, out_dir: str) -> dict:
    """Writes the pictures, ``summary.json`` and ``report.html`` of experiment ``exp``
    (lanes ``lanes`` of ``result``); returns the summary. Only process 0 writes."""
    summary = summarize(exp, result, lanes)
    archive = result.archive()  # a collective across processes: every process fetches
    if not is_main_process():
        return summary
    images = result.images()[lanes]
    confidence = np.exp(np.asarray(result.fitness[lanes], np.float64))
    pictures.save_elites(out_dir, images, exp.cells, exp.cell_names, exp.seeds, np.asarray(archive.filled)[lanes])
    title = f"{exp.classifier.name}, {exp.config.encoding} encoding"
    if len(exp.seeds) == 1 or len(exp.cells) <= 20:
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
    history = read_history(os.path.join(out_dir, "metrics.jsonl"), result.generation)
    if history:
        gens = np.array([h["generation"] for h in history])
        per_cell = "log_confidence" in history[0]["seeds"][0]
        key = "log_confidence" if per_cell else "log_confidence_quantiles"
        values = np.array([[s[key] for s in h["seeds"]] for h in history], np.float64)
        pictures.progress_plot(
            os.path.join(out_dir, "progress.png"), gens, values, exp.cell_names if per_cell else None, title=title
        )
    write_json(os.path.join(out_dir, "summary.json"), summary)
    write_csv(os.path.join(out_dir, "classes.csv"), class_rows(summary))
    write_report(out_dir)
    return summary


def write_run(out_dir: str, exp: Experiment, result: Result, history, overwrite: bool = False) -> None:
    """Writes a finished in-memory run (``history``: a :class:`jaxfool.evolution.History` of
    it) as a run directory: ``config.json``, ``metrics.jsonl``, a checkpoint and the outputs.
    A directory that holds files already is refused unless ``overwrite``."""
    from jaxfool.runner import claim_run_dir

    claim_run_dir(out_dir, overwrite)
    lanes = result.lanes.lanes_of(result.lanes.experiments.index(exp))
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "config.json"), exp.config.to_dict())
    with open(os.path.join(out_dir, "metrics.jsonl"), "w") as f:
        f.writelines(metrics_lines(exp, history.steps, [g[lanes] for g in history.generations],
                                   [x[lanes] for x in history.fitness]))
    checkpointing.save_checkpoint(os.path.join(out_dir, "checkpoints"), result.generation, result.state, result.host())
    write_outputs(exp, result, lanes, out_dir)
