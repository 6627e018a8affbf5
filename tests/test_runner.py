import json
import math
import os
import random
import signal
import time

import jax
import numpy as np
import pytest

from conftest import run_and_kill, run_script
from jaxfool import checkpointing, pictures
from jaxfool.errors import CheckpointError, ConfigError
from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds, seed_keys
from jaxfool.presets import load_preset
from jaxfool.runner import resume_config, run

# A run that takes a few seconds, so that it can be interrupted mid-way.
LONG = dict(batch=50, generations=300, chunk=5, checkpoint_every=10, stop_when_fooled=False)
LONG_FLAGS = ["--preset", "mnist-direct", "--batch", "50", "--generations", "300", "--chunk", "5",
              "--checkpoint-every", "10", "--no-stop-when-fooled", "--quiet"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    return out, run(load_preset(), out, progress_bar=False)


def test_default_run_fools_and_writes_everything(default_run):
    out, summary = default_run
    for name in ("config.json", "metrics.jsonl", "summary.json", "elites.png", "progress.png", "checkpoints"):
        assert os.path.exists(os.path.join(out, name)), name
    assert summary["all_fooled"] and len(summary["seeds"]) == 1
    seed = summary["seeds"][0]
    assert min(seed["best_confidence"]) >= 0.9999
    assert seed["generations_to_0.9999"] == seed["generations"] <= 50
    assert seed["evaluations"] == 200 * (seed["generations"] + 1)
    assert seed["generations_to_0.99"] <= seed["generations_to_0.9999"]
    assert max(seed["generations_to_0.9999_per_class"]) == seed["generations"]
    assert seed["evaluations_to_0.9999_per_class"] == [200 * (g + 1) for g in seed["generations_to_0.9999_per_class"]]
    assert summary["versions"]["jax"] == jax.__version__ and summary["device"]["platform"] == "cpu"
    lines = open(os.path.join(out, "metrics.jsonl")).read().splitlines()
    assert [json.loads(l)["generation"] for l in lines] == list(range(seed["generations"] + 1))


def test_saved_pngs_fool_the_network_as_scored(default_run, lenet):
    out, summary = default_run
    for c, name in enumerate(lenet.class_names):
        path = os.path.join(out, "elites", f"{c}_{name}.png")
        image = pictures.load_png(path, channels=1)
        assert image.shape == (28, 28, 1)
        rescored = float(jax.nn.log_softmax(lenet.logits(image[None]))[0, c])
        assert rescored == pytest.approx(math.log(summary["seeds"][0]["best_confidence"][c]), abs=1e-5)
        assert math.exp(rescored) >= 0.9999


def test_several_seeds_write_per_seed_outputs(tmp_path):
    summary = run(load_preset(seeds=2, seed=7, generations=3), str(tmp_path), progress_bar=False)
    assert [s["seed"] for s in summary["seeds"]] == [7, 8]
    for s in (7, 8):
        assert os.path.exists(tmp_path / "elites" / f"seed{s}" / "3_three.png")
    assert all(s["generations"] == 3 for s in summary["seeds"])


def _final_state(out_dir, config):
    exp = build_experiment(config)
    like = init_seeds(exp.engine, exp.lane_params(), seed_keys(exp.seeds))
    return checkpointing.restore_checkpoint(os.path.join(out_dir, "checkpoints"), like)


def _assert_same_run(a_dir, b_dir, config):
    step_a, state_a, _ = _final_state(a_dir, config)
    step_b, state_b, _ = _final_state(b_dir, config)
    assert step_a == step_b
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(x, y)
    assert open(os.path.join(a_dir, "metrics.jsonl")).read() == open(os.path.join(b_dir, "metrics.jsonl")).read()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("whole"))
    run(load_preset("mnist-direct", **LONG), out, progress_bar=False)
    return out


@pytest.fixture(scope="module")
def run_span(tmp_path_factory):
    """Seconds from a run's config.json to its exit, uninterrupted: the window the killer aims at."""
    out = tmp_path_factory.mktemp("span")
    code, err, span = run_and_kill("run.py", [*LONG_FLAGS, "--out", str(out)], str(out / "config.json"), delay=None,
                                   checkpoints_glob=(str(out), "checkpoints", "*"), at_step=10**9)
    assert code == 0, err
    return span


