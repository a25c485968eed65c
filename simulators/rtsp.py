"""Start the camera simulator's RTSP server (`simulators.rtsp_server`) from the virtual environment.

The server needs GStreamer's Python bindings, which come with Debian's Python and not with the
virtual environment, so it runs as a child process under `/usr/bin/python3`:

    with RtspCameraServer({"kitchen-0001-cam-1": "kitchen"},
                          scripts={"kitchen-0001-cam-1": "lens_covered@10+5"}) as server:
        url = server.url("kitchen-0001-cam-1")   # rtsp://127.0.0.1:PORT/kitchen-0001-cam-1

Standard library only.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO

__all__ = ["RtspCameraServer", "RtspServerError", "gstreamer_available"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = (
    "python3-gi python3-numpy gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)
_NO_SCRIPTS: Mapping[str, str] = MappingProxyType({})
_CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_READY_RE = re.compile(r"^ready rtsp://(?P<host>.+):(?P<port>\d+)$")
_STDERR_LINES = 40


class RtspServerError(Exception):
    """The RTSP server could not be started (the message has the end of its stderr)."""


def _child_env() -> dict[str, str]:
    """The environment minus the virtual environment's Python settings, plus this repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def gstreamer_available(python: str = DEBIAN_PYTHON) -> str | None:
    """None if `python` can run the RTSP server; otherwise what is missing and what to install."""
    try:
        result = subprocess.run(
            [python, "-m", "simulators.rtsp_server", "--check"],
            cwd=REPO_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        return f"{python} not found; install the Debian packages python3 {DEBIAN_PACKAGES}"
    except subprocess.TimeoutExpired:
        return f"{python} -m simulators.rtsp_server --check did not finish within 60 s"
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    detail = lines[-1] if lines else f"exit status {result.returncode}"
    if "install" not in detail:
        detail += f"; it needs the Debian packages {DEBIAN_PACKAGES}"
    return f"{python} cannot run the RTSP server: {detail}"


class RtspCameraServer:
    """Runs simulators.rtsp_server under Debian's Python as a child process.

    `cameras` maps camera id to scene kind ("kitchen" or "street"), `scripts` camera id to
    happenings (`simulators.scenes.parse_script` syntax). With `port=None` the server picks a
    free loopback port when first started and keeps it across `restart()`. Scene time starts
    when the server is ready, for every camera, and again at each restart; `truth` gets one
    JSON line per happening per start, in wall-clock ms (see `simulators.rtsp_server`).
    """

    def __init__(
        self,
        cameras: Mapping[str, str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        scripts: Mapping[str, str] = _NO_SCRIPTS,
        width: int = 640,
        height: int = 360,
        fps: float = 5.0,
        truth: Path | None = None,
        python: str = DEBIAN_PYTHON,
        seed: int = 0,
    ) -> None:
        if not cameras:
            raise ValueError("no cameras to serve")
        bad = [c for c in cameras if not _CAMERA_ID_RE.match(c)]
        if bad:
            raise ValueError(f"camera ids {bad}: use letters, digits, '.', '_' and '-'")
        unknown = sorted(set(scripts) - set(cameras))
        if unknown:
            raise ValueError(f"scripts for cameras that are not served: {', '.join(unknown)}")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is not a TCP port")
        self.cameras = dict(cameras)
        self.scripts = dict(scripts)
        self.host = host
        self.width, self.height, self.fps = width, height, fps
        self.truth = truth.resolve() if truth is not None else None
        self.python = python
        self.seed = seed
        self._port = port
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._changed = threading.Condition()
        self._ready = False
        self._stdout_closed = False
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self.returncode: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RtspServerError("the server has no port yet: start() it first")
        return self._port

    def url(self, camera_id: str) -> str:
        if camera_id not in self.cameras:
            raise ValueError(f"camera {camera_id!r} is not served; cameras: {list(self.cameras)}")
        return f"rtsp://{self.host}:{self.port}/{camera_id}"

    def command(self) -> list[str]:
        argv = [self.python, "-m", "simulators.rtsp_server", "--exit-with-stdin"]
        argv += ["--host", self.host]
        argv += ["--port", str(self._port or 0), "--width", str(self.width)]
        argv += ["--height", str(self.height), "--fps", repr(self.fps), "--seed", str(self.seed)]
        for camera_id, kind in self.cameras.items():
            script = self.scripts.get(camera_id, "")
            argv += [
                "--camera",
                f"{camera_id}:{kind}:{script}" if script else f"{camera_id}:{kind}",
            ]
        if self.truth is not None:
            argv += ["--truth", str(self.truth)]
        return argv

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it listens; RtspServerError if it does not."""
        if self._process is not None:
            raise RtspServerError("the server is already running")
        with self._changed:
            self._ready = self._stdout_closed = False
            self._stderr.clear()
        try:
            process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=_child_env(),
                # Held open as a lifeline: if this process dies, the server sees EOF and stops.
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as error:
            raise RtspServerError(
                f"cannot run {self.python} ({error}); it needs the Debian packages "
                f"{DEBIAN_PACKAGES}"
            ) from None
        self._process = process
        self.returncode = None
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        with self._changed:
            self._changed.wait_for(lambda: self._ready or self._stdout_closed, timeout)
            ready = self._ready
        if ready:
            return
        if self._stdout_closed:  # it is exiting: wait for its status
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        status = process.poll()
        self.stop()
        what = (
            f"exited with status {status}"
            if status is not None
            else f"was not ready within {timeout} s"
        )
        raise RtspServerError(f"the RTSP server {what}: {self.stderr_tail() or '(no output)'}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited within `timeout` s."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        self.returncode = process.returncode
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        self._process = None
        self._readers = []

    def restart(self) -> None:
        """Stop, then start again on the same port (clients see the camera drop and return)."""
        port = self.port
        self.stop()
        self._port = port
        self.start()

    def stderr_tail(self) -> str:
        with self._changed:
            return "".join(self._stderr).strip()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> RtspCameraServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            match = _READY_RE.match(line.strip())
            if match is not None:
                with self._changed:
                    self._port = int(match["port"])
                    self._ready = True
                    self._changed.notify_all()
        with self._changed:
            self._stdout_closed = True
            self._changed.notify_all()

    def _read_stderr(self, stream: IO[str]) -> None:
        # Drained all the time: a full pipe would block the server's GStreamer warnings.
        for line in stream:
            with self._changed:
                self._stderr.append(line)
