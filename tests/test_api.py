import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfool
from conftest import run_script
from jaxfool.data import load_mnist
from jaxfool.errors import ClassifierError, ConfigError


class SmallCNN(nn.Module):
    """A network the project has never seen: plain flax.linen layers, ReLU, SAME padding."""

    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), (2, 2))
        return nn.Dense(10)(nn.relu(nn.Dense(64)(x.reshape(len(x), -1))))


@pytest.fixture(scope="module")
def trained_cnn(mnist_dir):
    train = load_mnist("train", mnist_dir)
    net = SmallCNN()
    params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()  # noqa: E731
        updates, opt = tx.update(jax.grad(loss)(params), opt)
        return optax.apply_updates(params, updates), opt

    order = np.random.default_rng(0).permutation(len(train.labels))
    for i in range(0, len(order), 128):  # one epoch
        idx = order[i : i + 128]
        params, opt = step(params, opt, train.images[idx], train.labels[idx])
    test = load_mnist("test", mnist_dir)
    assert float((jax.jit(net.apply)(params, test.images).argmax(-1) == test.labels).mean()) > 0.95
    return net, params


@pytest.mark.slow
def test_fool_an_unseen_model_with_defaults(trained_cnn, tmp_path):
    net, params = trained_cnn
    start = time.perf_counter()
    result = jaxfool.fool(net.apply, params, image_shape=(28, 28, 1), num_classes=10)
    assert time.perf_counter() - start < 60
    assert result.all_fooled and (result.best_confidence >= 0.9999).all()
    assert result.images.shape == (10, 28, 28, 1) and (result.generations_to >= 0).all()
    assert result.evaluations == 200 * (result.summary["seeds"][0]["generations"] + 1)
    # the images are exactly what was scored
    probs = jax.nn.softmax(net.apply(params, jnp.asarray(result.images)))
    np.testing.assert_allclose(np.diag(np.asarray(probs)), result.best_confidence, atol=1e-5)
    out = result.save(str(tmp_path / "saved"))
    for name in ("elites.png", "progress.png", "summary.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(out, name))
    assert os.path.exists(os.path.join(out, "elites", "3_3.png"))


@pytest.mark.slow
def test_fool_cppn_and_config_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    net = nn.Dense(3)
    params = net.init(jax.random.key(0), jnp.zeros((1, 64)))
    logits = lambda p, x: net.apply(p, x.reshape(len(x), -1) * 4)  # noqa: E731
    result = jaxfool.fool(logits, params, image_shape=(8, 8, 1), num_classes=3, encoding="cppn", generations=5,
                          batch=40, class_names=["a", "b", "c"], selection="uniform")
    assert result.class_names == ("a", "b", "c") and result.images.shape == (3, 8, 8, 1)
    assert result.summary["config"]["selection"] == "uniform" and result.summary["config"]["encoding"] == "cppn"
    assert result.run_dir is None and os.listdir(tmp_path) == []  # fool() writes no files unless asked


def test_fool_says_in_one_line_which_classes_it_missed():
    net = nn.Dense(3)
    params = net.init(jax.random.key(0), jnp.zeros((1, 64)))
    logits = lambda p, x: net.apply(p, x.reshape(len(x), -1))  # noqa: E731
    with pytest.warns(UserWarning) as caught:
        result = jaxfool.fool(logits, params, image_shape=(8, 8, 1), num_classes=3, generations=1, batch=20,
                              class_names=["a", "b", "c"], threshold=0.999999)
    (warning,) = caught
    missed = [n for n, g in zip(result.class_names, result.generations_to) if g < 0]
    assert missed and str(warning.message).startswith(f"{len(missed)} of 3 classes not fooled at 99.9999% within 1 generations")
    assert "\n" not in str(warning.message) and all(n in str(warning.message) for n in missed)


def test_wrong_shapes_are_one_line_errors():
    dense = nn.Dense(10)
    params = dense.init(jax.random.key(0), jnp.zeros((1, 784)))
    flat = lambda p, x: dense.apply(p, x.reshape(len(x), -1))  # noqa: E731
    with pytest.raises(ClassifierError) as e:
        jaxfool.fool(flat, params, image_shape=(28, 28, 1), num_classes=5)
    assert "returned (2, 10)" in str(e.value) and "expected logits of shape (2, 5)" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(ClassifierError, match=r"logits_fn failed on images of shape \(2, 32, 32, 3\)"):
        jaxfool.fool(flat, params, image_shape=(32, 32, 3), num_classes=10)
    with pytest.raises(ClassifierError, match="image_shape must be"):
        jaxfool.fool(flat, params, image_shape=(784,), num_classes=10)
    with pytest.raises(ConfigError, match="unknown encoding"):
        jaxfool.fool(flat, params, image_shape=(28, 28, 1), num_classes=10, encoding="fourier")
    with pytest.raises(ConfigError, match="class_names has 2 names"):
        jaxfool.fool(flat, params, image_shape=(28, 28, 1), num_classes=10, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="unknown config field 'mutation_rat'"):
        jaxfool.fool(flat, params, image_shape=(28, 28, 1), num_classes=10, mutation_rat=0.2)


def test_a_model_that_only_works_at_some_batch_sizes_fails_before_running():
    dense = nn.Dense(10)
    params = dense.init(jax.random.key(0), jnp.zeros((1, 784)))
    fixed = lambda p, x: dense.apply(p, x.reshape(min(len(x), 64), -1))  # noqa: E731 - breaks above 64 images
    with pytest.raises(ClassifierError, match=r"logits_fn failed on images of shape \(200, 28, 28, 1\)"):
        jaxfool.fool(fixed, params, image_shape=(28, 28, 1), num_classes=10)
    result = jaxfool.fool(fixed, params, image_shape=(28, 28, 1), num_classes=10, batch=50, generations=1, recombine=False)
    assert result.best_confidence.shape == (10,)  # batches of 50 are fine


def test_cli_loads_a_model_from_an_import_path(tmp_path):
    (tmp_path / "my_model.py").write_text(
        "import jax, jax.numpy as jnp, flax.linen as nn\n"
        "def factory():\n"
        "    net = nn.Dense(10)\n"
        "    params = net.init(jax.random.key(0), jnp.zeros((1, 784)))\n"
        "    return (lambda p, x: net.apply(p, x.reshape(len(x), -1))), params, (28, 28, 1), [str(i) for i in range(10)]\n"
        "def broken():\n"
        "    net = nn.Dense(7)\n"
        "    params = net.init(jax.random.key(0), jnp.zeros((1, 784)))\n"
        "    return (lambda p, x: net.apply(p, x.reshape(len(x), -1))), params, (28, 28, 1), [str(i) for i in range(10)]\n"
    )
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = run_script("run.py", "--classifier", "my_model:factory", "--generations", "3", "--out", str(tmp_path / "r"), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_script("run.py", "--classifier", "my_model:broken", "--out", str(tmp_path / "b"), "--quiet", env=env)
    assert proc.returncode == 2 and "expected logits of shape (2, 10)" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_readme_snippet_fools_as_written(mnist_dir, tmp_path):
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    start = readme.index("## Fool your own model")
    code = readme[readme.index("```python\n", start) + 10 : readme.index("```\n", readme.index("```python\n", start) + 10)]
    (tmp_path / "snippet.py").write_text(code)
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAXFOOL_DATA": mnist_dir, "JAXFOOL_CACHE": "off"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    generations = proc.stdout[proc.stdout.rindex("[") + 1 : proc.stdout.rindex("]")].split()
    assert len(generations) == 10 and all(int(g) >= 0 for g in generations)  # every class fooled
    assert (tmp_path / "runs" / "mine" / "summary.json").exists()
