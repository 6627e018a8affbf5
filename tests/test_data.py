import gzip
import os

import numpy as np
import pytest

from jaxfool.data import MNIST_CLASS_NAMES, load_mnist, read_idx
from jaxfool.errors import DataError


def _write_idx(path, array, magic=None, truncate=0):
    header = (magic if magic is not None else (0x08 << 8) | array.ndim).to_bytes(4, "big")
    header += b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[: len(data) - truncate])


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    return tmp_path


def test_reads_idx_directory(idx_dir):
    split = load_mnist("test", str(idx_dir))
    assert split.images.shape == (5, 28, 28, 1) and split.images.dtype == np.float32
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert split.labels.dtype == np.int32 and len(split.labels) == 5
    assert len(split.sha256) == 64


def test_env_var_is_used(idx_dir, monkeypatch):
    monkeypatch.setenv("JAXFOOL_DATA", str(idx_dir))
    assert load_mnist("train").images.shape[0] == 12


def test_real_mnist_shapes(mnist_dir):
    train, test = load_mnist("train", mnist_dir), load_mnist("test", mnist_dir)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert len(MNIST_CLASS_NAMES) == 10


def test_missing_directory_is_one_clear_line(tmp_path):
    with pytest.raises(DataError) as e:
        load_mnist("train", str(tmp_path / "nowhere"))
    assert "does not exist" in str(e.value) and "JAXFOOL_DATA" in str(e.value) and "\n" not in str(e.value)


def test_missing_file_names_the_file(idx_dir):
    os.remove(idx_dir / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz not found"):
        load_mnist("test", str(idx_dir))


def test_nothing_found_says_where_to_put_files(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXFOOL_DATA", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # an empty TFDS store
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_mnist("train")
    message = str(e.value)
    assert "MNIST not found" in message and "train-images-idx3-ubyte.gz" in message and "\n" not in message


def test_truncated_file(tmp_path):
    path = tmp_path / "t.gz"
    _write_idx(path, np.zeros((4, 28, 28)), truncate=100)
    with pytest.raises(DataError, match="truncated"):
        read_idx(str(path), ndim=3)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "t.gz"
    _write_idx(path, np.zeros((40, 28, 28)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(str(path), ndim=3)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "m.gz"
    _write_idx(path, np.zeros((4, 28, 28)), magic=0x00000999)
    with pytest.raises(DataError, match="wrong IDX magic number 0x00000999"):
        read_idx(str(path), ndim=3)


def test_labels_file_given_as_images(idx_dir):
    with pytest.raises(DataError, match="magic"):
        read_idx(str(idx_dir / "t10k-labels-idx1-ubyte.gz"), ndim=3)


def test_tfds_fallback(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("JAXFOOL_DATA", raising=False)
    with tfds.testing.mock_data(num_examples=7):
        split = load_mnist("test")
    assert split.images.shape == (7, 28, 28, 1) and split.source == "tfds:mnist/test"


def test_unknown_split(idx_dir):
    with pytest.raises(DataError, match="unknown MNIST split"):
        load_mnist("validation", str(idx_dir))


@pytest.mark.slow
def test_data_tests_skip_where_there_is_no_mnist(tmp_path):
    """What a newcomer without MNIST runs (issue 28): every test that reads MNIST skips with the
    one message, none fails, and at least one such test exists to be skipped."""
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "JAXFOOL_DATA"}
    env.update(JAXFOOL_TEST_SHARED_MNIST=str(tmp_path / "no-shared"), HOME=str(tmp_path), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "mnist", "-q", "-rs", "-p", "no:cacheprovider", "tests"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "skipped" in tail and "passed" not in tail and "failed" not in tail and "error" not in tail, tail
    assert int(tail.split(" skipped")[0].split()[-1]) >= 8
    assert "MNIST not found: set JAXFOOL_DATA" in proc.stdout
