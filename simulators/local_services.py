"""Local Mosquitto, InfluxDB and PostgreSQL processes, each in a folder of its own.

Used by the tests and benchmarks (free loopback ports, temporary folders) and by the demo when
no broker or database answers at the configured address. The Debian packages provide the
binaries (`mosquitto`, `influxdb`, `postgresql`); nothing here installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import psycopg

from devices.pki import TlsFiles as TlsFiles  # re-exported: Mosquitto(..., tls=TlsFiles(...))


class ServiceError(Exception):
    """A local service could not be started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 30
) -> None:
    """Ask a child to stop with `sig`; kill it if it has not within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise ServiceError(f"{name} not found: install the Debian package {package!r}")
    return path


class _Process:
    """A child process with a log file, started and stopped as a context manager."""

    name = "service"
    start_timeout_s = 30.0

    def __init__(self, workdir: Path, host: str, port: int | None) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return port_answers(self.host, self.port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal goes to us, not to the child.
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready():
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self._proc.returncode} at start; "
                    f"see {self.log_path}: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not answer on {self.host}:{self.port}")
            time.sleep(0.05)  # polling a child's readiness, not synchronising with our code

    stop_signal = signal.SIGTERM

    def stop(self, sig: signal.Signals | None = None) -> None:
        sig = sig or self.stop_signal
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, sig, timeout=20)

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the running process (SIGSTOP/SIGCONT make a server hang and recover)."""
        if self._proc is None or self._proc.poll() is not None:
            raise ServiceError(f"{self.name} is not running")
        self._proc.send_signal(sig)

    def _log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class BrokerAuth:
    """Mosquitto's password file and ACL file (`python -m devices credentials broker-config`)."""

    password_file: Path
    acl_file: Path


class Mosquitto(_Process):
    """A broker configured as Mingliang needs: persistent sessions with deep queues.

    Anonymous clients are welcome unless `auth` names a password file and an ACL; `tls` puts
    TLS on the listener. `reload()` makes the broker read its password and ACL files again."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        auth: BrokerAuth | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(workdir, host, port)
        self.auth = auth
        self.tls = tls

    def reload(self) -> None:
        self.send_signal(signal.SIGHUP)

    def _command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        security = "allow_anonymous true\n"
        if self.auth is not None:
            security = (
                "allow_anonymous false\n"
                # A client id is the account's user name: nobody can take over another
                # device's session (and knock it off) by connecting under its client id.
                "use_username_as_clientid true\n"
                f"password_file {self.auth.password_file}\n"
                f"acl_file {self.auth.acl_file}\n"
            )
        if self.tls is not None:
            security += (
                f"cafile {self.tls.ca}\ncertfile {self.tls.cert}\nkeyfile {self.tls.key}\n"
                "tls_version tlsv1.2\n"
            )
        # Started as root, Mosquitto becomes the `mosquitto` account, which cannot read its
        # own folder here (nor the password file, nor write its log and persistence).
        account = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"listener {self.port} {self.host}\n" + account + security + "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            # The default (1,000) drops messages for an ingest that is down for a few seconds
            # at district rates; see docs/operations.md.
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\n"
        )
        return [_binary("mosquitto", "mosquitto"), "-c", str(conf)]


class Influxd(_Process):
    """An InfluxDB 1.x server with its meta, data and WAL under `workdir`."""

    name = "influxd"

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__(workdir, host, port)
        self.rpc_port = free_port(host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False

    def _command(self) -> list[str]:
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "{self.host}:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.workdir}/meta"\n'
            f'[data]\n  dir = "{self.workdir}/data"\n  wal-dir = "{self.workdir}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "{self.host}:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        return [_binary("influxd", "influxdb"), "-config", str(conf)]


class Postgres(_Process):
    """A PostgreSQL server of its own: `initdb` at first start, trust authentication for
    `postgres` on loopback, the data under `workdir/data`. PostgreSQL refuses to run as root:
    as root, the server runs as the `postgres` account, its folder in a place that account can
    reach (a root-only temporary folder is not one)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast": ends open sessions instead of waiting for them

    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self._owned: Path | None = None
        if os.geteuid() == 0:
            self._owned = Path(tempfile.mkdtemp(prefix="mingliang-postgres-"))
            workdir = self._owned
        super().__init__(workdir, host, port)
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"

    @property
    def url(self) -> str:
        """A SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/postgres"

    def _as_owner(self, command: list[str]) -> list[str]:
        if self._owned is None:
            return command
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *command]

    def _command(self) -> list[str]:
        if not (self.data / "PG_VERSION").exists():
            if self._owned is not None:
                account = pwd.getpwnam("postgres")
                os.chown(self.workdir, account.pw_uid, account.pw_gid)
            initdb = [_pg_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            initdb += ["-E", "UTF8", "--locale=C", "--no-sync"]
            result = subprocess.run(
                self._as_owner(initdb), capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise ServiceError(f"initdb failed: {result.stderr.strip()[-500:]}")
        settings = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.workdir),
            # A throw-away server: durability comes from the tests' own checks, not fsync.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        command = [_pg_binary("postgres"), "-D", str(self.data), "-p", str(self.port)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return self._as_owner(command)

    def _ready(self) -> bool:
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user="postgres",
                dbname="postgres",
                connect_timeout=1,
            ):
                return True
        except psycopg.OperationalError:
            return False

    def remove(self) -> None:
        """Stop, and delete the folder it made for itself as root."""
        self.stop()
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)


def _pg_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]  # the newest installed major version
    return _binary(name, "postgresql")
