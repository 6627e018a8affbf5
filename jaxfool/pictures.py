"""Pictures people look at: exact 8-bit PNGs of the elites, a labelled grid, progress plots.

Images are float ``[H, W, ch]`` in [0, 1] on the 8-bit grid (encodings quantise), so the PNG
of an elite holds exactly the pixels the classifier scored.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

PAGE = 100  # cells per page of a grid


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: the one place the backend is chosen,
    so pictures draw the same with or without a display (imported on first use: it is slow)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a notebook's own backend stays as it is
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float ``[H, W, ch]`` in [0, 1] -> uint8 ``[H, W]`` (gray) or ``[H, W, 3]``."""
    pixels = np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def save_png(path: str, image: np.ndarray) -> None:
    """Writes ``image`` (float ``[H, W, ch]`` in [0, 1]) as an 8-bit PNG, losslessly."""
    Image.fromarray(to_uint8(image)).save(path)


def load_png(path: str, channels: int | None = None) -> np.ndarray:
    """Reads a PNG as float32 ``[H, W, ch]`` in [0, 1]; ``channels`` 1 or 3 converts."""
    with Image.open(path) as im:
        if channels == 1:
            im = im.convert("L")
        elif channels == 3:
            im = im.convert("RGB")
        pixels = np.asarray(im, np.float32) / 255.0
    return pixels[..., None] if pixels.ndim == 2 else pixels


