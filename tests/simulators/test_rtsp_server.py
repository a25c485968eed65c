"""The camera simulator's RTSP server, run under Debian's Python and pulled with PyAV."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from simulators.local_services import port_answers
from simulators.rtsp import REPO_ROOT, RtspCameraServer, RtspServerError, gstreamer_available
from simulators.scenes import Scene
from tests.support import wait_until

KITCHEN, STREET, COVERED = "kitchen-0001-cam-1", "street-0001-cam-1", "kitchen-0002-cam-1"
CAMERAS = {KITCHEN: "kitchen", STREET: "street", COVERED: "kitchen"}
SCRIPTS = {COVERED: "lens_covered@0+3600"}
W, H = 640, 360
OPEN_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 10.0

Luma = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def gstreamer() -> None:
    problem = gstreamer_available()
    if problem is not None:
        pytest.fail(problem)


@pytest.fixture(scope="module")
def server(gstreamer: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspCameraServer]:
    truth = tmp_path_factory.mktemp("rtsp") / "truth.jsonl"
    with RtspCameraServer(CAMERAS, scripts=SCRIPTS, truth=truth) as running:
        yield running


def pull(url: str, transport: str, frames: int = 4) -> list[Luma]:
    """Luma planes of the first `frames` frames from a key frame on (the ones before it
    cannot be decoded whole when joining a running stream)."""
    options = {
        "rtsp_transport": transport,
        # Decide on the stream from the SDP at once instead of watching 5 s of it first.
        "analyzeduration": "0",
        "probesize": "32",
    }
    got: list[Luma] = []
    with av.open(url, options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)) as container:
        for frame in container.decode(video=0):
            if not got and not frame.key_frame:
                continue
            assert (frame.width, frame.height) == (W, H)
            assert frame.format.name == "yuv420p"
            got.append(frame.to_ndarray()[:H].astype(np.float64))
            if len(got) == frames:
                break
    assert len(got) == frames, f"the stream from {url} ended after {len(got)} frames"
    return got


def low_res(y: Luma) -> Luma:
    """8x8 block means: what survives lossy coding of the picture, not its noise."""
    blocks: Luma = y.reshape(H // 8, 8, W // 8, 8).mean(axis=(1, 3))
    return blocks


def scene_luma(camera_id: str) -> Luma:
    return Scene(camera_id, CAMERAS[camera_id]).frame(0)[:H].astype(np.float64)


def assert_shows(frames: list[Luma], camera_id: str) -> None:
    expected = scene_luma(camera_id)
    for y in frames:
        assert abs(y.mean() - expected.mean()) < 2
        assert np.abs(low_res(y) - low_res(expected)).mean() < 2.5


def test_serves_each_camera_over_tcp(server: RtspCameraServer) -> None:
    kitchen = pull(server.url(KITCHEN), "tcp")
    assert_shows(kitchen, KITCHEN)
    street = pull(server.url(STREET), "tcp")
    assert_shows(street, STREET)
    # Each mount is its own camera: the kitchen's picture is far from the street's.
    assert np.abs(low_res(kitchen[0]) - low_res(scene_luma(STREET))).mean() > 15


def test_serves_over_udp(server: RtspCameraServer) -> None:
    assert_shows(pull(server.url(STREET), "udp"), STREET)


def test_scripted_happening_is_streamed(server: RtspCameraServer) -> None:
    for y in pull(server.url(COVERED), "tcp"):
        assert y.mean() < 30


def test_ground_truth_file_lists_the_scripted_happenings(server: RtspCameraServer) -> None:
    assert server.truth is not None
    (record,) = [json.loads(line) for line in server.truth.read_text("utf-8").splitlines()]
    assert record["camera_id"] == COVERED
    assert record["kind"] == "lens_covered"
    assert record["end_ms"] - record["start_ms"] == 3_600_000
    assert abs(record["start_ms"] - time.time() * 1000) < 600_000


def test_clients_share_a_camera_and_come_and_go(server: RtspCameraServer) -> None:
    results: dict[str, list[Luma]] = {}
    errors: list[BaseException] = []

    def client(name: str, transport: str) -> None:
        try:
            results[name] = pull(server.url(KITCHEN), transport, frames=6)
        except BaseException as error:  # reported by the test thread below
            errors.append(error)

    threads = [
        threading.Thread(target=client, args=(name, transport))
        for name, transport in (("tcp", "tcp"), ("udp", "udp"), ("tcp-2", "tcp"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(OPEN_TIMEOUT_S + 2 * READ_TIMEOUT_S)
    assert not errors, errors
    assert sorted(results) == ["tcp", "tcp-2", "udp"]
    # Connecting and leaving again and again (each time the media is made anew or joined).
    for transport in ("tcp", "udp", "tcp", "udp", "tcp"):
        assert_shows(pull(server.url(KITCHEN), transport, frames=1), KITCHEN)
    assert server.running


def test_scene_time_is_wall_clock_time_since_start(gstreamer: None, tmp_path: Path) -> None:
    """The ground truth's times are when a client sees the happening (give or take latency)."""
    truth = tmp_path / "truth.jsonl"
    script = {KITCHEN: "lens_covered@2+4"}
    seen: list[tuple[float, float]] = []  # (wall-clock ms when decoded, mean luma)
    with RtspCameraServer({KITCHEN: "kitchen"}, scripts=script, fps=10, truth=truth) as server:
        (record,) = [json.loads(line) for line in truth.read_text("utf-8").splitlines()]
        start_ms, end_ms = record["start_ms"], record["end_ms"]
        assert end_ms - start_ms == 4000
        options = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32"}
        with av.open(server.url(KITCHEN), options=options, timeout=(10.0, 10.0)) as container:
            for frame in container.decode(video=0):
                now_ms = time.time() * 1000
                seen.append((now_ms, float(frame.to_ndarray()[:H].mean())))
                if now_ms > end_ms + 1000:
                    break
    # Encoding, the network and decoding, with room for a busy machine: the frames leave on
    # time, and this only rules out a scene clock that is off by seconds.
    latency_ms = 1500
    dark = [at for at, y in seen if y < 30]
    assert dark, "no covered frames seen"
    assert start_ms <= min(dark) and max(dark) <= end_ms + latency_ms
    inside = [y for at, y in seen if start_ms + latency_ms <= at <= end_ms]
    assert inside and max(inside) < 30
    outside = [y for at, y in seen if at < start_ms or at > end_ms + latency_ms]
    assert outside and min(outside) > 80


