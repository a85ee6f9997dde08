"""Write the composed config of the default job and of every config-group option as JSON files.

Composes conf/config.yaml with Hydra's compose API (as the tests do), once with no override and once
per `group=option` (every file of every group under conf/ except Hydra's own, which includes
`debug=fast` and every `experiment=<preset>`), and writes `OmegaConf.to_container(cfg, resolve=True)`
(no hydra node) into OUT/<override>.json. Compare two folders with `diff -r` to check that a change
leaves every composed config byte-identical (job keys and seeds are hashes of these configs).

    python scripts/dump_configs.py /tmp/cfg_before                 # sorted keys
    python scripts/dump_configs.py --order /tmp/cfg_before_order   # keys in composed order
    python scripts/dump_configs.py --conf /tmp/old/conf /tmp/old   # another conf/ folder

`${oc.env:WANDB_MODE,offline}` resolves from the environment: dump both folders under the same one.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mergeprune.cli  # noqa: F401  (registers the resolvers and schemas, as the CLI does)

ROOT = Path(__file__).resolve().parents[1]


log = logging.getLogger("dump_configs")


def overrides(conf: Path) -> list[str]:
    """No override, then `group=option` for every option file of every group (Hydra's own left out)."""
    found = [""]
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group != "." and not group.startswith("hydra"):
            found.append(f"{group}={path.stem}")
    return found


def composed(conf: Path, override: str) -> dict[str, Any]:
    """The resolved config of one override (hydra node excluded) as plain data."""
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[override] if override else [])
    return OmegaConf.to_container(cfg, resolve=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: dump every composed config into a folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the JSON files (created)")
    parser.add_argument("--conf", type=Path, default=ROOT / "conf", help="config folder (default: conf/)")
    parser.add_argument("--order", action="store_true", help="keep the composed key order (no sort_keys)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    conf = args.conf.resolve()
    names = overrides(conf)
    for override in names:
        text = json.dumps(composed(conf, override), indent=1, sort_keys=not args.order)
        (args.out / f"{override.replace('/', '_') or 'default'}.json").write_text(text + "\n")
    log.info("%d configs from %s written to %s", len(names), conf, args.out)


if __name__ == "__main__":
    main()
