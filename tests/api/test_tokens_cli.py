"""`python -m api tokens`: what an administrator runs to give supervisors access."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devices.tokens import Role, TokenStore

ROOT = Path(__file__).resolve().parents[2]


def tokens(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINGLIANG_PATHS__DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "api", "tokens", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
