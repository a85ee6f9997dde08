"""Finding IDX files (data folder, $MERGEPRUNE_DATA, the Debian package's folder), checking their
content, and `mergeprune-data`'s three ways (package, download, neither); never the network or apt."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mergeprune.data import get, locate
from mergeprune.data.idx import load_idx_source
from mergeprune.errors import DataError
from test_idx import FILES, idx_bytes, make_arrays

NAME = "fashion_mnist"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """fashion_mnist redefined as small random files: their checksums, a stand-in for the package's
    folder (empty), no $MERGEPRUNE_DATA, and a url opener that refuses (tests replace it)."""
    arrays = make_arrays(3)
    raw = {key: idx_bytes(arrays[key]) for key in FILES}
    official = {key: gzip.compress(data, compresslevel=9, mtime=0) for key, data in raw.items()}
    source = {"url": "http://files.test/fashion/",
              "files": {k: (FILES[k] + ".gz", hashlib.md5(official[k]).hexdigest()) for k in FILES},
              "content": {k: hashlib.md5(raw[k]).hexdigest() for k in FILES}}
    monkeypatch.setitem(locate.IDX_SOURCES, NAME, source)
    system = tmp_path / "system"
    monkeypatch.setitem(locate.SYSTEM_DIRS, NAME, [system])
    monkeypatch.delenv(locate.ENV_VAR, raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return {"arrays": arrays, "raw": raw, "official": official, "system": system, "data": tmp_path / "data"}


def put(folder: Path, files: dict[str, bytes]) -> None:
    """Write the .gz files into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, data in files.items():
        (folder / (FILES[key] + ".gz")).write_bytes(data)


def regzipped(fake: dict) -> dict[str, bytes]:
    """The same content gzipped differently (as Debian's package is): other .gz bytes."""
    return {k: gzip.compress(v, compresslevel=1, mtime=1_600_000_000) for k, v in fake["raw"].items()}


def test_a_regzipped_copy_passes_the_content_check(fake: dict) -> None:
    files = regzipped(fake)
    assert files["train_images"] != fake["official"]["train_images"]  # the .gz md5 would reject it
    put(fake["data"] / NAME, files)
    train_x, _, test_x, _ = load_idx_source(NAME, fake["data"])
    np.testing.assert_array_equal(train_x, fake["arrays"]["train_images"])
    assert len(test_x) == 12


def test_a_corrupt_file_fails_and_names_both_ways_out(fake: dict) -> None:
    files = regzipped(fake)
    bad = bytearray(fake["raw"]["train_images"])
    bad[-1] ^= 0xFF  # one pixel
    files["train_images"] = gzip.compress(bytes(bad))
    put(fake["data"] / NAME, files)
    with pytest.raises(DataError) as err:
        load_idx_source(NAME, fake["data"])
    text = str(err.value)
    assert "md5 mismatch" in text and "train-images-idx3-ubyte.gz" in text
    assert "dataset.verify=false" in text and f"mergeprune-data {NAME}" in text
    assert load_idx_source(NAME, fake["data"], verify=False)[0][-1, -1, -1] == bad[-1]


def test_files_are_found_in_the_package_folder_and_in_mergeprune_data(fake: dict, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    put(fake["system"], regzipped(fake))
    np.testing.assert_array_equal(load_idx_source(NAME, fake["data"])[1], fake["arrays"]["train_labels"])
    env = tmp_path / "shared"
    put(env / NAME, fake["official"])
    monkeypatch.setenv(locate.ENV_VAR, str(env))
    assert locate.directories(NAME, fake["data"]) == [fake["data"] / NAME, env / NAME, env, fake["system"]]
    np.testing.assert_array_equal(load_idx_source(NAME, fake["data"])[2], fake["arrays"]["test_images"])


def test_a_missing_dataset_names_every_place_and_every_way(fake: dict) -> None:
    with pytest.raises(DataError) as err:
        load_idx_source(NAME, fake["data"])
    text = str(err.value)
    for part in (str(fake["data"] / NAME / "train-images-idx3-ubyte.gz"), str(fake["system"]),
                 f"mergeprune-data {NAME}", "dataset-fashion-mnist", "dataset.download=true"):
        assert part in text, part


def test_data_command_installs_the_package(fake: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def apt(cmd: list[str]) -> bool:
        calls.append(cmd)
        if cmd[-1] == "dataset-fashion-mnist" and any(c[-2:] == ["update", "-q"] for c in calls):
            put(fake["system"], regzipped(fake))  # what the package installs
            return True
        return cmd[-2:] == ["update", "-q"]  # unknown package until the lists are updated

    monkeypatch.setattr(get, "apt_prefix", lambda: ["apt-get"])
    monkeypatch.setattr(get, "run", apt)
    assert get.main([NAME, "--data-dir", str(fake["data"])]) == 0
    assert [c[-3:] for c in calls] == [["-y", "-q", "dataset-fashion-mnist"], ["apt-get", "update", "-q"],
                                       ["-y", "-q", "dataset-fashion-mnist"]]
    assert not (fake["data"] / NAME).exists()  # nothing downloaded


def test_data_command_downloads_where_apt_cannot_run(fake: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    served = {"http://files.test/fashion/" + FILES[k] + ".gz": v for k, v in fake["official"].items()}
    asked = []

    def opener(url: str, timeout: float) -> io.BytesIO:
        asked.append(url)
        return io.BytesIO(served[url])

    monkeypatch.setattr(get, "apt_prefix", lambda: None)
    monkeypatch.setattr(urllib.request, "urlopen", opener)
    assert get.main([NAME, "--data-dir", str(fake["data"])]) == 0
    assert sorted(asked) == sorted(served)
    assert sorted(p.name for p in (fake["data"] / NAME).iterdir()) == sorted(f + ".gz" for f in FILES.values())
    np.testing.assert_array_equal(load_idx_source(NAME, fake["data"])[0], fake["arrays"]["train_images"])


def test_data_command_says_what_to_do_when_nothing_works(fake: dict, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(get, "apt_prefix", lambda: None)
    with caplog.at_level(logging.INFO, logger="mergeprune.data"):
        assert get.main([NAME, "--data-dir", str(fake["data"])]) == 1
    text = caplog.text
    assert "could not obtain fashion_mnist" in text and "sudo apt-get install dataset-fashion-mnist" in text
    assert "http://files.test/fashion/train-images-idx3-ubyte.gz" in text and str(fake["data"] / NAME) in text
    assert not list((fake["data"] / NAME).glob("*.gz"))  # no partial file left


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent: install it with "
                    "`mergeprune-data fashion_mnist` (apt-get install dataset-fashion-mnist)")
def test_the_debian_package_files_load_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    train_x, train_y, test_x, test_y = load_idx_source(NAME, tmp_path / "empty")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
