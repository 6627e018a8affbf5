import base64
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from conftest import run_script
from jaxfool.presets import load_preset
from jaxfool.report import write_report
from jaxfool.runner import run


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.figcaptions, self.tags, self._in_caption = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        self._in_caption = tag == "figcaption" or self._in_caption

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        if self._in_caption:
            self.figcaptions.append(data)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    run(load_preset(seeds=2, generations=40), out, progress_bar=False)
    return out


def test_report_is_self_contained_and_shows_every_elite(two_seeds):
    path = os.path.join(two_seeds, "report.html")
    assert os.path.exists(path)  # written by every run
    text = open(path).read()
    parser = _Collect()
    parser.feed(text)
    gallery = [i for i in parser.images if i.get("alt") in [str(n) for n in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")]]
    assert len(gallery) == 20  # 2 seeds x 10 classes
    for img in parser.images:  # every picture embedded, none linked
        assert img["src"].startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).verify()
    assert any("99.99" in c for c in parser.figcaptions)
    for heading in ("Elites", "Evaluations to fool each class", "Progress", "Configuration", "Environment"):
        assert heading in text
    assert "src='http" not in text and 'src="http' not in text
    assert text.count("<table>") == 3 and "seed 1" in text
    assert "A <em>fooling image</em> is a picture" in text  # the page says what the reader looks at
    config_rows = text[text.index("<h2>Configuration</h2>"):text.index("<h2>Environment</h2>")]
    assert "mutation_rate" in config_rows and "recombine_scale" in config_rows
    assert "max_hidden" not in config_rows and "add_node_rate" not in config_rows  # no CPPN settings in a direct run


def test_cppn_report_hides_direct_settings(tmp_path):
    run(load_preset("mnist-cppn", generations=2), str(tmp_path), progress_bar=False)
    text = open(tmp_path / "report.html").read()
    config_rows = text[text.index("<h2>Configuration</h2>"):text.index("<h2>Environment</h2>")]
    assert "max_hidden" in config_rows and "add_node_rate" in config_rows and "recombine_scale" not in config_rows


def test_report_renders_in_a_browser(two_seeds, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless browser here (install Debian's chromium to render the report)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400", f"--screenshot={shot}",
         "file://" + os.path.join(two_seeds, "report.html")],
        check=True, capture_output=True, timeout=120,
    )
    image = Image.open(shot).convert("L")
    # a rendered page with pictures is far from blank: many distinct gray levels
    assert len(set(image.getdata())) > 50


def test_report_script(two_seeds, tmp_path):
    out = str(tmp_path / "r.html")
    proc = run_script("report.py", two_seeds, "--out", out)
    assert proc.returncode == 0 and os.path.exists(out)
    proc = run_script("report.py", str(tmp_path))
    assert proc.returncode == 2 and "not a finished run directory" in proc.stderr


def test_write_report_for_a_big_image_run_uses_thumbnails(tmp_path):
    import json

    import numpy as np

    from jaxfool import pictures

    run_dir = str(tmp_path)
    names = [f"class {i}" for i in range(3)]
    pictures.save_elites(run_dir, np.random.default_rng(0).random((1, 3, 224, 224, 3)), [0, 1, 2], names)
    summary = {
        "classifier": "big", "config": {"encoding": "cppn", "threshold": 0.99, "batch": 10, "generations": 5},
        "classes": [{"index": i, "name": n} for i, n in enumerate(names)],
        "seeds": [{"seed": 0, "classes_fooled": 1, "evaluations": 60, "best_confidence": [0.995, 0.5, 0.2],
                   "generations_to_0.99_per_class": [3, None, None], "evaluations_to_0.99_per_class": [40, None, None]}],
        "evaluation_budget": 60, "wall_time_s": 1.0, "device": {"kind": "cpu", "count": 1}, "versions": {"jax": "x"}, "evals_per_s": None,
    }
    json.dump(summary, open(os.path.join(run_dir, "summary.json"), "w"))
    text = open(write_report(run_dir)).read()
    assert "not fooled" in text and "class='miss'" in text
    parser = _Collect()
    parser.feed(text)
    thumb = Image.open(io.BytesIO(base64.b64decode(parser.images[0]["src"].split(",", 1)[1])))
    assert max(thumb.size) <= 96


STAND_IN_1000 = """
import jax, jax.numpy as jnp
def make():  # 1000 classes over 8x8 colour images: a fixed random linear map, a stand-in for ImageNet
    w = jax.random.normal(jax.random.key(0), (8 * 8 * 3, 1000)) * 3.0
    return (lambda p, x: x.reshape(x.shape[0], -1) @ p), w, (8, 8, 3), [f"class {i}" for i in range(1000)]
"""


@pytest.mark.slow
def test_a_1000_class_run_writes_classes_csv_and_a_paginated_report(tmp_path, monkeypatch):
    import csv
    import json

    (tmp_path / "standin1000.py").write_text(STAND_IN_1000)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    config = load_preset("mnist-cppn", classifier="standin1000:make", color_space="hls", batch=64, generations=4, chunk=2)
    summary = run(config, str(out), progress_bar=False)
    seed = summary["seeds"][0]
    best = seed["best_confidence"]
    assert len(best) == 1000 and seed["median_confidence"] == pytest.approx(sorted(best)[499] / 2 + sorted(best)[500] / 2)
    assert seed["fraction_at_least_0.99"] == pytest.approx(sum(b >= 0.99 for b in best) / 1000)

    rows = list(csv.DictReader(open(out / "classes.csv")))
    assert [r["name"] for r in rows] == [f"class {i}" for i in range(1000)]
    assert [float(r["best_confidence"]) for r in rows] == pytest.approx(best)
    reached = seed["generations_to_0.99_per_class"]
    assert [r["generation_0.99"] for r in rows] == ["" if g is None else str(g) for g in reached]
    assert any(g is not None for g in reached) and any(g is None for g in reached)  # the file tells them apart

    pages = ["report.html"] + [f"report-{i:03d}.html" for i in range(2, 11)]
    assert sorted(p.name for p in out.glob("report*.html")) == sorted(pages)
    for i, page in enumerate(pages):
        parser = _Collect()
        parser.feed(open(out / page).read())
        shown = [img["alt"] for img in parser.images if img.get("alt", "").startswith("class ")]
        assert shown == [f"class {c}" for c in range(100 * i, 100 * i + 100)]  # its own 100 classes, in order
        text = open(out / page).read()
        assert all(f"href='{p}'" in text for p in pages)  # every page links to every page
    first = open(out / "report.html").read()
    assert f"median best confidence over the classes {100 * seed['median_confidence']:.2f}%" in first
    assert json.load(open(out / "summary.json"))["seeds"][0]["median_confidence"] == seed["median_confidence"]
