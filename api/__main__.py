"""`python -m api`: the service process (ingest and the HTTP API) with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from api.app import create_app
from config.settings import ConfigError, load_settings
from devices.registry import InventoryError, load_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file over config/default.toml")
    parser.add_argument("--no-ingest", action="store_true", help="serve the API only")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per InfluxDB request would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings(os.environ, args.config)
        registry = load_registry(settings.inventory_path)
    except (ConfigError, InventoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, registry, run_ingest=not args.no_ingest)
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
