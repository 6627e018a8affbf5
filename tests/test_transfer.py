import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_script
from jaxfool.errors import ClassifierError
from jaxfool.models import load_classifier
from jaxfool.presets import load_preset
from jaxfool.runner import run
from jaxfool.transfer import load_elites, transfer


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("src"))
    run(load_preset("mnist-cppn", seeds=2, generations=20), out, progress_bar=False)
    return out


def test_transfer_to_the_same_network_is_exact(two_seed_run, lenet):
    elites = load_elites(two_seed_run)
    assert elites["images"].shape == (20, 28, 28, 1) and sorted(set(elites["seeds"].tolist())) == [0, 1]
    result = transfer(elites, lenet)
    got = np.array([e["target_confidence"] for e in result["elites"]])
    np.testing.assert_allclose(got, elites["source_confidence"], atol=1e-5)
    assert result["images"] == 20 and np.asarray(result["probabilities"]).shape == (20, 10)


def test_transfer_to_lenet_b_reports_per_class(two_seed_run):
    result = transfer(load_elites(two_seed_run), load_classifier("lenet-mnist-b"))
    assert len(result["per_class"]) == 10 and sum(r["images"] for r in result["per_class"]) == 20
    # Every figure is recomputed here from LeNet B's own softmax of the saved images.
    elites = load_elites(two_seed_run)
    net_b = load_classifier("lenet-mnist-b")
    probs = np.asarray(jax.nn.softmax(net_b.logits(jnp.asarray(elites["images"]))), np.float64)
    same = probs[np.arange(20), elites["classes"]]
    np.testing.assert_allclose([e["target_confidence"] for e in result["elites"]], same, atol=1e-6)
    for row in result["per_class"]:
        mine = same[elites["classes"] == row["index"]]
        assert row["images"] == len(mine) == 2
        assert row["target_confidence_mean"] == pytest.approx(mine.mean(), abs=1e-6)
        assert row["target_confidence_min"] == pytest.approx(mine.min(), abs=1e-6)
        assert row["target_confidence_max"] == pytest.approx(mine.max(), abs=1e-6)
        assert row["at_least_99"] == int((mine >= 0.99).sum())
    assert result["at_least_99"] == int((same >= 0.99).sum())


def test_transfer_script(two_seed_run):
    proc = run_script("transfer.py", two_seed_run, "--to", "lenet-mnist-b")
    assert proc.returncode == 0, proc.stderr
    assert "lenet-mnist -> lenet-mnist-b" in proc.stdout and "zero" in proc.stdout
    saved = json.load(open(f"{two_seed_run}/transfer-lenet-mnist-b.json"))
    assert saved["target"] == "lenet-mnist-b"


def test_shape_mismatch_is_clear(two_seed_run):
    from jaxfool.models.classifier import Classifier

    other = Classifier("tiny", lambda p, x: x.reshape(x.shape[0], -1)[:, :10], None, (32, 32, 1), tuple("abcdefghij"))
    with pytest.raises(ClassifierError, match=r"the elites are \(28, 28, 1\) images but tiny takes \(32, 32, 1\)"):
        transfer(load_elites(two_seed_run), other)


def test_not_a_run_dir(tmp_path):
    proc = run_script("transfer.py", str(tmp_path), "--to", "lenet-mnist-b")
    assert proc.returncode == 2 and "no summary.json" in proc.stderr
