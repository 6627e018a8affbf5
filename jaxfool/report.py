"""One self-contained HTML page per run: how easily was this model fooled?

``report.html`` embeds every picture (as data URIs), so it can be mailed or attached as one
file: the paper's ImageNet figures (median best confidence, share of classes at 99 % and
99.99 %), the elites gallery with class names and confidences, evaluations-to-fool per class
(a histogram and a table), the progress plot, and the run's config and environment. A run of
more than :data:`CLASSES_PER_PAGE` classes (all 1000 of ImageNet) continues its gallery and
table on ``report-002.html``, ... linked from each page.
"""

from __future__ import annotations

import base64
import dataclasses
import glob
import html
import io
import json
import os

import numpy as np
from PIL import Image

from jaxfool import pictures
from jaxfool.config import RunConfig

THUMBNAIL = 96  # images larger than this are embedded as thumbnails of this size


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumbnail(path: str) -> bytes:
    with Image.open(path) as im:
        if max(im.size) > THUMBNAIL:
            im = im.copy()
            im.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        im.save(buffer, format="PNG")
    return buffer.getvalue()


def _histogram(evaluations: list[int | None], budget: int, threshold: float) -> bytes:
    plt = pictures.pyplot()

    reached = [e for e in evaluations if e is not None]
    fig, ax = plt.subplots(figsize=(6, 3))
    if reached:
        ax.hist(reached, bins=min(30, max(5, len(set(reached)))), color="#4c72b0")
    missing = len(evaluations) - len(reached)
    ax.set_xlabel(f"evaluations until the class reached {100 * threshold:g}%")
    ax.set_ylabel("classes")
    ax.set_title(f"{len(reached)} of {len(evaluations)} class cells fooled" + (f"; {missing} not within {budget:,}" if missing else ""))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 112px; text-align: center; font-size: 12px; }
