"""Mixed precision: --compute-dtype bfloat16 runs the classifier in bf16 and checks its elites in f32."""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from conftest import run_script
from jaxfool import pictures
from jaxfool.data import load_mnist


def test_bfloat16_forward_runs_in_bfloat16_and_stays_close(lenet, mnist_dir):
    images = load_mnist("test", mnist_dir).images[:256]
    jaxpr = str(jax.make_jaxpr(lambda p, x: lenet.log_probs(p, x, "bfloat16"))(lenet.params, images))
    assert "bf16[256,24,24,20] = conv_general_dilated" in jaxpr  # the network itself runs in bf16
    full, half = (np.asarray(jax.jit(lenet.log_probs, static_argnums=2)(lenet.params, images, d)) for d in ("float32", "bfloat16"))
    assert half.dtype == np.float32  # logits cast back: the softmax and archive stay f32
    assert not np.array_equal(full, half)
    assert np.abs(np.exp(full) - np.exp(half)).max() < 0.05 and (full.argmax(1) == half.argmax(1)).mean() > 0.98


def test_bfloat16_run_rescores_its_elites_in_float32(tmp_path, lenet):
    out = tmp_path / "bf16"
    proc = run_script("run.py", "--compute-dtype", "bfloat16", "--generations", "60", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    seed = json.loads((out / "summary.json").read_text())["seeds"][0]
    again = []
    for c, name in enumerate(lenet.class_names):
        image = pictures.load_png(os.path.join(out, "elites", f"{c}_{name}.png"), channels=1)
        again.append(math.exp(float(jax.nn.log_softmax(lenet.logits(image[None]))[0, c])))
    np.testing.assert_allclose(seed["best_confidence_float32"], again, rtol=1e-5)
    assert seed["classes_fooled_float32"] == sum(p >= 0.9999 for p in again)
    assert f"re-scored in float32, {seed['classes_fooled_float32']}/10 stay >= 99.99%" in proc.stdout
    report = (out / "report.html").read_text()
    assert "re-scored in float32" in report


def test_unknown_compute_dtype_is_one_line(tmp_path):
    proc = run_script("run.py", "--compute-dtype", "float16", "--quiet", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: unknown compute_dtype 'float16'; choose one of float32, bfloat16"
