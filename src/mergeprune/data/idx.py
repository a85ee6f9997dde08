"""Loading and checking the IDX files of MNIST, Fashion-MNIST and KMNIST (found by data.locate)."""

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

from mergeprune.data.locate import FILE_ORDER, IDX_SOURCES, directories, missing_message
from mergeprune.errors import DataError

log = logging.getLogger(__name__)

_UNSIGNED_BYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_SIZE = 28
_NUM_CLASSES = 10
_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


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


def _verify(path: Path, name: str, gz_md5: str, content_md5: str | None) -> None:
    """Raise DataError unless the file is a standard one: its decompressed bytes have the known
    content md5, or (a .gz) its bytes have the known .gz md5. Raw files of a source whose content md5
    is unknown cannot be checked and pass."""
    if content_md5 is not None:
        actual = hashlib.md5(_read_bytes(path)).hexdigest()
        if actual == content_md5 or (path.suffix == ".gz" and _md5(path) == gz_md5):
            return
        found, expected, what = actual, content_md5, "decompressed content"
    elif path.suffix == ".gz":
        found, expected, what = _md5(path), gz_md5, "gzip file"
        if found == expected:
            return
    else:
        return
    raise DataError(
        f"md5 mismatch for {path}: its {what} has md5 {found}, the standard file's is {expected} "
        f"(corrupt or not the standard data); delete it and get the data again "
        f"(`mergeprune-data {name}`), or set dataset.verify=false to use it unchecked"
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


def _fetch(url: str, target: Path) -> None:
    """Stream url into target (a temporary file); raise DataError naming the url on failure."""
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            with open(target, "wb") as handle:
                shutil.copyfileobj(response, handle, _CHUNK_BYTES)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"download of {url} failed: {exc}") from exc


def _download(source: dict, name: str, key: str, directory: Path) -> Path:
    """Download one file into directory through a temporary file, verify it, then rename it in place."""
    gz_name, md5 = source["files"][key]
    url, dest = source["url"] + gz_name, directory / gz_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", suffix=f"-{gz_name}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fetch(url, tmp)
        _verify(tmp, name, md5, source["content"].get(key))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_source(name: str, data_dir: str | Path) -> Path:
    """Download every file of a source into data_dir/name (verified); returns the folder."""
    source, directory = _source(name), Path(data_dir) / name
    for key in FILE_ORDER:
        _download(source, name, key, directory)
    return directory


def _source(name: str) -> dict:
    """Return the IDX_SOURCES entry for name or raise DataError listing the known ones."""
    if name not in IDX_SOURCES:
        raise DataError(f"unknown IDX source {name!r}; known: {', '.join(sorted(IDX_SOURCES))}")
    return IDX_SOURCES[name]


def _complete(source: dict, directory: Path) -> dict[str, Path] | None:
    """The four files of a source in one folder, or None when any is missing."""
    found = {key: _locate(directory, source["files"][key][0]) for key in FILE_ORDER}
    return None if None in found.values() else found  # type: ignore[return-value]


def find_source(name: str, data_dir: str | Path, download: bool = False,
                verify: bool = True) -> dict[str, Path]:
    """The four files of a source from the first folder that holds them all (locate.directories),
    downloaded into data_dir/name when nowhere and `download`; verified unless `verify` is false."""
    source = _source(name)
    for directory in directories(name, data_dir):
        found = _complete(source, directory)
        if found is not None:
            log.info("%s: IDX files from %s", name, directory)
            break
    else:
        first = Path(data_dir) / name
        if not download:
            missing = next(k for k in FILE_ORDER if _locate(first, source["files"][k][0]) is None)
            raise DataError(missing_message(name, data_dir, source["files"][missing][0]))
        found = {key: _locate(first, source["files"][key][0]) or _download(source, name, key, first)
                 for key in FILE_ORDER}
    if verify:
        for key, path in found.items():
            _verify(path, name, source["files"][key][1], source["content"].get(key))
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
    paths = find_source(name, data_dir, download, verify)
    train_images, train_labels = _load_split(paths["train_images"], paths["train_labels"])
    test_images, test_labels = _load_split(paths["test_images"], paths["test_labels"])
    return train_images, train_labels, test_images, test_labels
