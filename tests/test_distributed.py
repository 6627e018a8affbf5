"""Same config, same seed: the same archive on 1 device, 8 devices and 2 processes."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, free_port
from jaxfool import checkpointing
from jaxfool.distributed import make_plan
from jaxfool.errors import ConfigError
from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds, seed_keys
from jaxfool.presets import load_preset

FLAGS = ["--seeds", "4", "--generations", "12", "--chunk", "4", "--no-stop-when-fooled", "--quiet"]


def _run(out, *extra, devices=1, env=None):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAXFOOL_CACHE": "off", **(env or {})}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "run.py"), *FLAGS, "--out", str(out), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_state(out):
    exp = build_experiment(load_preset(seeds=4, generations=12, chunk=4, stop_when_fooled=False))
    like = init_seeds(exp.engine, exp.lane_params(), seed_keys(exp.seeds))
    return checkpointing.restore_checkpoint(os.path.join(out, "checkpoints"), like)[1]


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(_final_state(a)), jax.tree.leaves(_final_state(b))):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    proc = _run(out)
    assert proc.wait(600) == 0, proc.stderr.read()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("shard,devices", [("batch", 8), ("lanes", 4)])
def test_many_devices_give_identical_archives(one_device, tmp_path, shard, devices):
    proc = _run(tmp_path, "--shard", shard, devices=devices)
    assert proc.wait(600) == 0, proc.stderr.read()
    import json

    assert json.load(open(tmp_path / "summary.json"))["device"]["count"] == devices
    _assert_same(one_device, tmp_path)


@pytest.mark.slow
def test_two_processes_give_identical_archives(one_device, tmp_path):
    common = ["--distributed", "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    procs = [_run(tmp_path, *common, "--process-id", str(i), devices=2) for i in (0, 1)]
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read()
    import json

    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["device"]["processes"] == 2 and summary["device"]["count"] == 4
    _assert_same(one_device, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["run.py", "sweep.py"])
def test_every_process_refuses_a_taken_directory_in_one_line(tmp_path, script):
    # Process 0 alone looks at the directory; the others must get its verdict (not hang in a
    # collective after process 0 has stopped, nor race its check by creating folders first).
    (tmp_path / "notes.txt").write_text("someone else's")
    common = ["--distributed", "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    extra = ["--grid", "mutation_rate=0.1,0.2"] if script == "sweep.py" else []
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAXFOOL_CACHE": "off"}
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", script), *FLAGS, *extra, "--out", str(tmp_path),
                               *common, "--process-id", str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 2, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "already holds files" in lines[0] and "Traceback" not in err, err[-2000:]
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # nothing created, nothing removed


def test_plans():
    assert make_plan("auto", 4, 200) is None  # one device here
    with pytest.raises(ConfigError, match="unknown sharding 'rows'"):
        make_plan("rows", 4, 200)


def test_distributed_flags_need_each_other(tmp_path):
    proc = _run(tmp_path, "--coordinator", "127.0.0.1:1")
    assert proc.wait(60) == 2 and "need --distributed" in proc.stderr.read()