def safe_name(name: str) -> str:
    """A class name as a file-name part: ``'tiger cat'`` -> ``'tiger_cat'``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def confidence_label(p: float) -> str:
    """``0.99995 -> '99.9950%'``: enough digits to tell 99.99 % from 99.9 %, never a false 100 %."""
    if p >= 0.99:
        return f"{100 * p:.4f}%" if 100 * p < 99.99995 else ">99.9999%"
    return f"{100 * p:.1f}%"


def elite_paths(out_dir: str, classes: Sequence[int], names: Sequence[str], seeds: Sequence[int] | None = None) -> list[list[str]]:
    """Per seed, per cell: ``elites/<class index>_<class name>.png`` (``elites/seed<s>/...``
    when there are several seeds). ``names``: one per cell."""
    names = [f"{c}_{safe_name(n)}.png" for c, n in zip(classes, names)]
    if seeds is None or len(seeds) == 1:
        return [[os.path.join(out_dir, "elites", n) for n in names]]
    return [[os.path.join(out_dir, "elites", f"seed{s}", n) for n in names] for s in seeds]


def save_elites(
    out_dir: str,
    images: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str],
    seeds: Sequence[int] | None = None,
    filled: np.ndarray | None = None,
) -> list[list[str]]:
    """Writes each elite as an exact PNG; ``images`` float ``[K, C, H, W, ch]``; returns the paths."""
    paths = elite_paths(out_dir, classes, names, seeds)
    for k, row in enumerate(paths):
        os.makedirs(os.path.dirname(row[0]), exist_ok=True)
        for c, path in enumerate(row):
            if filled is None or filled[k, c]:
                save_png(path, images[k, c])
    return paths


def elites_grid(
    path: str,
    images: np.ndarray,
    confidences: np.ndarray,
    names: Sequence[str],
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> list[str]:
    """Saves a grid of elites, each titled with its class and confidence.

    Args:
      path: ``elites.png``; more than :data:`PAGE` cells per row go to ``elites-001.png`` ...
      images: float ``[R, C, H, W, ch]``: R rows (seeds) of C cells.
      confidences: ``[R, C]``.
      names: C cell names.
      row_labels: R labels (e.g. ``seed 3``).
      title: figure title.

    Returns:
      the written paths.
    """
    plt = pyplot()

    rows, cells = confidences.shape
    pages = [range(i, min(i + PAGE, cells)) for i in range(0, cells, PAGE)]
    stem, ext = os.path.splitext(path)
    written = []
    for page_index, page in enumerate(pages):
        # One row: cells wrap 10 to a line. Several rows (seeds): one line per row.
        cols = min(len(page), 10) if rows == 1 else len(page)
        lines = -(-len(page) // cols) if rows == 1 else rows
        strip = 0.35 if title else 0.0  # inches for the title above the grid
        fig, axes = plt.subplots(lines, cols, figsize=(1.6 * cols, 1.9 * lines + 0.4 + strip), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for r in range(rows):
            for j, c in enumerate(page):
                ax = axes[j // cols, j % cols] if rows == 1 else axes[r, j]
                pixels = to_uint8(images[r, c])
                ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
                ax.set_title(f"{names[c]}\n{confidence_label(float(confidences[r, c]))}", fontsize=8)
                if row_labels is not None and j == 0:
                    ax.text(-0.1, 0.5, row_labels[r], transform=ax.transAxes, ha="right", va="center", fontsize=8)
        if title:
            suffix = f" (page {page_index + 1}/{len(pages)})" if len(pages) > 1 else ""
            fig.suptitle(title + suffix, fontsize=10)
        # Leave the title its own strip: tight_layout alone lets it cover the first row's names.
        fig.tight_layout(rect=(0, 0, 1, 1 - strip / fig.get_figheight()))
        out = path if len(pages) == 1 else f"{stem}-{page_index + 1:03d}{ext}"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written


def quantile_lines(gap: np.ndarray) -> dict[str, np.ndarray]:
    """What the progress plot of a big archive draws, from ``gap`` ``[T, K, 5]``: 1 - the
    quantiles (min, q1, median, q3, max over cells) of the log-confidence, median over seeds.
    The best class has the largest confidence, so the smallest gap (the last quantile).

    >>> lines = quantile_lines(1 - np.array([[[0.1, 0.2, 0.5, 0.8, 0.99]]]))
    >>> round(float(lines["best class"][0]), 6), round(float(lines["worst class"][0]), 6)
    (0.01, 0.9)
    """
    median = np.median(gap, axis=1)  # over seeds
    return {"quartiles over classes": (median[:, 1], median[:, 3]), "median over classes": median[:, 2],
            "best class": median[:, 4], "worst class": median[:, 0]}


def progress_plot(
    path: str,
    generations: np.ndarray,
    fitness: np.ndarray,
    names: Sequence[str],
    thresholds: Sequence[float] = (0.99, 0.9999),
    title: str = "",
    xlabel: str = "generation",
) -> None:
    """Plots 1 - best confidence per cell over generations on a log axis.

    Args:
      path: output PNG.
      generations: int ``[T]``.
      fitness: float ``[T, K, C]`` log-probabilities (K seeds), or ``[T, K, 5]`` quantiles
        (min, q1, median, q3, max over cells) for archives too big to draw cell by cell.
      names: C cell names (ignored for quantiles, which are passed with ``names=None``).
      thresholds: drawn as dashed lines.
    """
    plt = pyplot()

    gap = np.maximum(-np.expm1(np.asarray(fitness, np.float64)), 1e-12)  # 1 - p, exact near p = 1
    fig, ax = plt.subplots(figsize=(8, 5))
    if names is None:
        lines = quantile_lines(gap)
        ax.fill_between(generations, *lines["quartiles over classes"], alpha=0.3, label="quartiles over classes")
        ax.plot(generations, lines["median over classes"], label="median over classes")
        ax.plot(generations, lines["best class"], lw=0.8, ls=":", label="best class")
        ax.plot(generations, lines["worst class"], lw=0.8, ls="-.", label="worst class")
    else:
        median = np.median(gap, axis=1)
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for c, name in enumerate(names):
            ax.plot(generations, median[:, c], color=cmap(c % cmap.N), label=name, lw=1.2)
    for t in thresholds:
        ax.axhline(1 - t, color="k", ls="--", lw=0.8)
        ax.text(generations[-1] if len(generations) else 0, 1 - t, f" {100 * t:g}%", va="bottom", ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    seeds = fitness.shape[1]
    ax.set_ylabel("1 - best confidence" + (f" (median of {seeds} seeds)" if seeds > 1 else ""))
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(names or ()) > 10 else 1, loc="lower left")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
