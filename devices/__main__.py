"""`python -m devices`: the inventory, and the devices' broker credentials.

  python -m devices check                      validate the inventory
  python -m devices generate                   rewrite the reference inventory
  python -m devices credentials create DEVICE... [--all] [--out FILE]
  python -m devices credentials service ingest|relay NAME [--partitions N] [--out FILE]
  python -m devices credentials rotate NAME... [--out FILE]
  python -m devices credentials revoke NAME...
  python -m devices credentials list
  python -m devices credentials broker-config --dir DIR [--pid-file FILE | --reload-command CMD]

A password is shown once, when it is made (create, service, rotate): on standard output as
"<user name> <password>" lines, or with --out in a new file only its owner may read. Only its
hash is kept. broker-config writes Mosquitto's password file and ACL from the inventory and
the active credentials, then asks the broker to reload them (SIGHUP) without a restart.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from alerts.store import AlertStore
from config.settings import ConfigError, Settings, load_settings
from devices.credentials import (
    CredentialError,
    CredentialStore,
    ServiceRole,
    devices_without_credentials,
    site_of,
    write_broker_files,
)
from devices.generate import generate
from devices.registry import InventoryError, Registry, load_registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devices",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--inventory", type=Path, help="inventory.toml (default: from config)")
    parser.add_argument("--config", type=Path, help="TOML layered over config/default.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the inventory")
    sub.add_parser("generate", help="rewrite the reference inventory")
    creds = sub.add_parser("credentials", help="devices' and services' broker accounts")
    csub = creds.add_subparsers(dest="action", required=True)
    create = csub.add_parser("create", help="new credentials for devices")
    create.add_argument("devices", nargs="*", metavar="DEVICE")
    create.add_argument(
        "--all", action="store_true", help="every device of the inventory without one"
    )
    create.add_argument("--out", type=Path, help="write the passwords to this new file (0600)")
    service = csub.add_parser("service", help="a new account for one of the service's clients")
    service.add_argument("role", choices=[r.value for r in ServiceRole])
    service.add_argument("name", help="user name (and MQTT client id), e.g. mingliang-ingest")
    service.add_argument("--out", type=Path, help="write the password to this new file (0600)")
    service.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="ingest on several nodes: accounts NAME-p00 ... for the N partitions of the sites "
        "(cluster.partitions), sharing one password; give NAME as mqtt.username",
    )
    rotate = csub.add_parser("rotate", help="replace passwords")
    rotate.add_argument("names", nargs="+", metavar="NAME")
    rotate.add_argument("--out", type=Path, help="write the passwords to this new file (0600)")
    revoke = csub.add_parser("revoke", help="withdraw credentials")
    revoke.add_argument("names", nargs="+", metavar="NAME")
    csub.add_parser("list", help="every account, never a password")
    broker = csub.add_parser("broker-config", help="write Mosquitto's password file and ACL")
    broker.add_argument("--dir", type=Path, required=True, help="where to write passwords, acl")
    reload = broker.add_mutually_exclusive_group()
    reload.add_argument("--pid-file", type=Path, help="signal this broker to reload (SIGHUP)")
    reload.add_argument(
        "--reload-command", help="run this to reload, e.g. 'systemctl reload mosquitto'"
    )
    return parser


def _secrets_out(pairs: Iterable[tuple[str, str]], out: Path | None) -> None:
    lines = "".join(f"{name} {password}\n" for name, password in pairs)
    if out is None:
        sys.stdout.write(lines)
        return
    # O_EXCL: a secrets file is never overwritten nor left readable by others.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(lines)
    print(f"wrote {lines.count(chr(10))} passwords to {out} (readable by its owner only)")


def _reload(args: argparse.Namespace) -> str:
    if args.pid_file is not None:
        try:
            pid = int(args.pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise CredentialError(f"cannot signal the broker of {args.pid_file}: {exc}") from exc
        return f"broker {pid} reloaded"
    if args.reload_command:
        result = subprocess.run(args.reload_command, shell=True, check=False)
        if result.returncode != 0:
            raise CredentialError(f"{args.reload_command!r} exited with {result.returncode}")
        return "broker reloaded"
    return "reload the broker (SIGHUP, or systemctl reload mosquitto) to apply them"


def credentials(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    alerts = AlertStore(settings.alert_store_url)
    try:
        alerts.create_schema()
        store = CredentialStore(alerts.engine)
        store.create_schema()
        if args.action == "create":
            unknown = [d for d in args.devices if d not in registry.devices]
            if unknown:
                raise CredentialError(f"not devices of the inventory: {', '.join(unknown)}")
            names = list(args.devices)
            if args.all:
                names += [d for d in devices_without_credentials(registry, store) if d not in names]
            if not names:
                raise CredentialError("name devices, or --all for every device without one")
            pairs = [(n, store.create(n, site_id=site_of(registry, n))) for n in names]
            _secrets_out(pairs, args.out)
        elif args.action == "service" and args.partitions is not None:
            made = store.create_partitioned(args.name, args.role, args.partitions)
            _secrets_out(made.items(), args.out)
        elif args.action == "service":
            _secrets_out([(args.name, store.create(args.name, role=args.role))], args.out)
        elif args.action == "rotate":
            pairs = [(n, store.rotate(n, site_of(registry, n))) for n in args.names]
            _secrets_out(pairs, args.out)
        elif args.action == "revoke":
            missing = [n for n in args.names if not store.revoke(n, site_of(registry, n))]
            if missing:
                raise CredentialError(f"no active credential: {', '.join(missing)}")
            print(f"revoked {len(args.names)}; run broker-config to apply")
        elif args.action == "list":
            for info in store.list():
                created = datetime.fromtimestamp(info.created_ms / 1000, UTC)
                state = "active" if info.active else "revoked"
                print(f"{info.username}\t{info.role}\t{state}\t{created:%Y-%m-%d %H:%M}Z")
        else:
            passwords, acl, files = write_broker_files(registry, store, args.dir)
            print(f"wrote {passwords} and {acl}: {files.accounts} accounts")
            if files.skipped:
                print(
                    f"left out {len(files.skipped)} accounts of devices no longer in the "
                    f"inventory: {', '.join(files.skipped[:10])}"
                )
            print(_reload(args))
    finally:
        alerts.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, args.config)
        path = args.inventory or settings.inventory_path
        if args.command == "generate":
            n_sites, n_devices = generate(path.parent)
            print(f"wrote {n_sites} sites and {n_devices} devices to {path.parent}")
        registry = load_registry(path)
        if args.command == "credentials":
            return credentials(args, settings, registry)
    except (ConfigError, InventoryError, CredentialError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    kinds = Counter(s.kind.value for s in registry.sites.values())
    types = Counter(d.type for d in registry.devices.values())
    print(f"inventory {registry.version}: {len(registry.sites)} sites {dict(kinds)}")
    print(f"{len(registry.devices)} devices: {dict(sorted(types.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
