"""Loading of the IDX files of MNIST, Fashion-MNIST and KMNIST from a data directory."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import shutil
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from mergeprune.errors import DataError

log = logging.getLogger(__name__)

_IDX_FILE_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_FILE_ORDER: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")

_UNSIGNED_BYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_SIZE = 28
_NUM_CLASSES = 10
_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


def _sources(url: str, md5s: tuple[str, str, str, str]) -> dict:
    """Build one IDX_SOURCES entry from a base url and the four md5 sums in file order."""
    files = {key: (_IDX_FILE_NAMES[key], md5) for key, md5 in zip(_FILE_ORDER, md5s, strict=True)}
    return {"url": url, "files": files}


IDX_SOURCES: dict[str, dict] = {
    "mnist": _sources(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    "fashion_mnist": _sources(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    "kmnist": _sources(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        (
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
    ),
}


def _md5(path: Path) -> str:
    """Return the hex md5 digest of a file's bytes."""
    digest = hashlib.md5()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return digest.hexdigest()


def _verify_md5(path: Path, expected: str) -> None:
    """Raise DataError if the md5 of a file differs from the expected one."""
    actual = _md5(path)
    if actual != expected:
        raise DataError(
            f"md5 mismatch for {path}: expected {expected}, found {actual} "
            "(corrupt or non-standard file; delete it to re-download, or disable verification)"
        )


def _read_bytes(path: Path) -> bytes:
    """Return the contents of an IDX file, decompressed when its name ends in .gz."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if Path(path).suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot decompress gzip file {path}: {exc}") from exc


def _check_magic(data: bytes, path: Path, expected_dims: int) -> None:
    """Validate the 4-byte IDX magic number (zero, zero, 0x08, expected_dims)."""
    if len(data) < 4:
        raise DataError(f"{path} is too short for an IDX header: {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        hint = " (looks gzip-compressed; give it a .gz name)" if data[:2] == _GZIP_MAGIC else ""
        raise DataError(f"{path} has a bad IDX magic number 0x{data[:4].hex()}{hint}")
    if data[2] != _UNSIGNED_BYTE:
        raise DataError(
            f"{path} has IDX data type code 0x{data[2]:02x}, expected 0x08 (unsigned byte)"
        )
    if data[3] != expected_dims:
        raise DataError(f"{path} has {data[3]} IDX dimensions, expected {expected_dims}")


def _parse_dims(data: bytes, path: Path, ndims: int) -> tuple[int, ...]:
    """Return the big-endian uint32 dimension sizes that follow the magic number."""
    header_len = 4 + 4 * ndims
    if len(data) < header_len:
        raise DataError(
            f"{path} is truncated in its IDX header: expected {header_len} bytes, found {len(data)}"
        )
    sizes = np.frombuffer(data, dtype=">u4", count=ndims, offset=4)
    return tuple(int(size) for size in sizes)


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Read one IDX file (raw or .gz) into a numpy uint8 array, validating it."""
    path = Path(path)
    data = _read_bytes(path)
    _check_magic(data, path, expected_dims)
    dims = _parse_dims(data, path, expected_dims)
    header_len = 4 + 4 * expected_dims
    expected = math.prod(dims)
    found = len(data) - header_len
    if found != expected:
        raise DataError(
            f"{path} has a wrong payload size for dims {list(dims)}: "
            f"expected {expected} bytes, found {found}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def _candidates(directory: Path, gz_name: str) -> tuple[Path, Path]:
    """Return the (.gz, raw) paths under which one IDX file may be stored."""
    return directory / gz_name, directory / gz_name.removesuffix(".gz")


def _locate(directory: Path, gz_name: str) -> Path | None:
    """Return the existing file for gz_name, preferring .gz over raw, or None."""
    for candidate in _candidates(directory, gz_name):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(directory: Path, gz_name: str) -> str:
    """Return the one-line message for an IDX file that is absent and not downloaded."""
    gz_path, raw_path = _candidates(directory, gz_name)
    return (
        f"missing data file: looked for {gz_path} and {raw_path}; "
        "set dataset.download=true when online, "
        f"or put the standard IDX files in {directory}"
    )


def _fetch(url: str, target: Path) -> None:
    """Stream url into target (a temporary file); raise DataError naming the url on failure."""
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            with open(target, "wb") as handle:
                shutil.copyfileobj(response, handle, _CHUNK_BYTES)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"download of {url} failed: {exc}") from exc


def _download(url: str, dest: Path, md5: str) -> Path:
    """Download url to dest through a temporary file, verify its md5, then rename it in place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"downloading {url} -> {dest}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fetch(url, tmp)
        actual = _md5(tmp)
        if actual != md5:
            raise DataError(
                f"md5 mismatch for {dest} downloaded from {url}: expected {md5}, found {actual}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _source(name: str) -> dict:
    """Return the IDX_SOURCES entry for name or raise DataError listing the known ones."""
    if name not in IDX_SOURCES:
        raise DataError(f"unknown IDX source {name!r}; known: {', '.join(sorted(IDX_SOURCES))}")
    return IDX_SOURCES[name]


def _obtain(source: dict, key: str, directory: Path, download: bool, verify: bool) -> Path:
    """Return the path of one IDX file, downloading and md5-checking it as requested."""
    gz_name, md5 = source["files"][key]
    found = _locate(directory, gz_name)
    if found is None:
        if not download:
            raise DataError(_missing_message(directory, gz_name))
        return _download(source["url"] + gz_name, directory / gz_name, md5)
    if verify and found.suffix == ".gz":
        _verify_md5(found, md5)
    return found


def _check_images(images: np.ndarray, path: Path) -> None:
    """Raise DataError unless images are shaped [N, 28, 28]."""
    if images.shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE):
        raise DataError(
            f"{path} holds images of size {images.shape[1]}x{images.shape[2]}, "
            f"expected {_IMAGE_SIZE}x{_IMAGE_SIZE}"
        )


def _check_labels(labels: np.ndarray, path: Path) -> None:
    """Raise DataError if any label lies outside 0..9."""
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise DataError(
            f"{path} contains label {int(labels.max())}, expected labels in 0..{_NUM_CLASSES - 1}"
        )


def _check_counts(
    images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path
) -> None:
    """Raise DataError if the image and label files hold different numbers of items."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"count mismatch: {image_path} has {images.shape[0]} images "
            f"but {label_path} has {labels.shape[0]} labels"
        )


def _load_split(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check one (images, labels) pair; labels are returned as int64."""
    images = read_idx(image_path, 3)
    labels = read_idx(label_path, 1)
    _check_images(images, image_path)
    _check_counts(images, labels, image_path, label_path)
    _check_labels(labels, label_path)
    return images, labels.astype(np.int64)


def load_idx_source(
    name: str, data_dir: str | Path, download: bool = False, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (train_images uint8 [N,28,28], train_labels int64 [N], test_images, test_labels) of one IDX source."""
    source = _source(name)
    directory = Path(data_dir) / name
    paths = {key: _obtain(source, key, directory, download, verify) for key in _FILE_ORDER}
    train_images, train_labels = _load_split(paths["train_images"], paths["train_labels"])
    test_images, test_labels = _load_split(paths["test_images"], paths["test_labels"])
    return train_images, train_labels, test_images, test_labels
