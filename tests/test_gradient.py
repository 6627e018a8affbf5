import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_script
from jaxfool.errors import ConfigError
from jaxfool.gradient import GradientConfig, gaussian_blur, gradient_ascent, start_images


def test_gradient_ascent_fools_every_class_quickly(lenet):
    result = gradient_ascent(lenet, GradientConfig(steps=150))
    assert (np.asarray(result.confidence) >= 0.99).all()
    steps = np.asarray(result.steps_to_threshold)
    assert (steps >= 0).all() and steps.max() <= 150
    # the returned images are 8-bit and score exactly as reported
    images = np.asarray(result.images)
    assert np.abs(images * 255 - np.round(images * 255)).max() < 1e-3  # on the 8-bit grid
    rescored = np.asarray(lenet.logits(result.images))
    logp = rescored - np.log(np.exp(rescored - rescored.max(1, keepdims=True)).sum(1, keepdims=True)) - rescored.max(1, keepdims=True)
    np.testing.assert_allclose(logp[np.arange(10), np.arange(10)], result.log_confidence, atol=1e-5)
    assert result.history.shape == (150, 10)


def test_regularisers_and_starts_run(lenet):
    result = gradient_ascent(lenet, GradientConfig(steps=20, start="random", l2_decay=0.01, blur_every=5, jitter=1), cells=(3, 7))
    assert result.images.shape == (2, 28, 28, 1)
    assert start_images(lenet, 2, "blank", None).max() == 0
    mean = start_images(lenet, 1, "mean", None)
    assert 0.1 < float(mean.mean()) < 0.16  # MNIST's mean pixel is 0.13
    blurred = gaussian_blur(jnp.zeros((1, 8, 8, 1)).at[0, 4, 4, 0].set(1.0), 1.0)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5) and float(blurred.max()) < 0.3


def test_bad_config():
    with pytest.raises(ConfigError, match="unknown start 'noise'"):
        GradientConfig(start="noise").validate()
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        GradientConfig(steps=0).validate()


def test_script(tmp_path):
    proc = run_script("gradient_ascent.py", "--steps", "200", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["all_reached"] and len(summary["classes"]) == 10
    assert (tmp_path / "elites" / "3_three.png").exists() and (tmp_path / "elites.png").exists()
    assert "after" in proc.stdout
