import os

import numpy as np

from conftest import run_script
from jaxfool.training import TrainConfig, train_mnist


def test_training_learns_on_a_subset(mnist_dir):
    params, meta = train_mnist(seed=0, data_dir=mnist_dir, config=TrainConfig(epochs=1, batch_size=64), num_train=3000)
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
    proc = run_script("train.py", "--arch", "resnet", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and proc.stderr.strip() == "error: unknown architecture 'resnet'; choose one of lenet, mlp"


def test_pgd_stays_in_its_ball_and_adversarial_training_resists_it(mnist_dir):
    """PGD moves images at most eps and keeps them in [0, 1]; a LeNet trained on PGD examples
    (one epoch, 3 000 images) keeps more accuracy under PGD than one trained on clean images."""
    import jax

    from jaxfool.data import load_mnist
    from jaxfool.models import load_classifier
    from jaxfool.training import pgd

    lenet = load_classifier("lenet-mnist")
    test = load_mnist("test", mnist_dir)
    x, y = test.images[:200], test.labels[:200]
    adv = np.asarray(pgd(lenet.apply_fn, lenet.params, x, y, jax.random.key(0), 0.3, 10, 0.05))
    assert np.abs(adv - x).max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (np.asarray(lenet.logits(adv)).argmax(1) == y).mean() < 0.5 < (np.asarray(lenet.logits(x)).argmax(1) == y).mean()
    from jaxfool.models import LeNet
    from jaxfool.training import pgd_accuracy

    small = dict(seed=0, data_dir=mnist_dir, num_train=3000, pgd_test=0)
    clean, _ = train_mnist(config=TrainConfig(epochs=1, batch_size=64), **small)
    robust, meta = train_mnist(config=TrainConfig(epochs=1, batch_size=64, adversarial_eps=0.1, pgd_step_size=0.03), **small)
    apply_fn = lambda p, x: LeNet().apply({"params": p}, x)  # noqa: E731
    attack = dict(eps=0.1, steps=10, step_size=0.025)
    under_attack = [pgd_accuracy(apply_fn, p, test.images[:500], test.labels[:500], **attack) for p in (clean, robust)]
    assert under_attack[1] > under_attack[0] + 0.1, under_attack
    assert meta["train_config"]["adversarial_eps"] == 0.1 and np.array(meta["mean_image"]).shape == (28, 28)


def test_the_mlp_trains_and_loads(mnist_dir, tmp_path):
    out = str(tmp_path / "mlp")
    proc = run_script("train.py", "--arch", "mlp", "--data", mnist_dir, "--out", out, "--num-train", "2000", "--epochs", "1",
                      "--batch-size", "64", "--pgd-test", "100")
    assert proc.returncode == 0, proc.stderr
    assert "under PGD (eps 0.3, 40 steps)" in proc.stdout
    from jaxfool.models import load_classifier

    c = load_classifier(out + ".msgpack")
    assert c.info["architecture"] == "mlp" and c.info["test_accuracy"] > 0.8 and type(c.module).__name__ == "MLP"
