"""The IDX sources (official url, checksums), where their files are looked for, and what to say
when they are nowhere.

In order: `${paths.data_dir}/<source>/`, then `$MERGEPRUNE_DATA/<source>/` and `$MERGEPRUNE_DATA`
itself when that variable is set, then the folder a system package installs them to (Debian's
`dataset-fashion-mnist`: /usr/share/datasets/fashion-mnist/). The first folder holding all four
files is used.
"""

from __future__ import annotations

import os
from pathlib import Path

_IDX_FILE_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

FILE_ORDER: tuple[str, ...] = ("train_images", "train_labels", "test_images", "test_labels")


def _sources(url: str, md5s: tuple[str, str, str, str],
             content: tuple[str, str, str, str] | None = None) -> dict:
    """One IDX_SOURCES entry: base url, the four .gz md5 sums in file order and, where known, the md5
    sums of the decompressed files (`content`)."""
    files = {key: (_IDX_FILE_NAMES[key], md5) for key, md5 in zip(FILE_ORDER, md5s, strict=True)}
    return {"url": url, "files": files,
            "content": dict(zip(FILE_ORDER, content, strict=True)) if content else {}}


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
        # md5 of the decompressed files (47,040,016 / 60,008 / 7,840,016 / 10,008 bytes), measured on
        # the files of Debian's dataset-fashion-mnist: any gzip of the standard files passes
        (
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "9018921c3c673c538a1fc5bad174d6f9",
            "8181f5470baa50b63fa0f6fddb340f0a",
            "15d484375f8d13e6eb1aabb0c3f46965",
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

# folders system packages install a source's IDX files to, and the packages (Debian names)
SYSTEM_DIRS: dict[str, list[Path]] = {"fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")]}
DEBIAN_PACKAGES: dict[str, str] = {"fashion_mnist": "dataset-fashion-mnist"}
ENV_VAR = "MERGEPRUNE_DATA"


def directories(name: str, data_dir: str | Path) -> list[Path]:
    """The folders a source's files are looked for in, in order."""
    found = [Path(data_dir) / name]
    env = os.environ.get(ENV_VAR)
    if env:
        found += [Path(env) / name, Path(env)]
    return found + list(SYSTEM_DIRS.get(name, []))


def ways_to_get(name: str, data_dir: str | Path) -> str:
    """Every way to obtain a source's files, as one clause."""
    package = DEBIAN_PACKAGES.get(name)
    via = f" (installs Debian's {package} where apt-get is available, else downloads)" if package \
        else " (downloads the files)"
    return (f"get it with `mergeprune-data {name}`{via}, or set dataset.download=true when online, "
            f"or put the four standard IDX files (raw or .gz) in {Path(data_dir) / name}")


def missing_message(name: str, data_dir: str | Path, gz_name: str) -> str:
    """The one-line error for a source whose files are in none of its folders."""
    first = Path(data_dir) / name
    others = directories(name, data_dir)[1:]
    also = f"; also looked in {', '.join(str(d) for d in others)}" if others else ""
    return (f"missing data for {name}: looked for {first / gz_name} and {first / gz_name.removesuffix('.gz')}"
            f"{also}; {ways_to_get(name, data_dir)}")
