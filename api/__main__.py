"""`python -m api`: the service process (ingest, alert engine and the HTTP API), or its tokens.

python -m api [serve] [--config FILE] [--no-ingest]
python -m api tokens create --name NAME --role viewer|supervisor|admin [--sites ID,ID]
python -m api tokens list
python -m api tokens revoke NAME
python -m api tokens camera CAMERA_ID          (a WHIP publishing token for one camera)
python -m api tokens revoke-camera CAMERA_ID
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from alerts.store import AlertStore, AlertStoreError
from config.settings import ConfigError, Settings, load_settings
from devices.models import CAMERA_TYPES
from devices.registry import InventoryError, load_registry
from devices.tokens import Role, TokenStore, parse_sites
from service.mingliang import create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m api", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="TOML file over config/default.toml")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service (the default)")
    serve.add_argument("--no-ingest", action="store_true", help="serve the API only")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    tokens = sub.add_parser("tokens", help="create, list and revoke API tokens")
    tsub = tokens.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="create a token and print it (shown only once)")
    create.add_argument("--name", required=True, help="who or what holds it (unique)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument(
        "--sites", help="comma-separated site ids the token is limited to (default *: all)"
    )
    tsub.add_parser("list", help="list tokens (never their secrets)")
    revoke = tsub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    camera = tsub.add_parser("camera", help="create a camera's WHIP publishing token")
    camera.add_argument("camera_id")
    uncamera = tsub.add_parser("revoke-camera", help="revoke every token of a camera")
    uncamera.add_argument("camera_id")
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per InfluxDB request would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        registry = load_registry(settings.inventory_path)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, registry, run_ingest=not args.no_ingest)
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=args.log_level,
        access_log=False,
        # Server-Sent Events streams never end on their own; their clients reconnect with
        # Last-Event-ID, so a stop need not wait for them.
        timeout_graceful_shutdown=5,
    )
    return 0


def _tokens(settings: Settings, args: argparse.Namespace) -> int:
    store = AlertStore(settings.alert_store_url)
    store.create_schema()
    tokens = TokenStore(store.engine)
    tokens.create_schema()
    try:
        if args.action == "create":
            sites = parse_sites(args.sites or "*")
            secret, info = tokens.create(args.name, Role(args.role), sites)
            scope = ", ".join(sorted(sites)) if sites else "all sites"
            print(f"token for {info.name} ({info.role.value}, {scope}); it is shown only once:")
            print(secret)
        elif args.action == "camera":
            registry = load_registry(settings.inventory_path)
            device = registry.devices.get(args.camera_id)
            if device is None or device.type not in CAMERA_TYPES:
                print(
                    f"error: {args.camera_id!r} is not a camera of the inventory", file=sys.stderr
                )
                return 1
            print(f"WHIP token for camera {args.camera_id}; it is shown only once:")
            print(tokens.create_camera(args.camera_id))
        elif args.action == "revoke-camera":
            print(f"revoked {tokens.revoke_camera(args.camera_id)} token(s) of {args.camera_id}")
        elif args.action == "list":
            for info in tokens.list():
                state = "revoked" if info.revoked_ms else "active"
                scope = ",".join(sorted(info.sites)) if info.sites else "*"
                print(f"{info.name}\t{info.role.value}\t{scope}\t{state}")
        elif not tokens.revoke(args.name):
            print(f"error: no active token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.name}")
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "tokens":
            return _tokens(settings, args)
        if args.command is None:  # plain `python -m api` serves
            args = _parser().parse_args(["serve"])
        return _serve(settings, args)
    except (AlertStoreError, InventoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
