"""`python -m api tokens`: what an administrator runs to give supervisors access."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devices.tokens import Role, TokenStore
from tests.support import run_module

ROOT = Path(__file__).resolve().parents[2]


def tokens(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINGLIANG_PATHS__DATA_DIR": str(data)}
    return run_module("api", "tokens", *args, env=env)


def test_create_list_revoke(tmp_path: Path) -> None:
    made = tokens(tmp_path, "create", "--name", "wang.li", "--role", "supervisor",
                  "--sites", "kitchen-0001,kitchen-0002")  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    assert "shown only once" in made.stdout

    store = TokenStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        who = store.verify(secret)
        assert who is not None and who.role is Role.SUPERVISOR
        assert who.sites == frozenset({"kitchen-0001", "kitchen-0002"})
        listed = tokens(tmp_path, "list")
        assert "wang.li\tsupervisor\tkitchen-0001,kitchen-0002\tactive" in listed.stdout
        assert secret not in listed.stdout  # never shown again
        assert tokens(tmp_path, "revoke", "wang.li").returncode == 0
        assert store.verify(secret) is None
        again = tokens(tmp_path, "revoke", "wang.li")
        assert again.returncode == 1 and "no active token named 'wang.li'" in again.stderr
    finally:
        store.close()


def test_bad_arguments_are_clear(tmp_path: Path) -> None:
    wrong_role = tokens(tmp_path, "create", "--name", "x", "--role", "boss")
    assert wrong_role.returncode == 2 and "invalid choice: 'boss'" in wrong_role.stderr
    unknown = tokens(
        tmp_path, "create", "--name", "x", "--role", "viewer", "--sites", "kitchen-0001,kitchn-2"
    )
    assert unknown.returncode == 1 and "'kitchn-2' not in the inventory" in unknown.stderr
    assert "x\t" not in tokens(tmp_path, "list").stdout  # nothing was created


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["--no-ingest", "--help"],  # the usage line's own form: serving is the default
        ["tokens", "--help"],
        ["tokens", "create", "--help"],
        ["tokens", "list", "--help"],
        ["tokens", "revoke", "--help"],
        ["tokens", "camera", "--help"],
        ["tokens", "revoke-camera", "--help"],
    ],
)
def test_every_documented_command_has_working_help(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m api"), result.stdout


def test_the_usage_line_documents_what_argparse_accepts(tmp_path: Path) -> None:
    """Every form the module docstring shows parses (checked without running anything)."""
    from api.__main__ import _arguments

    for argv, command in (
        ([], "serve"),
        (["--no-ingest"], "serve"),
        (["--config", "x.toml", "--no-ingest"], "serve"),
        (["serve", "--config", "x.toml", "--log-level", "warning"], "serve"),
        (["--config", "x.toml", "tokens", "list"], "tokens"),
        (["tokens", "list", "--config", "x.toml"], "tokens"),
        (["tokens", "create", "--name", "a", "--role", "viewer", "--sites", "*"], "tokens"),
        (["tokens", "create", "--name", "a", "--role", "viewer", "--expires-in", "30d"], "tokens"),
        (["tokens", "camera", "kitchen-0001-cam-1", "--expires-in", "12h"], "tokens"),
    ):
        assert _arguments(argv).command == command, argv


def test_camera_tokens(tmp_path: Path) -> None:
    made = tokens(tmp_path, "camera", "kitchen-0001-cam-1")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    store = TokenStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        assert store.verify_camera(secret) == "kitchen-0001-cam-1"
        not_a_camera = tokens(tmp_path, "camera", "kitchen-0001-fridge-1")
        assert not_a_camera.returncode == 1
        assert "not a camera of the inventory" in not_a_camera.stderr
        revoked = tokens(tmp_path, "revoke-camera", "kitchen-0001-cam-1")
        assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout
        assert store.verify_camera(secret) is None
    finally:
        store.close()


def test_tokens_may_expire(tmp_path: Path) -> None:
    from alerts.store import now_ms
    from api.auth import iso_ms

    before = now_ms()
    made = tokens(tmp_path, "create", "--name", "temp", "--role", "viewer", "--expires-in", "12h")
    after = now_ms()
    assert made.returncode == 0, made.stderr
    assert "(viewer, all sites, until 20" in made.stdout
    store = TokenStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    try:
        (info,) = store.list()
        assert info.expires_ms is not None
        assert before + 12 * 3_600_000 <= info.expires_ms <= after + 12 * 3_600_000
        assert store.verify(made.stdout.splitlines()[-1]) is not None
    finally:
        store.close()
    assert tokens(tmp_path, "create", "--name", "forever", "--role", "viewer").returncode == 0
    listed = tokens(tmp_path, "list").stdout.splitlines()
    assert listed == [
        f"temp\tviewer\t*\tactive\t{iso_ms(info.expires_ms)}",
        "forever\tviewer\t*\tactive\tnever",
    ]
    camera = tokens(tmp_path, "camera", "kitchen-0001-cam-1", "--expires-in", "90m")
    assert camera.returncode == 0 and ", until 20" in camera.stdout

    for wrong in ("12", "5x", "0m", "-1d", "99999999d", "1.5h"):
        refused = tokens(
            tmp_path, "create", "--name", "x", "--role", "viewer", "--expires-in", wrong
        )
        assert refused.returncode == 2 and "--expires-in" in refused.stderr, wrong
    assert "x\t" not in tokens(tmp_path, "list").stdout