@pytest.mark.slow
@pytest.mark.parametrize("killer", [None, 1, 2, 3])
def test_killed_run_resumes_bit_identical(uninterrupted, run_span, tmp_path, killer):
    """kill -9 once checkpoint 20 exists (killer None), or at a moment drawn by the killer's seed
    anywhere in the run (compiling, mid-chunk, mid-checkpoint, writing pictures), then --resume."""
    out = str(tmp_path / "killed")
    delay = None if killer is None else random.Random(killer).uniform(0, 0.95 * run_span)
    code, err, _ = run_and_kill("run.py", [*LONG_FLAGS, "--out", out], os.path.join(out, "config.json"), delay,
                                checkpoints_glob=(out, "checkpoints", "*"), at_step=20)
    assert code == -signal.SIGKILL, f"the run was not killed mid-way (exit {code}): {err}"
    proc = run_script("run.py", "--resume", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    _assert_same_run(uninterrupted, out, load_preset("mnist-direct", **LONG))


@pytest.mark.slow
def test_ctrl_c_saves_and_resumes_bit_identical(uninterrupted, tmp_path):
    out = str(tmp_path / "interrupted")
    code, err, _ = run_and_kill("run.py", [*LONG_FLAGS, "--out", out], os.path.join(out, "config.json"), None,
                                checkpoints_glob=(out, "checkpoints", "*"), at_step=20, sig=signal.SIGINT)
    assert code == 130, err
    assert "--resume" in err and os.path.exists(os.path.join(out, "elites.png"))
    run(resume_config(out), out, resume=True, progress_bar=False)
    _assert_same_run(uninterrupted, out, load_preset("mnist-direct", **LONG))


def test_ctrl_c_inside_a_finalizer_still_stops_the_run_after_its_chunk():
    """Python drops a KeyboardInterrupt raised in a finalizer (or a background thread), so a
    Ctrl-C arriving there was once lost and the run went on; now it stops after the chunk."""
    from jaxfool.evolution import Lanes, evolve

    class SignalsWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)

    class Observer:
        chunks, ended = 0, None

        def start(self, result):
            pass

        def chunk(self, result, generations, fitness):
            self.chunks += 1
            if self.chunks == 2:
                SignalsWhenCollected()  # collected at once: the signal lands inside __del__

        def end(self, result):
            self.ended = result.stopped

    observer = Observer()
    exp = build_experiment(load_preset("mnist-direct", batch=20, generations=100, chunk=5, stop_when_fooled=False))
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore it)
    try:
        with pytest.raises(KeyboardInterrupt):
            evolve(Lanes.of([exp]), [observer])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, before)
    assert observer.chunks == 2 and observer.ended == "interrupted"


