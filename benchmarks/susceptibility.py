"""Fooling susceptibility across models: which of them is easier to fool with unrecognisable images?

Models x seeds under one preset and one fixed evaluation budget (``--generations`` of the preset's
batch), run on the sweep machinery: each model is a static group (one compiled program), its
seeds are lanes. Per model: the share of classes fooled at 99 % and 99.99 %, the evaluations to
fool every class at 99.99 % and at 99 % (median, interquartile mean and bootstrap 95 % intervals
across seeds; a seed that never fooled a class within the budget counts as censored at the budget,
never dropped), the median best confidence and the elites' regularity; for MNIST models also the clean test accuracy and the accuracy under
PGD (eps 0.3, 40 steps; Madry et al. 2018). Writes, beside the sweep's own files (``sweep.csv``, ``sweep.html``,
``points/``): ``susceptibility.csv``, ``susceptibility.png`` (share of seeds done against
evaluations, Kaplan-Meier curves per model at 99.99 % and 99 %; shares of classes fooled),
``side_by_side.png`` (one row per model: its first seed's elites, at the smallest model's
resolution) and ``susceptibility.html``
(the table, the plots and each model's elites).

    python benchmarks/susceptibility.py        # MNIST: LeNet A and B, an MLP, an adversarially
                                               # trained LeNet, a PyTorch LeNet-5 (bridge)
    python benchmarks/susceptibility.py --preset imagenet-direct-gradient --generations 30 --seeds 4 \\
        --models efficientnet-lite0-imagenet,efficientnet-lite1-imagenet,efficientnet-lite2-imagenet \\
        --classes "king penguin,starfish,baseball,electric guitar,remote control,peacock,school bus,monarch,lemon,volcano"

``torch-lenet5`` in ``--models`` trains pyribs's fooling-MNIST LeNet-5 in PyTorch (one epoch,
seed 0, inputs normalised inside the exported program) and fools it through the bridge
(``torch:torch-lenet5.pt2`` beside ``--out``); it needs the torch extra. Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import html
import json
import os

import numpy as np

from jaxfool import pictures
from jaxfool.models import load_classifier
from jaxfool.presets import DEFAULT
from jaxfool.report import _data_uri, evaluations_cell
from jaxfool.seed_statistics import done_curve, seed_table
from jaxfool.sweep import point_name, run_sweep, summary_row
from jaxfool.tables import write_csv

DEFAULT_MODELS = "lenet-mnist,lenet-mnist-b,mlp-mnist,lenet-mnist-adv,torch-lenet5"


def lenet5():
    """pyribs's fooling-MNIST LeNet-5 in PyTorch (it ends in LogSoftmax), untrained."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10), nn.LogSoftmax(dim=1))


def fit_mnist(net, images: np.ndarray, labels: np.ndarray, batch: int = 64):
    """One epoch of Adam (lr 2e-3) on MNIST images ``[N, 28, 28, 1]`` in [0, 1], normalised as
    ``(x - 0.1307) / 0.3081``; returns ``net`` in eval mode."""
    import torch

    x = (torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy()) - 0.1307) / 0.3081
    y = torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for i in range(0, len(x), batch):
        opt.zero_grad()
        torch.nn.functional.nll_loss(net(x[i : i + batch]), y[i : i + batch]).backward()
        opt.step()
    return net.eval()


def train_torch_lenet5(path: str, data_dir: str | None = None) -> str:
    """:func:`lenet5` trained one epoch (seed 0) on MNIST, exported with its input normalisation
    inside as a ``.pt2`` at ``path`` (kept if there)."""
    if os.path.exists(path):
        return path
    import torch
    import torch.nn as nn

    from jaxfool.data import load_mnist

    class Normalise(nn.Module):
        def forward(self, x):
            return (x - 0.1307) / 0.3081

    torch.manual_seed(0)
    train = load_mnist("train", data_dir)
    model = nn.Sequential(Normalise(), fit_mnist(lenet5(), train.images, train.labels)).eval()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 28, 28),)), path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def accuracies(spec: str, data_dir: str | None) -> tuple[float | None, float | None]:
    """Clean accuracy on the 10 000 MNIST test images and accuracy under PGD (Madry et al.'s
    evaluation: eps 0.3, 40 steps of 0.01, on the first 1 000), for MNIST classifiers; else
    ``(None, None)``."""
    from jaxfool.data import load_mnist
    from jaxfool.errors import DataError
    from jaxfool.training import accuracy, pgd_accuracy

    clf = load_classifier(spec)
    if clf.input_shape != (28, 28, 1) or clf.num_classes != 10:
        return None, None
    try:
        test = load_mnist("test", data_dir)
    except DataError:
        return clf.info.get("test_accuracy"), clf.info.get("pgd_accuracy")
    apply_fn = lambda p, x: clf.apply_fn(p, clf._to_range(x))  # noqa: E731 - images in [0, 1]
    return (accuracy(apply_fn, clf.params, test.images, test.labels),
            pgd_accuracy(apply_fn, clf.params, test.images[:1000], test.labels[:1000]))


