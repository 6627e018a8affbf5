import os

import numpy as np

from conftest import run_script
from jaxfool.training import TrainConfig, train_mnist_lenet


def test_training_learns_on_a_subset(mnist_dir):
    params, meta = train_mnist_lenet(seed=0, data_dir=mnist_dir, config=TrainConfig(epochs=1, batch_size=64), num_train=3000)
    assert meta["test_accuracy"] > 0.85  # 3 000 images, one epoch: far above chance (0.1)
    assert meta["num_train"] == 3000 and meta["seed"] == 0 and len(meta["data_sha256"]["train"]) == 64


def test_train_script_writes_a_loadable_checkpoint(mnist_dir, tmp_path):
    out = str(tmp_path / "tiny")
    proc = run_script("train.py", "--data", mnist_dir, "--out", out, "--num-train", "512", "--epochs", "1", "--batch-size", "64")
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    from jaxfool.models import load_classifier

    c = load_classifier(out + ".msgpack")
    assert c.num_classes == 10 and os.path.exists(out + ".json")
    assert np.isfinite(c.info["test_accuracy"])


def test_train_script_bad_flag(tmp_path):
    proc = run_script("train.py", "--epochs", "0", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and proc.stderr.strip() == "error: epochs must be >= 1, got 0"
