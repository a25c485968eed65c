"""The test district's PKI: what `python -m devices.pki` writes, and that TLS accepts it."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from devices.pki import (
    FILE_NAMES,
    TlsError,
    TlsFiles,
    check_server_files,
    client_context,
    main,
    make_test_pki,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def handshake(files: TlsFiles, server_name: str, ca: Path | None = None) -> None:
    """A whole TLS handshake in memory between a server using `files` and a client that trusts
    `ca` (the PKI's own CA by default) and checks strictly, as Python 3.13 does by default."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert, files.key)
    client = client_context(ca or files.ca)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, from_client, server_hostname=server_name)
    server_side = server.wrap_bio(to_server, from_server, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        to_server.write(from_client.read())
        to_client.write(from_server.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_the_command_writes_a_ca_and_a_server_certificate_for_the_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tls"
    hosts = ["mqtt.district.example", "10.20.30.40", "::1"]
    assert main(["--out", str(out), *(arg for h in hosts for arg in ("--host", h))]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILE_NAMES)
    assert mode(out / "ca.key") == mode(out / "server.key") == 0o600
    assert mode(out / "ca.pem") == mode(out / "server.pem") == 0o644

    printed = capsys.readouterr().out
    for name in FILE_NAMES:
        assert str(out / name) in printed
    # What was printed names the key files, never their contents.
    assert "PRIVATE KEY" not in printed
    for key in ("ca.key", "server.key"):
        body = "".join((out / key).read_text().splitlines()[1:-1])
        assert body not in printed

    ca, server = certificate(out / "ca.pem"), certificate(out / "server.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.district.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.20.30.40"),
        ipaddress.ip_address("::1"),
    ]
    day = datetime.timedelta(days=1)
    ca_life = ca.not_valid_after_utc - ca.not_valid_before_utc
    server_life = server.not_valid_after_utc - server.not_valid_before_utc
    assert abs(ca_life - 3650 * day) < day and abs(server_life - 825 * day) < day
    now = datetime.datetime.now(datetime.UTC)
    assert server.not_valid_before_utc < now < server.not_valid_after_utc
    for key_file in ("ca.key", "server.key"):
        key = load_pem_private_key((out / key_file).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_existing_files_are_replaced_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tls"
    assert main(["--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in FILE_NAMES}
    (out / "server.key").chmod(0o644)  # someone loosened it: --force must tighten it again
    capsys.readouterr()

    assert main(["--out", str(out), "--host", "broker.example"]) == 1
    error = capsys.readouterr().err
    assert "--force" in error and str(out / "ca.pem") in error
    assert {name: (out / name).read_bytes() for name in FILE_NAMES} == before

    assert main(["--out", str(out), "--host", "broker.example", "--force"]) == 0
    after = {name: (out / name).read_bytes() for name in FILE_NAMES}
    assert all(after[name] != before[name] for name in FILE_NAMES)
    assert mode(out / "server.key") == mode(out / "ca.key") == 0o600
    # No temporary files are left beside them.
    assert sorted(p.name for p in out.iterdir()) == sorted(FILE_NAMES)


def test_without_hosts_the_certificate_is_for_this_machine(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    server = certificate(tmp_path / "server.pem")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize("host", ["two words", "bad_name.example", "", "a..b"])
def test_a_host_that_is_neither_a_name_nor_an_address_is_refused(
    tmp_path: Path, host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path / "tls"), "--host", host]) == 1
    assert "neither an IP address nor a DNS name" in capsys.readouterr().err
    assert not (tmp_path / "tls").exists()


def test_tls_accepts_the_server_for_its_names_only_and_with_its_own_ca(tmp_path: Path) -> None:
    files = make_test_pki(tmp_path / "tls", ["broker.example", "127.0.0.1"])
    other = make_test_pki(tmp_path / "other", ["broker.example"])
    handshake(files, "broker.example")
    handshake(files, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(files, "elsewhere.example")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(files, "broker.example", ca=other.ca)


def test_unusable_files_are_named(tmp_path: Path) -> None:
    files = make_test_pki(tmp_path / "tls", ["localhost"])
    other = make_test_pki(tmp_path / "other", ["localhost"])
    check_server_files(files.cert, files.key)
    with pytest.raises(TlsError, match="cannot be used as a TLS server's") as err:
        check_server_files(files.cert, other.key)  # the key of another certificate
    assert str(files.cert) in str(err.value)
    with pytest.raises(TlsError, match="not a readable PEM CA certificate"):
        client_context(tmp_path / "missing.pem")
    with pytest.raises(TlsError, match="not a readable PEM CA certificate"):
        client_context(files.key)
