import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_script
from jaxfool.errors import ConfigError
from jaxfool.sweep import parse_grid, point_config, point_name, points

GRID = ["--grid", "encoding=direct,cppn", "--grid", "mutation_rate=0.1,0.2"]
TINY = ["--preset", "mnist-direct", "--seeds", "2", "--generations", "6", "--chunk", "3", "--quiet"]


def test_grid_parsing_and_points():
    grid = parse_grid(["encoding=direct,cppn", "mutation-rate=0.1,0.2", "recombine=true,false", "emitters=mutation+snes,mutation"])
    assert grid["mutation_rate"] == [0.1, 0.2] and grid["recombine"] == [True, False]
    assert grid["emitters"] == [("mutation", "snes"), ("mutation",)]
    ps = points({"encoding": ["direct", "cppn"], "batch": [100, 200]})
    assert len(ps) == 4 and ps[1] == {"encoding": "direct", "batch": 200}
    assert point_name({"encoding": "cppn", "mutation_rate": 0.2}) == "encoding=cppn_mutation_rate=0.2"
    assert point_config("mnist-direct", {"preset": "mnist-cppn"}, {"seeds": 3}).encoding == "cppn"
    with pytest.raises(ConfigError, match="unknown config field 'mutaton_rate'"):
        parse_grid(["mutaton_rate=0.1"])
    with pytest.raises(ConfigError, match="'x' is not a valid int"):
        parse_grid(["batch=x"])
    with pytest.raises(ConfigError, match="must look like field=value1,value2"):
        parse_grid(["batch"])


@pytest.mark.slow
def test_sweep_writes_one_row_per_point(tmp_path):
    proc = run_script("sweep.py", *TINY, *GRID, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [(r["encoding"], r["mutation_rate"]) for r in rows] == [("direct", "0.1"), ("direct", "0.2"), ("cppn", "0.1"), ("cppn", "0.2")]
    assert all(r["seeds"] == "2" for r in rows) and (tmp_path / "sweep.png").exists()
    assert "encoding=cppn, mutation_rate=0.2" in proc.stdout


@pytest.mark.slow
def test_killed_sweep_skips_finished_points(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), *TINY, *GRID, "--generations", "60",
                             "--no-stop-when-fooled", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The direct points differ only in a traced rate: one group, finished before the cppn group.
    first = [out / "points" / f"encoding=direct_mutation_rate={r}" / "summary.json" for r in (0.1, 0.2)]
    deadline = time.time() + 300
    while not all(f.exists() for f in first) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(f.exists() for f in first) and not (out / "points" / "encoding=cppn_mutation_rate=0.2" / "summary.json").exists()
    again = run_script("sweep.py", *TINY, *GRID, "--generations", "60", "--no-stop-when-fooled", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "encoding=direct_mutation_rate=0.1: done, skipped" in again.stdout
    assert "encoding=direct_mutation_rate=0.2: done, skipped" in again.stdout
    assert "2 point(s) x 2 seeds = 4 lanes in one program: encoding=cppn_mutation_rate=0.1" in again.stdout
    assert len(list(csv.DictReader(open(out / "sweep.csv")))) == 4
