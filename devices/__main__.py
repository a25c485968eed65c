"""`python -m devices check` validates the inventory; `generate` rewrites the reference one."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from config.settings import ConfigError, load_settings
from devices.generate import generate
from devices.registry import InventoryError, load_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devices", description=__doc__)
    parser.add_argument("command", choices=("check", "generate"))
    parser.add_argument("--inventory", type=Path, help="inventory.toml (default: from config)")
    args = parser.parse_args(argv)
    try:
        path = args.inventory or load_settings(os.environ).inventory_path
        if args.command == "generate":
            n_sites, n_devices = generate(path.parent)
            print(f"wrote {n_sites} sites and {n_devices} devices to {path.parent}")
        registry = load_registry(path)
    except (ConfigError, InventoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    kinds = Counter(s.kind.value for s in registry.sites.values())
    types = Counter(d.type for d in registry.devices.values())
    print(f"inventory {registry.version}: {len(registry.sites)} sites {dict(kinds)}")
    print(f"{len(registry.devices)} devices: {dict(sorted(types.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
