import numpy as np
from PIL import Image

from jaxfool import pictures


def test_png_roundtrip_is_exact(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (28, 28, 1)) / 255.0
    pictures.save_png(str(tmp_path / "a.png"), image)
    np.testing.assert_array_equal(pictures.load_png(str(tmp_path / "a.png")), image.astype(np.float32))
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3)) / 255.0
    pictures.save_png(str(tmp_path / "b.png"), rgb)
    np.testing.assert_array_equal(pictures.load_png(str(tmp_path / "b.png"), channels=3), rgb.astype(np.float32))


def test_labels_and_names():
    assert pictures.confidence_label(0.99995) == "99.9950%" and pictures.confidence_label(0.9999999) == ">99.9999%"
    assert pictures.confidence_label(0.5) == "50.0%"
    assert pictures.safe_name("tiger cat, Felis") == "tiger_cat_Felis"


def test_grid_one_seed_and_several(tmp_path):
    images = np.random.default_rng(0).random((2, 10, 28, 28, 1))
    conf = np.full((2, 10), 0.99991)
    [one] = pictures.elites_grid(str(tmp_path / "one.png"), images[:1], conf[:1], [str(i) for i in range(10)])
    [two] = pictures.elites_grid(str(tmp_path / "two.png"), images, conf, [str(i) for i in range(10)], ["seed 0", "seed 1"])
    w1, h1 = Image.open(one).size
    w2, h2 = Image.open(two).size
    assert h2 > h1 and w1 > 0


def test_grid_paginates_many_classes(tmp_path):
    images = np.random.default_rng(0).random((1, 150, 8, 8, 3))
    paths = pictures.elites_grid(str(tmp_path / "elites.png"), images, np.full((1, 150), 0.5), [f"c{i}" for i in range(150)])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["elites-001.png", "elites-002.png"]


def test_progress_plots(tmp_path):
    gens = np.arange(20)
    fitness = np.log(np.linspace(0.1, 0.99999, 20))[:, None, None] * np.ones((20, 2, 3))
    pictures.progress_plot(str(tmp_path / "p.png"), gens, fitness, ["a", "b", "c"])
    quantiles = np.sort(np.random.default_rng(0).random((20, 1, 5)), axis=-1) * -1
    pictures.progress_plot(str(tmp_path / "q.png"), gens, quantiles, None)
    assert Image.open(tmp_path / "p.png").size[0] > 0 and Image.open(tmp_path / "q.png").size[0] > 0
