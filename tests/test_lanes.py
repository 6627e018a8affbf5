"""Lanes: a run's seeds and a sweep's points x seeds as one compiled program."""

import json
import logging
import os
import random
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, free_port, run_and_kill, run_script
from jaxfool import checkpointing
from jaxfool.errors import ConfigError
from jaxfool.evolution import Lanes, evolve
from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds
from jaxfool.presets import load_preset
from jaxfool.sweep import parse_grid, run_sweep


def _compiles(caplog, name: str) -> int:
    return sum(f"XLA compilation of jit({name})" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_sweep_compiles_once_per_static_group(tmp_path, caplog):
    # Batch sizes no other test uses, so no engine of this process can be reused.
    grid = parse_grid(["mutation_rate=0.05,0.1,0.15,0.2", "batch=37,41"])
    common = dict(seeds=2, generations=3, chunk=3, stop_when_fooled=False)
    caplog.set_level(logging.DEBUG)
    with jax.log_compiles():
        rows = run_sweep("mnist-direct", grid, str(tmp_path / "a"), common, log=lambda _: None)
    assert len(rows) == 8 and _compiles(caplog, "run_generations") == 2 and _compiles(caplog, "init_seeds") == 2
    caplog.clear()
    other = parse_grid(["mutation_eta=5,10,20,30", "batch=37,41"])  # another traced grid: nothing new to compile
    with jax.log_compiles():
        run_sweep("mnist-direct", other, str(tmp_path / "b"), common, log=lambda _: None)
    assert _compiles(caplog, "run_generations") == 0 and _compiles(caplog, "init_seeds") == 0


def test_a_lane_of_a_sweep_equals_the_run_alone():
    sweep = Lanes.of([build_experiment(load_preset(mutation_rate=r, seeds=2, threshold=t))
                      for r, t in ((0.1, 0.9999), (0.15, 0.99))])
    alone = Lanes.of([build_experiment(load_preset(mutation_rate=0.15, seed=1, threshold=0.99))])
    together, single = evolve(sweep), evolve(alone)
    # Lane 3 is mutation_rate=0.15, seed 1: bit-identical archive, counters and first crossings.
    for a, b in zip(jax.tree.leaves(together.state), jax.tree.leaves(single.state)):
        np.testing.assert_array_equal(np.asarray(a)[3], np.asarray(b)[0])
    assert together.generations[3] == single.generations[0] and together.evaluations[3] == single.evaluations[0]
    np.testing.assert_array_equal(together.reached[0.99][3], single.reached[0.99][0])
    # Lanes stopped independently: the 0.99 lanes stopped before the 0.9999 ones.
    assert together.generations[2:].max() < together.generations[:2].min()


def test_init_respects_weight_range():
    exp = build_experiment(load_preset("mnist-cppn", weight_range=0.5))
    state = init_seeds(exp.engine, exp.lane_params(), jax.numpy.stack([jax.random.key(0)]))
    weights = np.asarray(state.archive.genomes.weight)
    assert np.abs(weights).max() <= 0.5 and np.abs(weights).max() > 0.1


LANE_HLO = r"""
import jax
from jaxfool.distributed import make_plan
from jaxfool.evolution import Lanes, prepare
from jaxfool.experiment import build_experiment
from jaxfool.map_elites import run_generations
from jaxfool.presets import load_preset
for preset in ("mnist-direct-fast", "mnist-cppn"):
    lanes = Lanes.of([build_experiment(load_preset(preset, seeds=2, mutation_rate=r, chunk=2)) for r in (0.1, 0.2)])
    plan = make_plan("lanes", len(lanes), lanes.engine.batch_size)
    state, params, keys, _ = prepare(lanes, plan)
    hlo = run_generations.lower(lanes.engine, params, state, keys, 2, plan.lane_mesh).compile().as_text()
    found = [op for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter") if op in hlo]
    print(preset, jax.device_count(), "collectives:", found)
"""


@pytest.mark.slow
def test_lanes_split_over_devices_with_no_collectives():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAXFOOL_CACHE": "off"}
    proc = subprocess.run([sys.executable, "-c", LANE_HLO], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["mnist-direct-fast 4 collectives: []", "mnist-cppn 4 collectives: []"]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--grid", "seed=1,2"], "error: --grid seed: seeds are lanes of every point already"),
        (["--grid", "checkpoint_every=5,10"], "error: --grid checkpoint_every: a host setting"),
        (["--grid", "mutation_rate=0.1,fast"], "error: --grid mutation_rate: 'fast' is not a valid float"),
        (["--grid", "mutation_rate=0.1,2.0"], "error: mutation_rate must be in [0, 1], got 2.0"),
        (["--grid", "colour=red"], "error: unknown config field 'colour' in --grid"),
        (["--grid", "mutation_rate=0.1,0.2,0.3", "--shard", "lanes"], "error: 3 lanes (points x seeds) do not split evenly over 2 devices"),
    ],
)
def test_bad_sweeps_fail_in_one_line_before_compiling(tmp_path, flags, message):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_LOG_COMPILES": "1"}
    proc = run_script("sweep.py", "--seeds", "1", "--generations", "2", "--quiet", *flags, "--out", str(tmp_path), env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "run_generations" not in proc.stderr  # nothing compiled
    assert not (tmp_path / "points").exists()


SWEEP = ["--preset", "mnist-direct", "--grid", "mutation_rate=0.1,0.2", "--grid", "recombine=true,false", "--seeds", "2",
         "--generations", "60", "--chunk", "2", "--checkpoint-every", "2", "--no-stop-when-fooled", "--quiet"]


def _group_states(out):
    """Each group's final checkpointed state, by group directory."""
    states = {}
    for group in sorted(os.listdir(out / "groups")):
        ckpt = out / "groups" / group / "checkpoints"
        names = json.loads((out / "groups" / group / "points.json").read_text())
        states[group] = checkpointing.restore_checkpoint(str(ckpt), _like_for(names))[1:]
    return states


def _like_for(names):
    assert len(names) == 2 and len({"recombine=False" in n for n in names}) == 1  # a group: recombine is static
    recombine = "recombine=False" not in names[0]
    exps = [build_experiment(load_preset("mnist-direct", mutation_rate=r, recombine=recombine, seeds=2)) for r in (0.1, 0.2)]
    lanes = Lanes.of(exps)
    return init_seeds(lanes.engine, lanes.params(), lanes.keys())


@pytest.fixture(scope="module")
def whole_sweep(tmp_path_factory):
    """The uninterrupted sweep, and the seconds from its sweep.json to its exit."""
    whole = tmp_path_factory.mktemp("whole")
    code, err, span = run_and_kill("sweep.py", [*SWEEP, "--out", str(whole)], str(whole / "sweep.json"), delay=None,
                                   checkpoints_glob=(str(whole), "groups", "*", "checkpoints", "*"), at_step=10**9)
    assert code == 0, err
    return whole, span


@pytest.mark.slow
@pytest.mark.parametrize("killer", [None, 1, 2])
def test_killed_sweep_resumes_bit_identical(whole_sweep, tmp_path, killer):
    """kill -9 in the middle of the first group (killer None) or at a moment drawn by the
    killer's seed, then the same command again."""
    whole, span = whole_sweep
    killed = tmp_path / "killed"
    delay = None if killer is None else random.Random(killer).uniform(0, 0.95 * span)
    code, err, _ = run_and_kill("sweep.py", [*SWEEP, "--out", str(killed)], str(killed / "sweep.json"), delay,
                                checkpoints_glob=(str(killed), "groups", "*", "checkpoints", "*"), at_step=10)
    assert code == -signal.SIGKILL, f"the sweep was not killed mid-way (exit {code}): {err[-2000:]}"
    again = run_script("sweep.py", *SWEEP, "--out", str(killed))
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = _group_states(whole), _group_states(killed)
    assert a.keys() == b.keys() and len(a) == 2
    for group in a:
        for x, y in zip(jax.tree.leaves(a[group][0]), jax.tree.leaves(b[group][0])):
            np.testing.assert_array_equal(x, y)
        assert a[group][1]["reached"] == b[group][1]["reached"]
    for point in os.listdir(whole / "points"):
        assert (whole / "points" / point / "metrics.jsonl").read_text() == (killed / "points" / point / "metrics.jsonl").read_text()


def test_lanes_of_different_programs_are_refused():
    a = build_experiment(load_preset())
    b = build_experiment(load_preset("mnist-cppn"))
    with pytest.raises(ConfigError, match="differ only in traced fields"):
        Lanes.of([a, b])


@pytest.mark.slow
def test_a_sweep_over_two_processes_equals_one_process(tmp_path):
    flags = ["--preset", "mnist-direct", "--grid", "mutation_rate=0.1,0.2", "--seeds", "1", "--generations", "8",
             "--chunk", "4", "--no-stop-when-fooled", "--quiet"]
    one = run_script("sweep.py", *flags, "--out", str(tmp_path / "one"), env={"JAXFOOL_CACHE": "off"})
    assert one.returncode == 0, one.stderr[-2000:]
    port = free_port()
    env = {**os.environ, "JAXFOOL_CACHE": "off", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), *flags, "--out", str(tmp_path / "two"),
                               "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                               "--shard", "lanes"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "[group" in outs[0][0] and "[group" not in outs[1][0] and "fooled" not in outs[1][0]  # only process 0 prints
    for point in ("mutation_rate=0.1", "mutation_rate=0.2"):
        a = json.loads((tmp_path / "one" / "points" / point / "summary.json").read_text())
        b = json.loads((tmp_path / "two" / "points" / point / "summary.json").read_text())
        assert b["device"]["processes"] == 2
        assert a["seeds"][0]["best_confidence"] == b["seeds"][0]["best_confidence"]
