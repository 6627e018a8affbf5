"""Smoke tests of the benchmark CLIs on tiny settings: they run and print well-formed rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_script


def _rows(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _bench(name: str, *args: str) -> list[dict]:
    proc = run_script(name, *args, folder="benchmarks", env={"JAXFOOL_CACHE": "off"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _rows(proc.stdout)


def test_throughput_benchmark_compares_step_with_forward():
    rows = _bench("throughput.py", "--presets", "mnist-direct-fast", "--batches", "32",
                  "--generations", "2", "--repeats", "1", "--seeds", "")
    (row,) = [r for r in rows if "ratio" in r]
    assert row["batch"] == 32 and row["forward_evals_per_s"] > 0 and row["step_evals_per_s"] > 0
    assert abs(row["ratio"] - row["step_evals_per_s"] / row["forward_evals_per_s"]) < 0.01


def test_throughput_benchmark_compares_numbers_of_cells():
    rows = _bench("throughput.py", "--presets", "mnist-direct-fast", "--batches", "32", "--cells", "2,10",
                  "--generations", "2", "--repeats", "1", "--grow", "0", "--seeds", "")
    few, many = [r for r in rows if "ratio" in r]
    assert (few["cells"], many["cells"]) == (2, 10) and few["state_mib"] < many["state_mib"]  # 5x the elites
    (compared,) = [r for r in rows if "step_10_over_2_cells" in r]
    assert compared["step_10_over_2_cells"] == round(many["step_evals_per_s"] / few["step_evals_per_s"], 3)


def test_emitters_benchmark_counts_evaluations_to_fool():
    rows = _bench("emitters.py", "--seeds", "1", "--generations", "60", "--only", "(default)")
    (row,) = rows
    assert "default" in row["method"] and row["seeds_fooled"] == "1/1"
    # Every evaluation is one image of 200 per generation, plus the initial population.
    assert row["per_seed"][0] % 200 == 0 and row["per_seed"][0] <= 61 * 200


@pytest.mark.slow
def test_scaling_benchmark_runs_each_device_count():
    rows = _bench("scaling.py", "--devices", "1,2", "--seeds", "2", "--batch", "16",
                  "--generations", "1", "--repeats", "1")
    assert [r["devices"] for r in rows] == [1, 2] and rows[0]["relative_to_first"] == 1.0
    assert all(r["evals_per_s"] > 0 for r in rows)


def test_peers_benchmark_reports_jaxfool_and_skips_missing_libraries():
    rows = _bench("peers.py", "--batch", "16", "--generations", "1", "--repeats", "1")
    measured = {r["library"]: r for r in rows if "evals_per_s" in r}
    skipped = {r["library"] for r in rows if "skipped" in r}
    assert measured["jaxfool"]["relative_to_jaxfool"] == 1.0
    assert set(measured) | skipped == {"jaxfool", "qdax", "pyribs"}


@pytest.mark.slow
def test_gpu_suite_runs_every_section_small_on_cpu():
    rows = _bench("gpu_suite.py", "--small")
    sections = [r["section"] for r in rows]
    assert sections[0] == "machine" and sections[-1] == "done"
    lenet = [r for r in rows if r["section"] == "lenet"]
    assert {r.get("renderer") for r in lenet if r["preset"] == "mnist-cppn"} == {"grouped", "unrolled"}
    assert all(r["step_evals_per_s"] > 0 and r["render_images_per_s"] > 0 for r in lenet)
    lite0 = [r for r in rows if r["section"] == "lite0"]
    assert {(r["preset"], r["compute_dtype"]) for r in lite0} == {
        (p, d) for p in ("imagenet-direct", "imagenet-cppn") for d in ("float32", "bfloat16")}
    fool = [r for r in rows if r["section"] == "fool"]
    assert len(fool) == 2 and all(r["run_wall_s_compiled"] < r["run_wall_s"] for r in fool)
    (seeds,) = [r for r in rows if r["section"] == "seeds"]
    assert seeds["seeds"] == 2 and seeds["all_fooled"]
    bridge = [r for r in rows if r["section"] == "torch"]
    try:
        import torchax  # noqa: F401
    except ImportError:
        assert len(bridge) == 1 and "skipped" in bridge[0]
    else:
        lite0_torch, *lenet5 = bridge
        assert lite0_torch["model"] == "efficientnet-lite0-torch" and lite0_torch["step_over_port_step"] > 0
        assert [r["batch"] for r in lenet5] == [32, 64] and all(r["ratio"] > 0 for r in lenet5)


@pytest.mark.slow
def test_susceptibility_benchmark_counts_censored_seeds(tmp_path):
    """Two models, 3 seeds, a budget too small for every seed to finish: the table has one row
    per model whose statistics agree with its points' summaries, censored seeds included."""
    out = tmp_path / "s"
    rows = _bench("susceptibility.py", "--models", "lenet-mnist,mlp-mnist", "--seeds", "3", "--generations", "12",
                  "--out", str(out), "--quiet")
    assert [r["model"] for r in rows] == ["lenet-mnist", "mlp-mnist"]
    for row in rows:
        summary = json.loads((out / "points" / f"classifier={row['model']}" / "summary.json").read_text())
        times = [s["evaluations_to_0.9999"] for s in summary["seeds"]]
        assert row["seeds"] == 3 and row["seeds_censored"] == sum(t is None for t in times)
        assert row["evaluation_budget"] == summary["evaluation_budget"] == 13 * 200
        shares = [s["fraction_at_least_0.99"] for s in summary["seeds"]]
        assert row["share_classes_fooled_0.99"] == round(sum(shares) / 3, 4)
        to_99 = [s["evaluations_to_0.99"] for s in summary["seeds"]]  # the same statistics at 99 %
        assert row["seeds_censored_0.99"] == sum(t is None for t in to_99)
        if None not in to_99:
            assert row["median_evaluations_to_0.99"] == np.median(to_99)
    assert rows[0]["test_accuracy"] > 0.99 and rows[1]["test_accuracy"] > 0.98  # measured on MNIST's test set
    assert rows[1]["pgd_accuracy"] < 0.05  # a plainly trained MLP falls to PGD at eps 0.3
    for name in ("susceptibility.csv", "susceptibility.png", "side_by_side.png", "susceptibility.html", "sweep.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / "susceptibility.html").read_text().count("<img") == 4  # the plots and each model's elites


@pytest.mark.slow
def test_ten_crop_benchmark_rescores_the_same_elites_both_ways(tmp_path):
    from jaxfool.presets import load_preset
    from jaxfool.runner import run

    out = tmp_path / "run"
    summary = run(load_preset("mnist-cppn", generations=3, batch=40), str(out), progress_bar=False)
    (row,) = _bench("ten_crop.py", str(out), "--batch", "4", "--repeats", "1")
    assert row["elites"] == 10 and (row["one_crop"]["side"], row["ten_crop"]["side"]) == (28, 32)
    # one crop at the network's size is how the run scored its elites
    assert row["one_crop"]["median_confidence"] == pytest.approx(summary["seeds"][0]["median_confidence"], rel=1e-4)
    assert row["ten_crop"]["median_confidence"] != row["one_crop"]["median_confidence"]
    assert row["ten_crop_time_over_one"] > 1  # ten forward passes per image
    proc = run_script("ten_crop.py", str(tmp_path), folder="benchmarks")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path} is not a run directory (no config.json)"


