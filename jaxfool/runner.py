"""A run in a directory: the in-memory core (:func:`jaxfool.evolution.evolve`) with the file
writers attached, and resume. A run directory holds::

    config.json      the RunConfig: --resume reads it back (and refuses changes other than
                     --generations); it is also what reproduces the run
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

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from jaxfool import checkpointing
from jaxfool.config import RunConfig
from jaxfool.distributed import decided_by_main, is_main_process, make_plan
from jaxfool.errors import CheckpointError, ConfigError, OutputError
from jaxfool.evolution import Lanes, evolve
from jaxfool.experiment import Experiment, build_experiment
from jaxfool.tables import write_json
from jaxfool.writers import Checkpoints, MetricsLog, Outputs, ProgressBar, TensorBoard


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


# What a run writes into its directory; --overwrite removes these and nothing else.
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "elites.png", "progress.png", "report.html", "checkpoints", "elites")


def holds_files(out_dir: str) -> bool:
    """Whether ``out_dir`` already holds files; a file at that path is a one-line error."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir} is a file, not a directory; choose another --out")
    return os.path.isdir(out_dir) and bool(os.listdir(out_dir))


def remove_entries(out_dir: str, owned: Callable[[str], bool]) -> None:
    """Removes the files and folders of ``out_dir`` whose names ``owned`` accepts."""
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if owned(name):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def claim_run_dir(out_dir: str, overwrite: bool = False) -> None:
    """A run directory belongs to one run: a fresh run into a directory that already holds
    files is refused (so two runs' checkpoints never mix and ``--resume`` never restores the
    other run), unless ``overwrite``, which first removes what an earlier run wrote there.
    Nothing is changed before the check."""
    if not holds_files(out_dir):
        return
    if not overwrite:
        raise ConfigError(
            f"{out_dir} already holds files (another run?); continue it with --resume {out_dir}, "
            "choose a new --out, or pass --overwrite to replace it"
        )
    remove_entries(out_dir, lambda name: name in RUN_FILES or (name.startswith("elites-") and name.endswith(".png")))


def check_writable(out_dir: str) -> None:
    """``out_dir`` (created if missing) must take a file: a probe is written and removed, since
    root passes every permission check but not a read-only filesystem."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".jaxfool-probe-", dir=out_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputError(f"cannot write to {out_dir} ({e.strerror or e}); choose a writable --out") from None


@contextlib.contextmanager
def output_errors(out_dir: str, how_to_continue: str) -> Iterator[None]:
    """Turns a failed write (disk full, a directory gone read-only) into one line: what failed
    where, and ``how_to_continue``. Checkpoints are written atomically, so the newest complete
    one is intact."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{e.strerror or e} ({e.filename or 'in ' + out_dir}); the newest complete checkpoint is kept: free some space "
                          f"(or fix the directory), then {how_to_continue}") from None


def restorer(ckpt_dir: str, resume: bool):
    """The ``resume`` hook of :func:`evolve`: the newest checkpoint in ``ckpt_dir`` when
    resuming and one exists, else nothing (a run killed before its first checkpoint restarts)."""

    def restore(like):
        if not resume or checkpointing.latest_step(ckpt_dir) is None:
            return None
        _, state, host = checkpointing.restore_checkpoint(ckpt_dir, like)
        return state, host

    return restore


def run(
    exp: Experiment | RunConfig,
    out_dir: str,
    resume: bool = False,
    progress_bar: bool = True,
    max_chunks: int | None = None,
    shard: str = "auto",
    time_limit: float | None = None,
    overwrite: bool = False,
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
        "auto", "none", "lanes" or "batch". The archive is the same whatever the layout.
      overwrite: a fresh run into a directory holding files replaces them (else that is an
        error: :func:`claim_run_dir`).

    Returns:
      the summary (also written to ``summary.json``).
    """
    exp = exp if isinstance(exp, Experiment) else build_experiment(exp)
    lanes = Lanes.of([exp])
    plan = make_plan(shard, len(lanes), exp.engine.batch_size)

    def claim() -> None:
        if not resume:
            claim_run_dir(out_dir, overwrite)
        check_writable(out_dir)

    decided_by_main(claim)
    os.makedirs(out_dir, exist_ok=True)
    if is_main_process() and not resume:
        write_json(os.path.join(out_dir, "config.json"), exp.config.to_dict())
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    outputs = Outputs(out_dir, exp, lanes.lanes_of(0))
    observers = [MetricsLog(os.path.join(out_dir, "metrics.jsonl"), exp, lanes.lanes_of(0)),
                 Checkpoints(ckpt_dir, exp.config.checkpoint_every), outputs]
    if exp.config.tensorboard:
        observers.append(TensorBoard(out_dir, exp, lanes.lanes_of(0)))
    if progress_bar:
        observers.append(ProgressBar(exp.config.generations, len(exp.cells), exp.config.threshold))
    with output_errors(out_dir, f"continue with --resume {out_dir}"):
        evolve(lanes, observers, plan=plan, resume=restorer(ckpt_dir, resume), time_limit=time_limit, max_chunks=max_chunks)
    return outputs.summary
