"""Shared fixtures. MNIST comes from $JAXFOOL_DATA or ../shared/data/mnist beside the repo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")


def _mnist_dir() -> str | None:
    for candidate in (os.environ.get("JAXFOOL_DATA"), SHARED_MNIST):
        if candidate and os.path.exists(os.path.join(candidate, "t10k-images-idx3-ubyte.gz")):
            return candidate
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    found = _mnist_dir()
    if found is None:
        pytest.skip("MNIST not found: set JAXFOOL_DATA to the IDX directory (e.g. ../shared/data/mnist)")
    return found


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
