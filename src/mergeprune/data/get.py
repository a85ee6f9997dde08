"""`mergeprune-data <source>`: obtain an IDX dataset's files in one command.

1. Already there (data.locate's folders) and verified: nothing to do.
2. The source has a Debian package and apt-get can run (root, or sudo without a password): install
   it (`apt-get install -y dataset-fashion-mnist`; `apt-get update` first only when the package is
   unknown), then verify.
3. Otherwise download the files from the source's official location into `<data-dir>/<source>/`,
   verified before they are put in place.
4. When nothing worked, say exactly what to do, and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mergeprune.data.idx import download_source, find_source
from mergeprune.data.locate import DEBIAN_PACKAGES, IDX_SOURCES, directories, ways_to_get
from mergeprune.errors import DataError

log = logging.getLogger("mergeprune.data")


def run(cmd: list[str]) -> bool:
    """Run a command, its output to the log; True when it succeeded."""
    log.info("running: %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        log.warning("%s: %s", cmd[0], err)
        return False
    for line in (done.stdout + done.stderr).strip().splitlines()[-5:]:
        log.info("  %s", line)
    return done.returncode == 0


def apt_prefix() -> list[str] | None:
    """How to run apt-get here (as root, or through password-less sudo), or None where it cannot run."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return ["apt-get"]
    if shutil.which("sudo") and run(["sudo", "-n", "true"]):
        return ["sudo", "-n", "apt-get"]
    return None


def install_package(package: str) -> bool:
    """apt-get install the package (updating the package lists once if that fails); True on success."""
    prefix = apt_prefix()
    if prefix is None:
        log.info("apt-get is not available here (or not as root): cannot install %s", package)
        return False
    env_ok = ["env", "DEBIAN_FRONTEND=noninteractive"]
    install = [*env_ok, *prefix, "install", "-y", "-q", package]
    return run(install) or (run([*env_ok, *prefix, "update", "-q"]) and run(install))


def available(name: str, data_dir: Path) -> Path | None:
    """The folder a verified copy of the source is in, or None (a problem is logged)."""
    try:
        return find_source(name, data_dir)["train_images"].parent
    except DataError as err:
        log.info("%s", err)
        return None


def obtain(name: str, data_dir: Path) -> Path | None:
    """Make the source available: present, else the package, else a download; its folder, or None."""
    found = available(name, data_dir)
    if found is not None:
        log.info("%s is already available in %s", name, found)
        return found
    package = DEBIAN_PACKAGES.get(name)
    if package and install_package(package):
        found = available(name, data_dir)
        if found is not None:
            log.info("%s installed from the Debian package %s: %s", name, package, found)
            return found
    try:
        found = download_source(name, data_dir)
    except DataError as err:
        log.warning("%s", err)
        return None
    log.info("%s downloaded and verified: %s", name, found)
    return found


def instructions(name: str, data_dir: Path) -> str:
    """What to do by hand when nothing worked."""
    source = IDX_SOURCES[name]
    urls = ", ".join(source["url"] + f for f, _ in source["files"].values())
    package = DEBIAN_PACKAGES.get(name)
    apt = f"install the Debian package (`sudo apt-get install {package}`), or " if package else ""
    return (f"could not obtain {name}: {apt}download {urls} and put them in {data_dir / name} "
            f"(looked in: {', '.join(str(d) for d in directories(name, data_dir))}); "
            f"in a job, {ways_to_get(name, data_dir)}")


def main(argv: list[str] | None = None) -> int:
    """Obtain the named source; exit 0 when it is available and verified."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="mergeprune-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=sorted(IDX_SOURCES))
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="where to download to (the jobs' paths.data_dir; default: data)")
    args = parser.parse_args(argv)
    if obtain(args.source, args.data_dir) is not None:
        return 0
    log.error("mergeprune-data: %s", instructions(args.source, args.data_dir))
    return 1


if __name__ == "__main__":
    sys.exit(main())
