"""Rows of results (one per sweep point, one per retraining iteration): medians and CSV files."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np


def median_or_none(values: list[float | None]) -> float | None:
    """The median, counting ``None`` (never reached) as infinitely slow; ``None`` when the
    median itself was never reached.

    >>> median_or_none([10, 20, None]), median_or_none([10, None, None])
    (20.0, None)
    """
    m = float(np.median([v if v is not None else np.inf for v in values]))
    return m if np.isfinite(m) else None


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """``rows`` (dicts with the same keys) as a CSV file, written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
