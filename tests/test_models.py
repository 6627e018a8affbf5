import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxfool.data import load_mnist
from jaxfool.errors import ClassifierError
from jaxfool.models import ARCHITECTURES, available, init_lenet, load_checkpoint, load_classifier, save_checkpoint
from jaxfool.models.layers import conv2d_valid, max_pool_2x2
from jaxfool.training import accuracy


@pytest.mark.parametrize("name", ["lenet-mnist", "lenet-mnist-b"])
def test_shipped_lenet_accuracy(name, mnist_dir):
    classifier = load_classifier(name)
    test = load_mnist("test", mnist_dir)
    acc = accuracy(classifier.apply_fn, classifier.params, test.images, test.labels)
    assert acc >= 0.99
    assert abs(acc - classifier.info["test_accuracy"]) < 1e-6  # the JSON tells the truth
    assert classifier.info["data_sha256"]["test"] == test.sha256


def test_two_lenets_differ(lenet):
    b = load_classifier("lenet-mnist-b")
    assert lenet.info["seed"] != b.info["seed"]
    assert not np.allclose(lenet.params["conv1"]["kernel"], b.params["conv1"]["kernel"])


def test_classifier_interface(lenet):
    assert set(available()) >= {"lenet-mnist", "lenet-mnist-b"}
    assert lenet.input_shape == (28, 28, 1) and lenet.num_classes == 10 and lenet.value_range == (0.0, 1.0)
    x = jnp.zeros((3, 28, 28, 1))
    logits = lenet.logits(x)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    # jit and vmap friendly: vmapped single images equal the batch
    single = jax.vmap(lambda im: jax.jit(lenet.apply_fn)(lenet.params, im[None])[0])(x)
    np.testing.assert_allclose(single, logits, rtol=1e-5, atol=1e-5)
    assert lenet.class_index("three") == 3 and lenet.class_index("3") == 3
    assert lenet.class_indices(None) == tuple(range(10)) and lenet.class_indices(["two", 5]) == (2, 5)


def test_unknown_classes_are_clear(lenet):
    with pytest.raises(ClassifierError, match="no class named 'eleven'"):
        lenet.class_index("eleven")
    with pytest.raises(ClassifierError, match="out of range"):
        lenet.class_index(10)


def test_unknown_classifier_is_one_clear_line():
    with pytest.raises(ClassifierError) as e:
        load_classifier("alexnet")
    assert "unknown classifier 'alexnet'" in str(e.value) and "lenet-mnist" in str(e.value)
    assert "\n" not in str(e.value)


def test_checkpoint_roundtrip(tmp_path):
    module, params = init_lenet(jax.random.key(3), num_classes=11)
    meta = {"architecture": "lenet", "num_classes": 11, "class_names": [str(i) for i in range(11)], "input_shape": [28, 28, 1]}
    path = save_checkpoint(tmp_path / "net", params, meta)
    loaded = load_classifier(path)
    assert loaded.num_classes == 11 and loaded.name == "net"
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    np.testing.assert_array_equal(loaded.logits(x), module.apply({"params": params}, x))
    # msgpack, not pickle: the file is plain data
    assert open(path, "rb").read(1) != b"\x80"


def test_checkpoint_that_does_not_fit(tmp_path):
    _, params = init_lenet(jax.random.key(0), num_classes=10)
    meta = {"architecture": "lenet", "num_classes": 7, "class_names": list("abcdefg"), "input_shape": [28, 28, 1]}
    path = save_checkpoint(tmp_path / "bad", params, meta)
    with pytest.raises(ClassifierError, match="do not fit architecture 'lenet'"):
        load_checkpoint(path, ARCHITECTURES)
    meta["architecture"] = "resnet"
    with open(tmp_path / "bad.json", "w") as f:
        json.dump(meta, f)
    with pytest.raises(ClassifierError, match="unknown architecture 'resnet'"):
        load_checkpoint(path, ARCHITECTURES)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ClassifierError, match="not found"):
        load_classifier(str(tmp_path / "none.msgpack"))


def test_import_path_factory(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text(
        "import jax.numpy as jnp\n"
        "def make():\n"
        "    return (lambda p, x: x.reshape(x.shape[0], -1)[:, :3] * p), 2.0, (4, 4, 1), ['a', 'b', 'c']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    c = load_classifier("mymodel:make")
    assert c.class_names == ("a", "b", "c") and c.input_shape == (4, 4, 1)
    assert c.logits(jnp.ones((2, 4, 4, 1))).shape == (2, 3)
    with pytest.raises(ClassifierError, match="cannot import classifier factory"):
        load_classifier("mymodel:nothing")


def test_fast_conv_gradient_matches_xla():
    x = jax.random.normal(jax.random.key(0), (3, 12, 12, 4))
    w = jax.random.normal(jax.random.key(1), (5, 5, 4, 6))
    ref = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
    np.testing.assert_allclose(conv2d_valid(x, w), ref(x, w), rtol=1e-5, atol=1e-4)
    for got, want in zip(jax.grad(loss(conv2d_valid), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_fast_pool_gradient_matches_xla():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
    g = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(f(x)) * jnp.arange(96.0).reshape(2, 4, 4, 3)))(x)
    np.testing.assert_allclose(g(max_pool_2x2), g(ref), rtol=1e-6, atol=1e-6)
