"""Shared fixtures. MNIST comes from $JAXFOOL_DATA or ../shared/data/mnist beside the repo."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The documented fallback; JAXFOOL_TEST_SHARED_MNIST moves it (the no-MNIST check points it nowhere).
SHARED_MNIST = os.environ.get("JAXFOOL_TEST_SHARED_MNIST", os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist"))
MNIST_SKIP = "MNIST not found: set JAXFOOL_DATA to the IDX directory (e.g. ../shared/data/mnist)"


def _mnist_dir() -> str | None:
    for candidate in (os.environ.get("JAXFOOL_DATA"), SHARED_MNIST):
        if candidate and os.path.exists(os.path.join(candidate, "t10k-images-idx3-ubyte.gz")):
            return candidate
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    found = _mnist_dir()
    if found is None:
        pytest.skip(MNIST_SKIP)
    return found


def pytest_collection_modifyitems(items):
    """Marks every test that asks for MNIST (``-m mnist`` selects them: the no-MNIST check),
    and skips them all up front where there is none, before any costly fixture of theirs runs."""
    missing = _mnist_dir() is None
    for item in items:
        if "mnist_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mnist)
            if missing:
                item.add_marker(pytest.mark.skip(reason=MNIST_SKIP))


@pytest.fixture(scope="session")
def lenet():
    from jaxfool.models import load_classifier

    return load_classifier("lenet-mnist")


def run_script(
    name: str, *args: str, timeout: float = 600, env: dict | None = None, folder: str = "scripts"
) -> subprocess.CompletedProcess:
    """Runs ``<folder>/<name>`` (a script or a benchmark) with this interpreter."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, folder, name), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_and_kill(name: str, args: list[str], marker: str, delay: float | None, checkpoints_glob: tuple[str, ...] = (),
                 at_step: int = 0, sig: int = signal.SIGKILL) -> tuple[int, str, float]:
    """Starts ``scripts/<name> args`` and sends it ``sig`` ``delay`` seconds after ``marker``
    (a file the script writes first) appears, or, with ``delay=None``, once a checkpoint of step
    >= ``at_step`` exists among the folders that ``checkpoints_glob`` (path parts of a glob)
    names: orbax's own listing would race the writer. Returns the exit
    code, stderr and the seconds from the marker to the exit (the whole run's span when the
    script finished first). Runs compile afresh (no persistent cache), so every run spans about
    the same time; a run that still finishes before its delay is removed and started again with
    half the delay (the marker's folder is the run's)."""
    for _ in range(4):
        code, err, span = _run_and_kill_once(name, args, marker, delay, checkpoints_glob, at_step, sig)
        if delay is None or code != 0:
            break
        shutil.rmtree(os.path.dirname(marker))
        delay /= 2
    return code, err, span


def _run_and_kill_once(name, args, marker, delay, checkpoints_glob, at_step, sig):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", name), *args], cwd=ROOT,
                            env={**os.environ, "JAXFOOL_CACHE": "off"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    start = time.time()
    while proc.poll() is None and time.time() < deadline:
        if delay is not None:
            due = time.time() - start >= delay
        else:
            steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(*checkpoints_glob)) if os.path.basename(p).isdigit()]
            due = bool(steps) and max(steps) >= at_step
        if due:
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err, time.time() - start
