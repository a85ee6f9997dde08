"""Tests for mergeprune.data.idx, on small IDX files written into tmp_path (no network)."""

from __future__ import annotations

import gzip
import re
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mergeprune.data.idx import IDX_SOURCES, DataError, load_idx_source, read_idx

NAME = "mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in IDX format."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write an array as an IDX file, gzipped (adding .gz to the name) when gz is true."""
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_arrays(seed: int, n_train: int = 20, n_test: int = 12) -> dict[str, np.ndarray]:
    """Return random images and labels for the four IDX files."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }


def write_set(data_dir: Path, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a full four-file IDX set under data_dir/mnist and return its arrays."""
    directory = data_dir / NAME
    directory.mkdir(parents=True, exist_ok=True)
    arrays = make_arrays(seed)
    for key, filename in FILES.items():
        write_idx(directory / filename, arrays[key], gz)
    return arrays


def check_round_trip(loaded: tuple, arrays: dict[str, np.ndarray]) -> None:
    """Assert that loaded arrays have the right shapes, dtypes and values."""
    train_x, train_y, test_x, test_y = loaded
    assert train_x.shape == (20, 28, 28) and test_x.shape == (12, 28, 28)
    assert train_y.shape == (20,) and test_y.shape == (12,)
    assert train_x.dtype == np.uint8 and test_x.dtype == np.uint8
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    np.testing.assert_array_equal(train_x, arrays["train_images"])
    np.testing.assert_array_equal(train_y, arrays["train_labels"])
    np.testing.assert_array_equal(test_x, arrays["test_images"])
    np.testing.assert_array_equal(test_y, arrays["test_labels"])


def error_text(excinfo: pytest.ExceptionInfo) -> str:
    """Return the message of a caught DataError, asserting it is one line."""
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a url fail the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_sources_table() -> None:
    assert set(IDX_SOURCES) == {"mnist", "fashion_mnist", "kmnist"}
    for source in IDX_SOURCES.values():
        assert source["url"].startswith("http") and source["url"].endswith("/")
        assert set(source["files"]) == set(FILES)
        for key, (filename, md5) in source["files"].items():
            assert filename == FILES[key] + ".gz"
            assert re.fullmatch(r"[0-9a-f]{32}", md5)
    assert IDX_SOURCES["mnist"]["files"]["train_images"][1] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_raw_round_trip(tmp_path: Path) -> None:
    arrays = write_set(tmp_path, gz=False)
    check_round_trip(load_idx_source(NAME, tmp_path), arrays)


def test_raw_round_trip_str_dir(tmp_path: Path) -> None:
    arrays = write_set(tmp_path, gz=False)
    check_round_trip(load_idx_source(NAME, str(tmp_path), verify=True), arrays)


def test_gz_round_trip_without_verify(tmp_path: Path) -> None:
    arrays = write_set(tmp_path, gz=True)
    check_round_trip(load_idx_source(NAME, tmp_path, verify=False), arrays)


def test_gz_verify_rejects_non_standard_files(tmp_path: Path) -> None:
    write_set(tmp_path, gz=True)
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path, verify=True)
    text = error_text(excinfo)
    assert "md5" in text
    assert "train-images-idx3-ubyte.gz" in text
    assert IDX_SOURCES[NAME]["files"]["train_images"][1] in text


def test_gz_preferred_over_raw(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False, seed=1)
    arrays = write_set(tmp_path, gz=True, seed=2)
    check_round_trip(load_idx_source(NAME, tmp_path, verify=False), arrays)


def test_read_idx_direct(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = write_idx(tmp_path / "a-idx3-ubyte", array, gz=False)
    packed = write_idx(tmp_path / "b-idx3-ubyte", array, gz=True)
    for path in (raw, packed):
        out = read_idx(path, 3)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, array)
        out[0, 0, 0] = 7  # result is writable


def test_truncated_images(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False)
    path = tmp_path / NAME / FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    text = error_text(excinfo)
    assert str(path) in text
    assert f"expected {20 * 28 * 28} bytes" in text
    assert f"found {20 * 28 * 28 - 100}" in text


def test_truncated_gz_images(tmp_path: Path) -> None:
    write_set(tmp_path, gz=True)
    path = tmp_path / NAME / (FILES["test_images"] + ".gz")
    data = idx_bytes(make_arrays(0)["test_images"])[:-5]
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path, verify=False)
    text = error_text(excinfo)
    assert str(path) in text and "expected" in text and "found" in text


def test_too_long_labels(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False)
    path = tmp_path / NAME / FILES["train_labels"]
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    text = error_text(excinfo)
    assert str(path) in text and "expected 20 bytes" in text and "found 22" in text


@pytest.mark.parametrize(
    "magic",
    [b"\x01\x00\x08\x03", b"\x00\x00\x09\x03", b"\x00\x00\x08\x02", b"\x1f\x8b\x08\x00"],
)
def test_wrong_magic(tmp_path: Path, magic: bytes) -> None:
    write_set(tmp_path, gz=False)
    path = tmp_path / NAME / FILES["train_images"]
    path.write_bytes(magic + path.read_bytes()[4:])
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    assert str(path) in error_text(excinfo)


def test_short_header(tmp_path: Path) -> None:
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError) as excinfo:
        read_idx(path, 3)
    assert str(path) in error_text(excinfo)


def test_labels_read_as_images_rejected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(5, dtype=np.uint8), gz=False)
    with pytest.raises(DataError, match="dimensions"):
        read_idx(path, 3)


def test_count_mismatch(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False)
    label_path = tmp_path / NAME / FILES["test_labels"]
    write_idx(label_path, np.zeros(11, dtype=np.uint8), gz=False)
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    text = error_text(excinfo)
    assert str(label_path) in text
    assert str(tmp_path / NAME / FILES["test_images"]) in text


def test_label_out_of_range(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False)
    label_path = tmp_path / NAME / FILES["train_labels"]
    labels = np.zeros(20, dtype=np.uint8)
    labels[3] = 10
    write_idx(label_path, labels, gz=False)
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    text = error_text(excinfo)
    assert str(label_path) in text and "0..9" in text


def test_wrong_image_size(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False)
    path = tmp_path / NAME / FILES["train_images"]
    write_idx(path, np.zeros((20, 14, 14), dtype=np.uint8), gz=False)
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    assert str(path) in error_text(excinfo)


def test_missing_file(tmp_path: Path) -> None:
    write_set(tmp_path, gz=False)
    missing = tmp_path / NAME / FILES["test_labels"]
    missing.unlink()
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path)
    text = error_text(excinfo)
    assert str(missing) in text
    assert str(missing) + ".gz" in text
    assert "dataset.download=true" in text


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load_idx_source("kmnist", tmp_path / "nowhere")
    text = error_text(excinfo)
    assert str(tmp_path / "nowhere" / "kmnist" / "train-images-idx3-ubyte.gz") in text
    assert not (tmp_path / "nowhere").exists()


def test_corrupt_gzip(tmp_path: Path) -> None:
    write_set(tmp_path, gz=True)
    path = tmp_path / NAME / (FILES["train_labels"] + ".gz")
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path, verify=False)
    assert str(path) in error_text(excinfo)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    write_set(tmp_path, gz=True)
    path = tmp_path / NAME / (FILES["train_images"] + ".gz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as excinfo:
        load_idx_source(NAME, tmp_path, verify=False)
    assert str(path) in error_text(excinfo)


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown"):
        load_idx_source("cifar10", tmp_path)


def test_error_message_is_one_line() -> None:
    assert str(DataError("first\nsecond")) == "first second"
