"""Broker credentials: hashes Mosquitto can check, a secret shown once, files from the inventory.
(The broker itself refusing is tested in tests/ingest/telemetry/test_broker_auth.py.)"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from devices.audit import AuditFilter, AuditLog
from devices.credentials import (
    CredentialError,
    CredentialStore,
    broker_files,
    device_acl,
    mosquitto_hash,
)
from devices.registry import Registry
from tests.support import run_module


def test_the_hash_is_mosquittos_pbkdf2_of_the_password() -> None:
    text = mosquitto_hash("s3cret", salt=b"0123456789ab")
    marker, version, iterations, salt, digest = text.split("$")
    assert (marker, version) == ("", "7")
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", b"0123456789ab", int(iterations))
    assert base64.b64decode(salt) == b"0123456789ab"
    assert base64.b64decode(digest) == expected
    assert mosquitto_hash("s3cret") != mosquitto_hash("s3cret")  # a new salt each time


def test_create_rotate_revoke_and_every_change_audited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    store = CredentialStore(url, actor="cli:root@ops")
    store.create_schema()
    first = store.create("kitchen-0001-fridge-1", site_id="kitchen-0001")
    with pytest.raises(CredentialError, match="already has a credential"):
        store.create("kitchen-0001-fridge-1")
    old_hash = store.active()["kitchen-0001-fridge-1"][1]
    second = store.rotate("kitchen-0001-fridge-1", "kitchen-0001")
    assert second != first
    assert store.active()["kitchen-0001-fridge-1"][1] != old_hash
    assert store.revoke("kitchen-0001-fridge-1", "kitchen-0001")
    assert not store.revoke("kitchen-0001-fridge-1")
    assert "kitchen-0001-fridge-1" not in store.active()
    with pytest.raises(CredentialError, match="no active credential"):
        store.rotate("kitchen-0001-fridge-1")
    assert [(a.username, a.active) for a in store.list()] == [
        ("kitchen-0001-fridge-1", False),
        ("kitchen-0001-fridge-1", False),
    ]

    trail = AuditLog(url).list(AuditFilter(target_kind="credential")).items
    assert [e.action for e in reversed(trail)] == [
        "credential.created",
        "credential.rotated",
        "credential.revoked",
    ]
    assert {(e.actor, e.source, e.site_id) for e in trail} == {
        ("cli:root@ops", "cli:root@ops", "kitchen-0001")
    }
    shown = repr(trail)
    assert first not in shown and second not in shown and "$7$" not in shown
    store.close()


def test_acl_gives_a_device_its_own_topics_and_a_gateway_its_sites(registry: Registry) -> None:
    fridge = device_acl(registry, "kitchen-0001-fridge-1")
    assert fridge == [
        "topic read v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/commands/#",
        "topic write v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/telemetry",
        "topic write v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/status",
        "topic write v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/events",
    ]
    gateway = device_acl(registry, "kitchen-0001-gw")
    written = {line.split("/")[4] for line in gateway if line.startswith("topic write")}
    assert written == {d.device_id for d in registry.devices_at("kitchen-0001")}
    assert all("/kitchen-0001/" in line for line in gateway)
    assert not any("#" in line or "+" in line for line in gateway if "write" in line)


def test_broker_files_leave_out_devices_gone_from_the_inventory(registry: Registry) -> None:
    accounts = {
        "kitchen-0001-fridge-1": ("device", "$7$hash-a"),
        "kitchen-9999-fridge-1": ("device", "$7$hash-b"),
        "mingliang-ingest": ("ingest", "$7$hash-c"),
        "mingliang-relay": ("relay", "$7$hash-d"),
    }
    files = broker_files(registry, accounts)
    assert files.passwords.splitlines() == [
        "kitchen-0001-fridge-1:$7$hash-a",
        "mingliang-ingest:$7$hash-c",
        "mingliang-relay:$7$hash-d",
    ]
    assert files.skipped == ("kitchen-9999-fridge-1",)
    assert "kitchen-9999" not in files.acl
    assert "user mingliang-relay\ntopic write v1/alerts/#\n" in files.acl
    assert "user mingliang-ingest\ntopic read v1/sites/+/devices/+/telemetry\n" in files.acl


def devices_cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINGLIANG_PATHS__DATA_DIR": str(data)}
    return run_module("devices", "credentials", *args, env=env)


def test_cli_shows_a_password_once_and_writes_the_broker_files(tmp_path: Path) -> None:
    made = devices_cli(tmp_path, "create", "kitchen-0001-fridge-1", "street-cam-00001")
    assert made.returncode == 0, made.stderr
    pairs = dict(line.split(" ") for line in made.stdout.splitlines())
    assert set(pairs) == {"kitchen-0001-fridge-1", "street-cam-00001"}

    out = tmp_path / "service.secrets"
    service = devices_cli(tmp_path, "service", "ingest", "mingliang-ingest", "--out", str(out))
    assert service.returncode == 0, service.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    again = devices_cli(tmp_path, "service", "ingest", "mingliang-ingest", "--out", str(out))
    assert again.returncode == 1 and "already has a credential" in again.stderr

    unknown = devices_cli(tmp_path, "create", "kitchen-0001-toaster-9")
    assert unknown.returncode == 1
    assert "not devices of the inventory: kitchen-0001-toaster-9" in unknown.stderr

    listed = devices_cli(tmp_path, "list")
    written = devices_cli(tmp_path, "broker-config", "--dir", str(tmp_path / "broker"))
    assert written.returncode == 0, written.stderr
    for secret in [*pairs.values(), out.read_text().split()[1]]:
        assert secret not in listed.stdout + written.stdout
        assert secret not in (tmp_path / "broker" / "passwords").read_text()
    assert "3 accounts" in written.stdout
    assert stat.S_IMODE((tmp_path / "broker" / "passwords").stat().st_mode) == 0o640