def model_rows(out_dir: str, models: list[str], labels: list[str], data_dir: str | None = None) -> list[dict]:
    """One row per model from its point's ``summary.json``, with the sweep's statistics."""
    rows = []
    for spec, label in zip(models, labels):
        point = {"classifier": spec}
        with open(os.path.join(out_dir, "points", point_name(point), "summary.json")) as f:
            summary = json.load(f)
        clean, robust = accuracies(spec, data_dir)
        regularity = [s["regularity"] for s in summary["seeds"]]
        row = summary_row(point, summary)
        to_99 = seed_table(summary, 0.99)  # where few seeds reach 99.99 % (ImageNet), 99 % still ranks the models
        rows.append({
            "model": label,
            "test_accuracy": None if clean is None else round(clean, 4),
            "pgd_accuracy": None if robust is None else round(robust, 4),
            "evaluation_budget": summary["evaluation_budget"],
            **{k: v for k, v in row.items() if k != "classifier"},
            **{k: v for k, v in to_99.items() if "evaluations_to" in k},
            "seeds_censored_0.99": to_99["seeds_censored"],
            "neighbour_correlation": round(float(np.mean([r["neighbour_correlation"] for r in regularity])), 3),
            "png_bits_per_pixel": round(float(np.mean([r["png_bits_per_pixel"] for r in regularity])), 2),
            "_times": [s.get("evaluations_to_0.9999") for s in summary["seeds"]],
            "_times_99": [s.get("evaluations_to_0.99") for s in summary["seeds"]],
            "_budgets": [s["evaluations"] for s in summary["seeds"]],
            "_dir": os.path.join("points", point_name(point)),
            "_first_seed": _first_seed_elites(os.path.join(out_dir, "points", point_name(point)), summary),
        })
    return rows


def _first_seed_elites(point_dir: str, summary: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first seed's elites ``[C, H, W, ch]`` as saved (PNG), their confidences and names."""
    classes = [c["index"] for c in summary["classes"]]
    names = [c["name"] for c in summary["classes"]]
    seeds = [s["seed"] for s in summary["seeds"]]
    paths = pictures.elite_paths(point_dir, classes, names, seeds)[0]
    images = np.stack([pictures.load_png(p) for p in paths])
    return images, np.asarray(summary["seeds"][0]["best_confidence"]), names


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    """``images [C, H, W, ch]`` in [0, 1] resized to ``size x size`` for display (Lite1 and Lite2
    see 240 and 260 pixels, Lite0 224)."""
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(pictures.to_uint8(im)).resize((size, size), Image.BILINEAR), np.float32)
                     .reshape(size, size, images.shape[-1]) / 255.0 for im in images])


