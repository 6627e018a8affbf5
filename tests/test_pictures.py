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


PURE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _pure(colour, shape=(8, 8)):
    return np.broadcast_to(np.array(PURE[colour], np.float64) / 255.0, (*shape, 3))


def _count(region, colour):
    return int((region == np.array(PURE[colour])).all(-1).sum())


def test_grid_draws_elite_k_in_the_tile_of_class_k(tmp_path):
    # Seed 0: red, green, blue; seed 1: blue, green, red. Each tile must show its own elite.
    images = np.stack([np.stack([_pure(c) for c in row]) for row in (("red", "green", "blue"), ("blue", "green", "red"))])
    [path] = pictures.elites_grid(str(tmp_path / "g.png"), images, np.full((2, 3), 0.9), ["a", "b", "c"], ["seed 0", "seed 1"])
    grid = np.asarray(Image.open(path).convert("RGB"))
    h = grid.shape[0]
    for r, row in enumerate((("red", "green", "blue"), ("blue", "green", "red"))):
        band = grid[r * h // 2 : (r + 1) * h // 2]  # the seed's row of tiles
        centres = []
        for colour in row:
            xs = np.nonzero((band == np.array(PURE[colour])).all(-1))[1]
            assert len(xs) > 400, (r, colour)  # the elite is drawn, large, in its seed's row
            centres.append(xs.mean())
        assert centres == sorted(centres), (r, centres)  # classes a, b, c from left to right


def test_grid_paginates_many_classes_in_order(tmp_path):
    images = np.stack([_pure("red") if c < 100 else _pure("blue") for c in range(150)])[None]
    paths = pictures.elites_grid(str(tmp_path / "elites.png"), images, np.full((1, 150), 0.5), [f"c{i}" for i in range(150)])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["elites-001.png", "elites-002.png"]
    first, second = (np.asarray(Image.open(p).convert("RGB")) for p in paths)
    assert _count(first, "red") > 100 * 30 and _count(first, "blue") == 0  # classes 0-99
    assert _count(second, "blue") > 50 * 30 and _count(second, "red") == 0  # classes 100-149


def test_progress_plots(tmp_path):
    gens = np.arange(20)
    fitness = np.log(np.linspace(0.1, 0.99999, 20))[:, None, None] * np.ones((20, 2, 3))
    pictures.progress_plot(str(tmp_path / "p.png"), gens, fitness, ["a", "b", "c"])
    quantiles = np.sort(np.random.default_rng(0).random((20, 1, 5)), axis=-1) * -1
    pictures.progress_plot(str(tmp_path / "q.png"), gens, quantiles, None)
    assert Image.open(tmp_path / "p.png").size[0] > 0 and Image.open(tmp_path / "q.png").size[0] > 0