def test_rescore_benchmark_reads_the_elites_back_from_their_pngs(tmp_path):
    from jaxfool.presets import load_preset
    from jaxfool.runner import run

    runs = []
    for name, emitters in (("paper", ("mutation",)), ("gradient", ("mutation", "gradient"))):
        runs.append(tmp_path / name)
        run(load_preset("mnist-direct", generations=4, emitters=emitters, stop_when_fooled=False), str(runs[-1]), progress_bar=False)
    proc = run_script("rescore.py", *map(str, runs), folder="benchmarks")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(proc.stdout)
    for row, out in zip(rows, runs):
        summary = json.loads((out / "summary.json").read_text())["seeds"][0]
        assert row["max_abs_difference_from_reported"] < 1e-5  # the PNGs hold what the run scored
        assert row["median"] == pytest.approx(summary["median_confidence"], abs=1e-5)
        assert row["evaluations"] == summary["evaluations"] and 0 <= row["neighbour_correlation"] <= 1
    assert rows[1]["evaluations"] == 200 + 4 * (190 + 3 * 10)  # a gradient step counts forward and backward
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 10 + 2 and table[-2].startswith("| **median** |")
    (tmp_path / "half").mkdir()
    proc = run_script("rescore.py", str(tmp_path / "half"), folder="benchmarks")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'half'} has no summary.json: not a finished run"