figure img { width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #ccc; }
figure.miss img { border: 2px solid #c44; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.name { text-align: left; }
.headline { font-size: 1.1em; background: #f6f8fa; padding: 0.8em; border-radius: 6px; }
"""


def _unused_fields(encoding: str | None) -> set[str]:
    """Config fields the encoding ignores (the CPPN's settings in a direct run, and back)."""
    cppn = {f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("help", "").startswith("CPPN:")}
    direct_only = {"crossover_rate", "crossover_eta", "halving_period", "recombine_scale", "recombine"}
    return cppn if encoding == "direct" else direct_only if encoding == "cppn" else set()


CLASSES_PER_PAGE = 100  # more classes than this: the gallery and per-class table continue on further pages


def _page_paths(path: str, pages: int) -> list[str]:
    """``report.html``, ``report-002.html``, ...: the files of a report of ``pages`` pages."""
    stem, ext = os.path.splitext(path)
    return [path] + [f"{stem}-{i + 1:03d}{ext}" for i in range(1, pages)]


def _write_html(path: str, parts: list[str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, path)


def write_report(run_dir: str, path: str | None = None, per_page: int = CLASSES_PER_PAGE) -> str:
    """Writes ``report.html`` for a finished run directory; returns its path. With more than
    ``per_page`` classes, the first page holds the first ``per_page`` of them and links to
    ``report-002.html``, ... (the same gallery and table for the next classes)."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    config = summary["config"]
    classes = [c["index"] for c in summary["classes"]]
    names = [c["name"] for c in summary["classes"]]
    seeds = summary["seeds"]
    threshold = config["threshold"]
    paths = pictures.elite_paths(run_dir, classes, names, [s["seed"] for s in seeds] if len(seeds) > 1 else None)
    e = html.escape
    ranges = [range(i, min(i + per_page, len(classes))) for i in range(0, len(classes), per_page)]
    files = _page_paths(path or os.path.join(run_dir, "report.html"), len(ranges))
    nav = ("<p class='pages'>classes: " + " · ".join(
        f"<a href='{e(os.path.basename(f))}'>{r.start + 1}–{r.stop}</a>" for f, r in zip(files, ranges)) + "</p>"
        if len(ranges) > 1 else "")

    def head(title: str) -> str:
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
                f"<style>{CSS}</style></head><body>")

    def gallery(cells: range) -> list[str]:
        """The elites of the classes ``cells``."""
        out = ["<h2>Elites</h2><p>Each image is labelled with its class and the network's confidence; "
               "a red border marks a class not fooled.</p>"]
        for k, s in enumerate(seeds):
            if len(seeds) > 1:
                out.append(f"<h3>seed {s['seed']}</h3>")
            out.append("<div class='gallery'>")
            for c in cells:
                p, conf = paths[k][c], s["best_confidence"][c]
                miss = "" if conf >= threshold else " class='miss'"
                img = f"<img alt='{e(names[c])}' src='{_data_uri(_thumbnail(p))}'>" if os.path.exists(p) else "<div>(empty)</div>"
                out.append(f"<figure{miss}>{img}<figcaption>{classes[c]} {e(names[c])}<br>{pictures.confidence_label(conf)}</figcaption></figure>")
            out.append("</div>")
        return out

    def table(cells: range) -> list[str]:
        """Evaluations to fool each of the classes ``cells``, per seed, and their median best confidence."""
        header = "".join(f"<th>seed {s['seed']}</th>" for s in seeds)
        out = [f"<table><tr><th>class</th><th>name</th>{header}<th>best confidence (median)</th></tr>"]
        for c in cells:
            row = "".join(f"<td>{per_class[k][c]:,}</td>" if per_class[k][c] is not None else "<td>not fooled</td>" for k in range(len(seeds)))
            median = float(np.median([s["best_confidence"][c] for s in seeds]))
            out.append(f"<tr><td>{classes[c]}</td><td class='name'>{e(names[c])}</td>{row}<td>{pictures.confidence_label(median)}</td></tr>")
        return out + ["</table>"]

    per_class = [s[f"evaluations_to_{threshold:g}_per_class"] for s in seeds]
    title = f"jaxfool report: {summary['classifier']}"
    parts = [head(title)]
    fooled = [s["classes_fooled"] for s in seeds]
    parts.append(f"<h1>How easily is <code>{e(summary['classifier'])}</code> fooled?</h1>")
    parts.append(
        f"<p class='headline'>{config['encoding']} encoding, {len(seeds)} seed(s): "
        f"{sum(fooled)} of {len(seeds) * len(classes)} class cells reached {100 * threshold:g}% confidence "
        f"within {max(s['evaluations'] for s in seeds):,} evaluations per seed. "
        f"Wall time {summary['wall_time_s']:.1f} s on {e(summary['device']['kind'])} "
        f"({summary['device']['count']} device(s)).</p>"
    )
    best = np.array([s["best_confidence"] for s in seeds], np.float64)  # [seeds, classes]
    parts.append(
        "<p>As the paper reports ImageNet: median best confidence over the classes "
        + ", ".join(f"{100 * float(np.median(b)):.2f}%" for b in best)
        + (" (per seed)" if len(seeds) > 1 else "")
        + f"; classes at or above 99%: {100 * float((best >= 0.99).mean()):.1f}%, at or above 99.99%: "
        f"{100 * float((best >= 0.9999).mean()):.1f}%. Per class: <code>classes.csv</code>.</p>"
    )
    if "classes_fooled_float32" in seeds[0]:
        parts.append(
            f"<p>Evolved with a {e(config['compute_dtype'])} forward pass; re-scored in float32, "
            f"{sum(s['classes_fooled_float32'] for s in seeds)} of {len(seeds) * len(classes)} elites stay at or above "
            f"{100 * threshold:g}%.</p>"
        )

    parts.append(
        "<p>A <em>fooling image</em> is a picture no person would take for the class, which the network "
        "nevertheless labels as that class with very high confidence (Nguyen, Yosinski &amp; Clune, CVPR 2015). "
        "Each class has one cell; evolution keeps, per cell, the image the network scored highest for that class "
        "(its <em>elite</em>). <em>Confidence</em> is the network's softmax probability of the class for the elite, "
        f"exactly as saved in the PNG; a cell counts as fooled at {100 * threshold:g}%. <em>Evaluations</em> are "
        "images scored by the network (the random images of generation 0 included); <em>evaluations to fool</em> a "
        "class are those spent until its cell first reached the threshold.</p>"
    )
    parts.append(nav)
    parts.extend(gallery(ranges[0]))
    flat = [x for row in per_class for x in row]
    budget = summary["evaluation_budget"]
    parts.append("<h2>Evaluations to fool each class</h2><p>How many classes were fooled within how many "
                 "evaluations (left means easier), and per class and seed the evaluations it took.</p>"
                 f"<img alt='histogram of evaluations to fool' src='{_data_uri(_histogram(flat, budget, threshold))}'>")
    parts.extend(table(ranges[0]))

    progress = os.path.join(run_dir, "progress.png")
    if os.path.exists(progress):
        with open(progress, "rb") as f:
            parts.append("<h2>Progress</h2><p>One minus the best confidence per class over generations, on a log "
                         "scale so that 99 % and 99.99 % are visible: lines falling to the dashed lines are classes "
                         "being fooled.</p>"
                         f"<img alt='best confidence per class over generations' src='{_data_uri(f.read())}'>")

    parts.append("<h2>Configuration</h2><table>")
    shown = {k: v for k, v in config.items() if k not in _unused_fields(config.get("encoding"))}
    parts.extend(f"<tr><td class='name'>{e(k)}</td><td class='name'>{e(str(v))}</td></tr>" for k, v in shown.items())
    parts.append("</table><h2>Environment</h2><table>")
    for group in ("versions", "device"):
        parts.extend(f"<tr><td class='name'>{e(group)}.{e(k)}</td><td class='name'>{e(str(v))}</td></tr>" for k, v in summary[group].items())
    rate = summary.get("evals_per_s")
    parts.append(f"<tr><td class='name'>evaluations/s</td><td class='name'>{f'{rate:,.0f}' if rate else '-'}</td></tr>")
    parts.append("</table></body></html>")
    _write_html(files[0], parts)
    for f, cells in zip(files[1:], ranges[1:]):
        _write_html(f, [head(f"{title}, classes {cells.start + 1}–{cells.stop}"),
                        f"<h1>Classes {cells.start + 1}–{cells.stop} of {len(classes)}</h1>", nav,
                        *gallery(cells), "<h2>Evaluations to fool each class</h2>", *table(cells), "</body></html>"])
    return files[0]


def evaluations_cell(row: dict, level: str = "0.9999") -> str:
    """``"12,800 [11,000..inf]; IQM 13,100 (2 censored)"`` from a row of
    :func:`jaxfool.seed_statistics.seed_table` at confidence ``level`` (inf: beyond the budget;
    the row's censored count for 0.99 is ``seeds_censored_0.99``)."""
    median = row[f"median_evaluations_to_{level}"]
    low, high = row[f"median_evaluations_to_{level}_ci95"].split("..")
    censored_seeds = row["seeds_censored" if level == "0.9999" else f"seeds_censored_{level}"]
    fmt = lambda v: "inf" if v in ("inf", None) else f"{float(v):,.0f}"  # noqa: E731
    censored = f" ({censored_seeds} censored)" if censored_seeds else ""
    return (f"{fmt(median) if median is not None else 'not reached'} [{fmt(low)}..{fmt(high)}]; "
            f"IQM {'>= ' if censored_seeds else ''}{fmt(row[f'iqm_evaluations_to_{level}'])}{censored}")


def write_sweep_report(out_dir: str, rows: list[dict], point_dirs: list[str], axes: list[str]) -> str:
    """``sweep.html``: ``sweep.png``, then one row per point: its grid values, seeds fooled,
    generations to 99.99 %, median best confidence, evals/s and its elites (first seed)."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>jaxfool sweep</title><style>{CSS}</style></head><body>",
             f"<h1>Sweep: {len(rows)} points</h1>"]
    plot = os.path.join(out_dir, "sweep.png")
    if os.path.exists(plot):
        with open(plot, "rb") as f:
            parts.append(f"<img alt='generations to fool and median confidence per point' src='{_data_uri(f.read())}'>")
    head = "".join(f"<th>{e(a)}</th>" for a in axes)
    parts.append(f"<h2>Points</h2><table><tr>{head}<th>seeds fooled</th><th>median generations to 99.99%</th>"
                 "<th>evaluations to 99.99% in every class: median [95% CI]; IQM (seeds not done count as censored)</th>"
                 "<th>classes fooled at 99% / 99.99% (mean over seeds)</th>"
                 "<th>median best confidence</th><th>evals/s</th><th>elites (first seed)</th></tr>")
    for row, d in zip(rows, point_dirs):
        grid = os.path.join(out_dir, d, "elites.png")
        if not os.path.exists(grid):  # big archives of several seeds: one picture per seed
            grid = next(iter(sorted(glob.glob(os.path.join(out_dir, d, "elites-seed*.png")))), grid)
        img = f"<a href='{e(d)}/report.html'><img style='max-width:700px' alt='elites' src='{_data_uri(open(grid, 'rb').read())}'></a>" if os.path.exists(grid) else "-"
        g = row["median_generations_to_9999"]
        rate = row["evals_per_s"]
        parts.append("<tr>" + "".join(f"<td>{e(str(row[a]))}</td>" for a in axes)
                     + f"<td>{row['seeds_fooled']}/{row['seeds']}</td><td>{g if g is not None else 'not fooled'}</td>"
                     f"<td>{e(evaluations_cell(row))}</td>"
                     f"<td>{100 * row['share_classes_fooled_0.99']:.0f}% / {100 * row['share_classes_fooled_0.9999']:.0f}%</td>"
                     f"<td>{e(pictures.confidence_label(row['median_best_confidence']))}</td><td>{f'{rate:,.0f}' if rate else '-'}</td>"
                     f"<td class='name'>{img}</td></tr>")
    parts.append("</table></body></html>")
    path = os.path.join(out_dir, "sweep.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