def test_resume_can_extend_but_not_change(tmp_path):
    out = str(tmp_path)
    run(load_preset(generations=2, stop_when_fooled=False), out, progress_bar=False)
    assert resume_config(out, generations=4).generations == 4
    with pytest.raises(ConfigError, match="cannot change batch when resuming"):
        resume_config(out, batch=100)
    summary = run(resume_config(out, generations=4), out, resume=True, progress_bar=False)
    assert summary["seeds"][0]["generations"] == 4
    with pytest.raises(CheckpointError, match="not a run directory"):
        resume_config(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--batch", "0"], "error: batch must be >= 1, got 0"),
        (["--mutation-rate", "-0.1"], "error: mutation_rate must be in [0, 1], got -0.1"),
        (["--encoding", "fourier"], "error: unknown encoding 'fourier'; choose one of direct, cppn"),
        (["--classifier", "alexnet"], "error: unknown classifier 'alexnet'"),
        (["--preset", "imagenet-everything"], "error: unknown preset 'imagenet-everything'"),
        (["--classes", "eleven"], "error: lenet-mnist has no class named 'eleven'"),
        (["--encoding", "cppn", "--init-layers", "8,8"], "error: init_layers must be widths >= 1 summing to at most max_hidden (12), got 8,8"),
        (["--encoding", "cppn", "--init-layers", "6,6"], "error: max_conns must be >= 66 (the starting layers joined fully), got 48"),
        (["--resume", "/nonexistent/run"], "error: /nonexistent/run is not a run directory (no config.json)"),
    ],
)
def test_bad_flags_give_one_line(flags, message, tmp_path):
    out = [] if "--resume" in flags else ["--out", str(tmp_path / "x")]  # --out and --resume exclude each other
    proc = run_script("run.py", *flags, *out, "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_flag_type_is_an_argparse_error(tmp_path):
    proc = run_script("run.py", "--batch", "many", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "batch must be int, got 'many'" in proc.stderr
    proc = run_script("run.py", "--init-layers", "12,x", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "init_layers must be a comma-separated list of int, got '12,x'" in proc.stderr


def test_help_lists_every_field_with_defaults():
    proc = run_script("run.py", "--help")
    assert proc.returncode == 0
    for flag in ("--batch", "--mutation-rate", "--mutation-eta", "--selection", "--recombine", "--seeds", "--resume", "--preset"):
        assert flag in proc.stdout
    assert "(default: 200)" in proc.stdout and "(default: 0.1)" in proc.stdout


def test_run_script_smoke(tmp_path):
    proc = run_script("run.py", "--generations", "2", "--seeds", "2", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "seed 0:" in proc.stdout and "seed 1:" in proc.stdout
    assert json.load(open(tmp_path / "summary.json"))["config"]["seeds"] == 2


def test_time_limit_stops_a_run_resumably(tmp_path):
    start = time.perf_counter()
    summary = run(load_preset("mnist-direct", generations=100000, stop_when_fooled=False, chunk=5), str(tmp_path),
                  progress_bar=False, time_limit=3.0)
    assert time.perf_counter() - start < 30
    assert 0 < summary["seeds"][0]["generations"] < 100000
    step = checkpointing.latest_step(str(tmp_path / "checkpoints"))
    assert step == summary["seeds"][0]["generations"]


@pytest.mark.slow
def test_a_thousand_classes_paginate_and_summarise(tmp_path):
    """The ImageNet-sized output paths, with a fast stand-in network of 1000 classes."""

    from jaxfool.experiment import build_experiment
    from jaxfool.models.classifier import Classifier

    w = jax.random.normal(jax.random.key(0), (8 * 8 * 3, 1000))
    net = Classifier("toy-1000", lambda p, x: 4 * x.reshape(len(x), -1) @ p, w, (8, 8, 3), tuple(f"class {i}" for i in range(1000)))
    config = load_preset("mnist-cppn", color_space="hls", batch=64, generations=4, chunk=2)
    summary = run(build_experiment(config, classifier=net), str(tmp_path), progress_bar=False)
    assert len(summary["seeds"][0]["best_confidence"]) == 1000
    assert sorted(p.name for p in tmp_path.glob("elites-*.png")) == [f"elites-{i:03d}.png" for i in range(1, 11)]
    assert len(list((tmp_path / "elites").glob("*.png"))) == 1000 and (tmp_path / "elites" / "999_class_999.png").exists()
    last = json.loads(open(tmp_path / "metrics.jsonl").read().splitlines()[-1])
    assert len(last["seeds"][0]["log_confidence_quantiles"]) == 5 and "log_confidence" not in last["seeds"][0]
    assert (tmp_path / "progress.png").exists() and (tmp_path / "report.html").stat().st_size > 0


def _events(folder):
    """Every (tag, step, value or image) in the TensorBoard event files under ``folder``."""
    import struct

    from tensorboardX.proto import event_pb2

    found = []
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            data = open(os.path.join(root, name), "rb").read()
            at = 0
            while at < len(data):  # TFRecord: length, its crc, the Event bytes, their crc
                (length,) = struct.unpack("<Q", data[at : at + 8])
                event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
                at += 16 + length
                for v in event.summary.value:
                    found.append((os.path.relpath(root, folder), v.tag, event.step, v.simple_value if v.HasField("simple_value") else v.image))
    return found


def test_tensorboard_events_can_be_read_back(tmp_path):
    summary = run(load_preset(seeds=2, generations=12, chunk=4, tensorboard=True), str(tmp_path), progress_bar=False)
    events = _events(tmp_path / "tensorboard")
    fooled = {(step, v) for where, tag, step, v in events if tag == "seed1/fooled_cells"}
    assert len(fooled) == summary["seeds"][1]["generations"] + 1  # generation 0 and every generation after
    final = max(fooled)
    assert final[1] == summary["seeds"][1]["classes_fooled"]
    three = [(step, v) for where, tag, step, v in events if where == os.path.join("seed0", "best_confidence", "three")]
    assert max(three)[1] == pytest.approx(summary["seeds"][0]["best_confidence"][3], rel=1e-6)
    (image,) = [v for _, tag, _, v in events if tag == "elites"]
    assert (image.height, image.width) == (2 * 28, 10 * 28)  # one row of ten elites per seed
    assert any(tag == "evals_per_s" and v > 0 for _, tag, _, v in events)


def test_progress_bar_ends_by_saying_why_it_stopped(tmp_path, capfd):
    run(load_preset(), str(tmp_path / "fooled"), progress_bar=True)
    final = capfd.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("100%") and "fooled 10/10" in final and "[all fooled by generation" in final
    run(load_preset(generations=3), str(tmp_path / "capped"), progress_bar=True)
    final = capfd.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "[generation cap]" in final and "3/3" in final


def test_a_run_that_leaves_classes_unfooled_says_so(tmp_path):
    proc = run_script("run.py", "--generations", "2", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("seed 0:")]
    assert "/10 classes >= 99.99% after 2 generations" in line and "stopped: generation cap" in proc.stdout
