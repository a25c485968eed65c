"""`python -m api`: run the service (ingest, alert engine, camera workers, the HTTP API), or
manage who may use it.

  python -m api [--config FILE] [serve] [--no-ingest] [--log-level LEVEL]
  python -m api [--config FILE] tokens create --name NAME --role viewer|supervisor|admin
                                              [--sites ID,ID | --sites '*']
                                              [--expires-in 30d|12h|90m]
  python -m api [--config FILE] tokens list
  python -m api [--config FILE] tokens revoke NAME
  python -m api [--config FILE] tokens camera CAMERA_ID [--expires-in 30d|12h|90m]
                                              (a camera's WHIP token)
  python -m api [--config FILE] tokens revoke-camera CAMERA_ID

Without a command it serves. `--config` may also follow the command. Creating and revoking
tokens is recorded in the audit trail as cli:<user>@<host> (GET /api/v1/audit).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import uvicorn

from alerts.store import AlertStore, AlertStoreError, now_ms
from analytics.rules import RulesError, load_rules
from analytics.video.profiles import ProfileBook, ProfileError
from api.auth import iso_ms
from config.settings import ConfigError, Settings, load_settings
from devices.audit import cli_actor
from devices.models import CAMERA_TYPES
from devices.pki import TlsError, check_server_files, client_context
from devices.registry import InventoryError, Registry, load_registry
from devices.tokens import Role, TokenInfo, TokenStore, parse_sites
from service.mingliang import create_app

_COMMANDS = ("serve", "tokens")
_UNIT_S = {"d": 86_400, "h": 3_600, "m": 60}
_MAX_LIFETIME_S = 10 * 365 * 86_400


def lifetime_s(text: str) -> int:
    """`--expires-in`: a whole number of days, hours or minutes (30d, 12h, 90m), in seconds."""
    match = re.fullmatch(r"\s*(\d{1,7})\s*([dhm])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a lifetime: a whole number of days, hours or minutes, such as "
            "30d, 12h or 90m"
        )
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if not 0 < seconds <= _MAX_LIFETIME_S:
        raise argparse.ArgumentTypeError(f"{text!r}: a lifetime is 1 minute to 10 years")
    return seconds


def _parser() -> argparse.ArgumentParser:
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML file layered over config/default.toml (or set MINGLIANG_CONFIG)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[config],
    )
    sub = parser.add_subparsers(dest="command", metavar="{serve,tokens}")
    serve = sub.add_parser("serve", help="run the service (the default)", parents=[config])
    serve.add_argument("--no-ingest", action="store_true", help="serve the HTTP API only")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    tokens = sub.add_parser(
        "tokens", help="create, list and revoke API and camera tokens", parents=[config]
    )
    tsub = tokens.add_subparsers(dest="action", required=True)
    create = tsub.add_parser(
        "create", help="create a token and print it (shown only once)", parents=[config]
    )
    create.add_argument("--name", required=True, help="who or what holds it (unique)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument(
        "--sites",
        help="comma-separated site ids of the inventory the token is limited to, or * for "
        "all sites (the default; an admin token always covers all)",
    )
    _expires_in(create)
    tsub.add_parser("list", help="list tokens (never their secrets)", parents=[config])
    revoke = tsub.add_parser("revoke", help="revoke a token by name", parents=[config])
    revoke.add_argument("name")
    camera = tsub.add_parser(
        "camera", help="create a camera's WHIP publishing token", parents=[config]
    )
    camera.add_argument("camera_id")
    _expires_in(camera)
    uncamera = tsub.add_parser(
        "revoke-camera", help="revoke every token of a camera", parents=[config]
    )
    uncamera.add_argument("camera_id")
    return parser


def _expires_in(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expires-in",
        type=lifetime_s,
        metavar="30d|12h|90m",
        help="refuse the token from this long after now on (the default: never)",
    )


def _arguments(argv: list[str]) -> argparse.Namespace:
    """Parse, serving when no command is named (`python -m api --no-ingest` included)."""
    if not any(word in _COMMANDS for word in argv) and argv not in (["-h"], ["--help"]):
        argv = ["serve", *argv]
    return _parser().parse_args(argv)


def _serve(settings: Settings, registry: Registry, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per InfluxDB request would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Files an operator edits are checked before anything starts: one clear line, no trace.
    try:
        load_rules(settings.rules_path, registry)
        ProfileBook(settings.profiles_dir, registry)
        _check_tls(settings)
    except (RulesError, ProfileError, TlsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, registry, run_ingest=not args.no_ingest)
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=args.log_level,
        access_log=False,
        ssl_certfile=settings.api.tls_cert,
        ssl_keyfile=settings.api.tls_key,
        # Server-Sent Events streams never end on their own; their clients reconnect with
        # Last-Event-ID, so a stop need not wait for them.
        timeout_graceful_shutdown=5,
    )
    return 0


def _check_tls(settings: Settings) -> None:
    """The TLS files named in the settings load, or `TlsError` says which does not and why."""
    if settings.api.tls_cert is not None and settings.api.tls_key is not None:
        check_server_files(settings.api.tls_cert, settings.api.tls_key)
    if settings.mqtt.tls_ca is not None:
        client_context(settings.mqtt.tls_ca)


def _sites(text: str | None, registry: Registry) -> frozenset[str] | None:
    sites = parse_sites(text or "*")
    unknown = sorted((sites or frozenset()) - registry.sites.keys())
    if unknown:
        raise ValueError(
            f"--sites: {', '.join(repr(s) for s in unknown)} not in the inventory "
            f"({registry.version}); `python -m devices check` lists what it holds"
        )
    return sites


def _expiry(args: argparse.Namespace) -> int | None:
    """The epoch ms `--expires-in` names, if it was given."""
    seconds: int | None = getattr(args, "expires_in", None)
    return None if seconds is None else now_ms() + seconds * 1000


def _until(expires_ms: int | None) -> str:
    return "" if expires_ms is None else f", until {iso_ms(expires_ms)}"


def _listed(info: TokenInfo, now: int) -> str:
    """One line of `tokens list`: name, role, sites, state, and when it expires (or never)."""
    state = "revoked" if info.revoked_ms else "expired" if info.expired(now) else "active"
    scope = ",".join(sorted(info.sites)) if info.sites else "*"
    expires = "never" if info.expires_ms is None else iso_ms(info.expires_ms)
    return f"{info.name}\t{info.role.value}\t{scope}\t{state}\t{expires}"


def _tokens(settings: Settings, registry: Registry, args: argparse.Namespace) -> int:
    store = AlertStore(settings.alert_store_url)
    store.create_schema()
    tokens = TokenStore(store.engine)
    tokens.create_schema()
    # The audit trail's who and from where: a command line has no other identity.
    by = cli_actor()
    try:
        if args.action == "create":
            sites = _sites(args.sites, registry)
            expires = _expiry(args)
            secret, info = tokens.create(
                args.name, Role(args.role), sites, expires_ms=expires, actor=by, source=by
            )
            scope = ", ".join(sorted(sites)) if sites else "all sites"
            print(
                f"token for {info.name} ({info.role.value}, {scope}{_until(expires)}); "
                "it is shown only once:"
            )
            print(secret)
        elif args.action == "camera":
            device = registry.devices.get(args.camera_id)
            if device is None or device.type not in CAMERA_TYPES:
                print(
                    f"error: {args.camera_id!r} is not a camera of the inventory", file=sys.stderr
                )
                return 1
            expires = _expiry(args)
            secret = tokens.create_camera(
                args.camera_id, expires_ms=expires, site_id=device.site_id, actor=by, source=by
            )
            print(
                f"WHIP token for camera {args.camera_id}{_until(expires)}; it is shown only once:"
            )
            print(secret)
        elif args.action == "revoke-camera":
            device = registry.devices.get(args.camera_id)
            site = None if device is None else device.site_id
            count = tokens.revoke_camera(args.camera_id, site_id=site, actor=by, source=by)
            print(f"revoked {count} token(s) of {args.camera_id}")
        elif args.action == "list":
            now = now_ms()
            for info in tokens.list():
                print(_listed(info, now))
        elif not tokens.revoke(args.name, actor=by, source=by):
            print(f"error: no active token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.name}")
    finally:
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(os.environ, getattr(args, "config", None))
        registry = load_registry(settings.inventory_path)
    except (ConfigError, InventoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "tokens":
            return _tokens(settings, registry, args)
        return _serve(settings, registry, args)
    except (AlertStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
