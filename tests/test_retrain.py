import csv
import json
import os

import numpy as np
import pytest

from conftest import run_script
from jaxfool.models import load_classifier

TINY = ["--seeds", "3", "--generations", "8", "--epochs", "1", "--num-train", "2000", "--fooling-per-class", "200", "--quiet"]


@pytest.mark.slow
def test_two_tiny_iterations_end_to_end_and_resume(mnist_dir, tmp_path):
    out = str(tmp_path / "retrain")
    env = {"JAXFOOL_DATA": mnist_dir}
    proc = run_script("retrain.py", "--iterations", "2", *TINY, "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(os.path.join(out, "retrain.csv"))))
    assert [r["iteration"] for r in rows] == ["1", "2"]
    assert float(rows[0]["test_accuracy"]) > 0.99  # DNN_1 is the shipped LeNet A
    assert rows[0]["heldout_fooling_accuracy"] == "" and rows[1]["heldout_fooling_accuracy"] != ""
    assert os.path.exists(os.path.join(out, "retrain.png"))
    assert os.path.exists(os.path.join(out, "iteration_01", "evolution", "elites.png"))

    # DNN_2 is a classifier with an extra "fooling" class, usable by scripts/run.py
    assert not os.path.exists(os.path.join(out, "iteration_02", "dnn.msgpack"))  # trained only when needed
    dnn = os.path.join(out, "iteration_01", "dnn.msgpack")
    net = load_classifier(dnn)
    assert net.num_classes == 11 and net.class_names[-1] == "fooling"
    with np.load(os.path.join(out, "pool.npz")) as pool:
        assert pool["images"].shape == (60, 28, 28, 1) and pool["images"].dtype == np.uint8
        assert set(pool["iteration"].tolist()) == {1, 2}
    evolved = json.load(open(os.path.join(out, "iteration_02", "evolution", "summary.json")))
    assert evolved["classifier"].endswith("dnn") and len(evolved["classes"]) == 10  # real classes only

    # Rerunning continues: the two finished iterations are skipped, a third is added.
    proc = run_script("retrain.py", "--iterations", "3", *TINY, "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(os.path.join(out, "retrain.csv"))))
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert "iteration 1:" not in proc.stdout and "iteration 3:" in proc.stdout


def test_run_can_target_a_retrained_network(mnist_dir, tmp_path):
    import jax

    from jaxfool.models import init_lenet, save_checkpoint

    _, params = init_lenet(jax.random.key(0), num_classes=11)
    path = save_checkpoint(tmp_path / "dnn", params, {
        "architecture": "lenet", "num_classes": 11, "class_names": [str(i) for i in range(10)] + ["fooling"],
        "input_shape": [28, 28, 1]})
    proc = run_script("run.py", "--classifier", path, "--classes", "0,1,2,3,4,5,6,7,8,9", "--generations", "2",
                      "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert [c["index"] for c in summary["classes"]] == list(range(10))


def test_bad_retrain_flags(tmp_path):
    proc = run_script("retrain.py", "--preset", "nope", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown preset 'nope'" in proc.stderr
