"""The service with TLS on both sides, against real Mosquitto and InfluxDB: the API over HTTPS
with the test district's certificate, ingest reaching the broker over TLS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devices.pki import TlsFiles, client_context, make_test_pki
from devices.registry import Registry
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto
from tests.support import Publisher, make_settings, make_token, run_module, serve, wait_until


@pytest.fixture
def pki(tmp_path: Path) -> TlsFiles:
    return make_test_pki(tmp_path / "tls", ["localhost", "127.0.0.1"])


@pytest.fixture
def tls_broker(tmp_path: Path, pki: TlsFiles) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto", tls=pki) as broker:
        yield broker


def test_the_api_over_https_with_ingest_over_tls(
    tmp_path: Path,
    pki: TlsFiles,
    tls_broker: Mosquitto,
    influxd: Influxd,
    registry: Registry,
) -> None:
    tls = {"tls_cert": str(pki.cert), "tls_key": str(pki.key)}
    settings = make_settings(
        tmp_path / "data",
        tls_broker,
        influxd,
        mqtt={"tls_ca": str(pki.ca)},
        api=tls,
        console={"secure_cookie": True},
    )
    other = make_test_pki(tmp_path / "other-tls", ["localhost", "127.0.0.1"])
    with serve(create_app(settings, registry), make_token(settings), tls=pki) as client:
        assert str(client.base_url).startswith("https://")
        wait_until(
            lambda: client.get("/healthz").json().get("mqtt", {}).get("connected"),
            15,
            "ingest connected to the broker over TLS",
        )
        device = Publisher(tls_broker, tls_ca=pki.ca)
        device.publish(
            "v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/telemetry", {"temp_c": 3}
        )
        device.close()
        wait_until(
            lambda: (
                client.get("/api/v1/devices/kitchen-0001-fridge-1/telemetry?metric=temp_c")
                .json()
                .get("points")
            ),
            20,
            "the reading sent over TLS, read back over HTTPS",
        )

        # A client that trusts another CA refuses the server's certificate.
        with (
            httpx.Client(verify=client_context(other.ca)) as stranger,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            stranger.get(f"{client.base_url}/healthz")
        # Plain HTTP on the HTTPS port gets no answer.
        plain_url = str(client.base_url).replace("https://", "http://", 1)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{plain_url}/healthz", timeout=10)
        # The session cookie is marked Secure: a browser sends it back over TLS only.
        token = client.headers["Authorization"].removeprefix("Bearer ")
        signed_in = client.post("/api/v1/session", json={"token": token})
        assert signed_in.status_code < 300, signed_in.text
        assert "secure" in signed_in.headers["set-cookie"].lower()


def test_serve_refuses_tls_files_that_do_not_belong_together(tmp_path: Path, pki: TlsFiles) -> None:
    other = make_test_pki(tmp_path / "other-tls", ["localhost"])
    env = {
        **os.environ,
        "MINGLIANG_PATHS__DATA_DIR": str(tmp_path / "data"),
        "MINGLIANG_API__TLS_CERT": str(pki.cert),
        "MINGLIANG_API__TLS_KEY": str(other.key),  # the key of another certificate
    }
    done = run_module("api", "serve", "--no-ingest", env=env)
    assert done.returncode == 2, done.stderr
    assert f"{pki.cert} with {other.key}: cannot be used as a TLS server's" in done.stderr
    assert "Traceback" not in done.stderr