def test_restart_on_the_same_port(gstreamer: None) -> None:
    with RtspCameraServer({STREET: "street"}) as server:
        port = server.port
        assert_shows(pull(server.url(STREET), "tcp", frames=2), STREET)
        server.restart()
        assert server.port == port
        assert server.url(STREET) == f"rtsp://127.0.0.1:{port}/{STREET}"
        assert_shows(pull(server.url(STREET), "tcp", frames=2), STREET)
    assert not server.running
    assert server.returncode == 0


def test_port_in_use_fails_start_with_the_reason(gstreamer: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = RtspCameraServer({KITCHEN: "kitchen"}, port=port)
        with pytest.raises(RtspServerError, match=rf"status 2.*{port}.*in use"):
            server.start()
        assert not server.running


def test_bad_camera_argument_exits_2_with_a_message(gstreamer: None) -> None:
    result = subprocess.run(
        ["/usr/bin/python3", "-m", "simulators.rtsp_server", "--camera", "kitchen-0001"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "'kitchen-0001'" in result.stderr
    assert "CAMERA_ID:KIND[:SCRIPT]" in result.stderr
    assert result.stdout == ""


def test_bad_script_fails_start_naming_it(gstreamer: None) -> None:
    server = RtspCameraServer({STREET: "street"}, scripts={STREET: "vendor_stopping@5+x"})
    with pytest.raises(RtspServerError, match=r"status 2.*'vendor_stopping@5\+x'"):
        server.start()
    server = RtspCameraServer({KITCHEN: "garage"})
    with pytest.raises(RtspServerError, match=r"'garage'"):
        server.start()


def test_gstreamer_available_says_what_to_install(tmp_path: Path) -> None:
    missing = gstreamer_available(str(tmp_path / "no-python"))
    assert missing is not None
    assert "gir1.2-gst-rtsp-server-1.0" in missing


def test_the_server_stops_when_its_launcher_dies(gstreamer: None) -> None:
    """No orphan server lingers on its port after its launcher is killed."""
    launch = (
        "import sys\n"
        "from simulators.rtsp import RtspCameraServer\n"
        f"server = RtspCameraServer({{{STREET!r}: 'street'}})\n"
        "server.start()\n"
        "print(server.port, flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", launch],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as launcher:
        assert launcher.stdout is not None
        port = int(launcher.stdout.readline())
        assert port_answers("127.0.0.1", port)
        launcher.kill()
    wait_until(lambda: not port_answers("127.0.0.1", port), 30, "the orphaned server to stop")
