"""Rows of results (one per sweep point, one per retraining iteration): medians, CSV and JSON files."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np


def median_or_none(values: list[float | None]) -> float | None:
    """The median, counting ``None`` (never reached) as infinitely slow; ``None`` when the
    median itself was never reached.

    >>> median_or_none([10, 20, None]), median_or_none([10, None, None])
    (20.0, None)
    """
    m = float(np.median([v if v is not None else np.inf for v in values]))
    return m if np.isfinite(m) else None


@contextlib.contextmanager
def replacing(path: str) -> Iterator[TextIO]:
    """A text file to write that replaces ``path`` only once complete: a run killed meanwhile
    leaves the old file or the new one, never a torn one that would stop ``--resume``."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        yield f
    os.replace(tmp, path)


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` (dicts with the same keys) as a CSV file, written atomically."""
    with replacing(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, value: Any, indent: int | None = 2) -> None:
    """``value`` as a JSON file, written atomically."""
    with replacing(path) as f:
        json.dump(value, f, indent=indent)