def write_outputs(out_dir: str, rows: list[dict]) -> None:
    """``susceptibility.csv``, ``.png`` and ``.html``."""
    write_csv(os.path.join(out_dir, "susceptibility.csv"), [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    plt = pictures.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, r in enumerate(rows):
        for times, censored, style, level in ((r["_times"], r["seeds_censored"], "-", "99.99 %"),
                                              (r["_times_99"], r["seeds_censored_0.99"], ":", "99 %")):
            x, share = done_curve(times, r["_budgets"])
            x, share = np.append(x, r["evaluation_budget"]), np.append(share, share[-1])
            left.step(x, share, style, where="post", color=f"C{i}", label=f"{r['model']}, {level} ({censored}/{r['seeds']} censored)")
    left.set(title="share of seeds that fooled every class at 99.99 % (solid) and 99 % (dotted)\n(Kaplan-Meier; censored at the budget)",
             xlabel="evaluations", ylabel="share of seeds done", ylim=(-0.02, 1.02))
    left.legend(fontsize=7, loc="lower right")
    x = np.arange(len(rows))
    for offset, level, color in ((-0.2, "0.99", "#4c72b0"), (0.2, "0.9999", "#dd8452")):
        means = np.array([r[f"share_classes_fooled_{level}"] for r in rows])
        ci = [r[f"share_classes_fooled_{level}_ci95"].split("..") for r in rows]
        low = np.array([float(c[0]) if c[0] != "inf" else m for c, m in zip(ci, means)])
        high = np.array([float(c[1]) if c[1] != "inf" else m for c, m in zip(ci, means)])
        right.bar(x + offset, means, 0.4, color=color, label=f">= {float(level) * 100:g} %")
        right.errorbar(x + offset, means, yerr=[means - low, high - means], fmt="none", ecolor="k", capsize=3)
    right.set_xticks(x, [r["model"] for r in rows], fontsize=8, rotation=15)
    right.set(title="classes fooled within the budget\n(mean over seeds, bootstrap 95 % interval)", ylabel="share of classes",
              ylim=(0, 1.05))
    right.legend(fontsize=8)
    fig.tight_layout()
    plot = os.path.join(out_dir, "susceptibility.png")
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    side_by_side = os.path.join(out_dir, "side_by_side.png")
    if len({r["_first_seed"][0].shape[-1] for r in rows}) == 1 and len({len(r["_first_seed"][0]) for r in rows}) == 1:
        # one row per model: the first seed's elites, shown at the smallest model's resolution
        size = min(min(r["_first_seed"][0].shape[1:3]) for r in rows)
        shown = np.stack([_resized(r["_first_seed"][0], size) for r in rows])
        pictures.elites_grid(side_by_side, shown, np.stack([r["_first_seed"][1] for r in rows]),
                             rows[0]["_first_seed"][2], row_labels=[r["model"] for r in rows],
                             title=f"first seed's elites after {rows[0]['evaluation_budget']:,} evaluations")
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>jaxfool susceptibility</title>"
             "<style>body{font-family:sans-serif;margin:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
             "table{border-collapse:collapse}img{image-rendering:pixelated}</style></head><body>",
             f"<h1>Fooling susceptibility: {len(rows)} models, {rows[0]['seeds']} seeds each, "
             f"budget {rows[0]['evaluation_budget']:,} evaluations</h1>",
             f"<img alt='share of seeds done against evaluations; classes fooled' src='{_data_uri(open(plot, 'rb').read())}'>",
             *([f"<h2>Side by side</h2><img alt='the first seed of each model' src='{_data_uri(open(side_by_side, 'rb').read())}'>"]
               if os.path.exists(side_by_side) else []),
             "<table><tr><th>model</th><th>test accuracy</th><th>PGD accuracy (eps 0.3)</th>"
             "<th>classes fooled at 99% / 99.99%</th><th>median best confidence</th><th>evaluations to 99% in every class: median [95% CI]</th>"
             "<th>evaluations to 99.99% in every class: median [95% CI]; IQM</th>"
             "<th>neighbour correlation</th><th>elites (first seed)</th></tr>"]
    for r in rows:
        grid = os.path.join(out_dir, r["_dir"], "elites.png")
        img = f"<img style='max-width:600px' alt='elites of {e(r['model'])}' src='{_data_uri(open(grid, 'rb').read())}'>" if os.path.exists(grid) else "-"
        acc = "-" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.2f}%"
        pgd = "-" if r["pgd_accuracy"] is None else f"{100 * r['pgd_accuracy']:.1f}%"
        parts.append(f"<tr><td>{e(r['model'])}</td><td>{acc}</td><td>{pgd}</td>"
                     f"<td>{100 * r['share_classes_fooled_0.99']:.0f}% [{e(r['share_classes_fooled_0.99_ci95'])}] / "
                     f"{100 * r['share_classes_fooled_0.9999']:.0f}% [{e(r['share_classes_fooled_0.9999_ci95'])}]</td>"
                     f"<td>{100 * r['median_best_confidence']:.4f}%</td><td>{e(evaluations_cell(r, '0.99'))}</td>"
                     f"<td>{e(evaluations_cell(r))}</td><td>{r['neighbour_correlation']}</td><td>{img}</td></tr>")
    parts.append("</table></body></html>")
    with open(os.path.join(out_dir, "susceptibility.html"), "w") as f:
        f.write("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT, help=f"one preset for every model (default: {DEFAULT}, what scripts/run.py runs)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated classifiers (default: {DEFAULT_MODELS})")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per model (default: 8)")
    parser.add_argument("--generations", type=int, default=200, help="the budget in generations of the preset's batch (default: 200)")
    parser.add_argument("--classes", default="", help="cells for these classes only (comma-separated names or indices)")
    parser.add_argument("--data", default=None, help="MNIST directory for training the PyTorch LeNet-5 (default: $JAXFOOL_DATA)")
    parser.add_argument("--out", default="runs/susceptibility", help="output directory (default: runs/susceptibility)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    labels = [m for m in args.models.split(",") if m]
    # Beside the output directory, not in it: a sweep directory holds only the sweep's own files.
    lenet5 = os.path.join(os.path.dirname(os.path.abspath(args.out)), "torch-lenet5.pt2")
    models = [f"torch:{train_torch_lenet5(lenet5, args.data)}" if m == "torch-lenet5" else m for m in labels]
    overrides = {"seeds": args.seeds, "generations": args.generations}
    if args.classes:
        overrides["classes"] = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    run_sweep(args.preset, {"classifier": models}, args.out, overrides, progress_bar=not args.quiet)
    rows = model_rows(args.out, models, labels, args.data)
    write_outputs(args.out, rows)
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}), flush=True)
    print(f"wrote {args.out}/susceptibility.csv, susceptibility.png and susceptibility.html")


if __name__ == "__main__":
    main()
