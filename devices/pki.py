"""TLS for the broker listener and the HTTP API: a test district's CA and server certificate,
and the checks and client context that use them.

  python -m devices.pki --out data/tls [--host NAME_OR_ADDRESS ...] [--force]

writes `ca.pem`, `ca.key`, `server.pem` and `server.key` (keys mode 0600): an EC P-256 CA valid
for 10 years and a server certificate it signs, valid for 825 days, for the given host names and
addresses (localhost and 127.0.0.1 without `--host`). Existing files are not overwritten unless
`--force`. A district with a CA of its own uses its files instead (docs/security.md, TLS).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import ssl
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALID_DAYS = 3650
# The longest server certificate lifetime browsers and Apple platforms still accept.
SERVER_VALID_DAYS = 825
# Certificates start a little in the past so that a client whose clock is slightly behind
# the generating machine's does not find them "not yet valid".
_BACKDATE = datetime.timedelta(minutes=5)
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
FILE_NAMES = ("ca.pem", "ca.key", "server.pem", "server.key")


class TlsError(Exception):
    """TLS files cannot be made or used; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a TLS server: the CA that signed it, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.strip().rstrip(".").lower()
    labels = name.split(".")
    if not name or len(name) > 253 or any(not 0 < len(part) <= 63 for part in labels):
        raise TlsError(f"{host!r} is neither an IP address nor a DNS name")
    if any(not all(c.isalnum() or c in "-*" for c in part) for part in labels):
        raise TlsError(f"{host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` whole, with `mode` from the start: a key is never readable by others,
    not even for a moment, and a reader never sees half a file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def make_test_pki(
    out_dir: Path,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    force: bool = False,
) -> TlsFiles:
    """A new CA and a server certificate for `hosts` (DNS names or IP addresses, each a
    subject alternative name) in `out_dir`; the files a server needs, and clients' CA.

    Refuses, naming them, if any of the files exists, unless `force`. The CA's key goes to
    `out_dir/ca.key` (0600) with the rest; nothing here reads it again, so it may be moved
    offline or deleted."""
    if not hosts:
        raise TlsError("a server certificate needs at least one host name or address")
    names = [_general_name(host) for host in hosts]
    paths = {name: out_dir / name for name in FILE_NAMES}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not force:
        raise TlsError(f"{', '.join(existing)} exist; --force replaces them")
    start = datetime.datetime.now(datetime.UTC) - _BACKDATE

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mingliang test district CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    # Clients check the subject alternative names, never the common name.
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mingliang test server")])
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(server_name)
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=SERVER_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Keys first: a certificate on disk without its key would be no use to anyone.
        _write(paths["ca.key"], _key_pem(ca_key), 0o600)
        _write(paths["server.key"], _key_pem(server_key), 0o600)
        _write(paths["ca.pem"], ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(paths["server.pem"], server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise TlsError(f"cannot write the TLS files in {out_dir}: {exc}") from exc
    return TlsFiles(ca=paths["ca.pem"], cert=paths["server.pem"], key=paths["server.key"])


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails. paho does the handshake
    itself and leaves a failed socket to the garbage collector: a file descriptor held, and a
    ResourceWarning, for every refused attempt of a client that retries forever."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise  # a non-blocking socket part-way through: not a failure
        except OSError:
            self.close()
            raise


def client_context(ca: Path) -> ssl.SSLContext:
    """A client's TLS context that trusts `ca` alone (not the system's CAs: the district's
    servers are vouched for by the district) and checks the server's name against its
    certificate."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{ca}: not a readable PEM CA certificate: {exc}") from exc
    context.sslsocket_class = _ClosingSSLSocket
    return context


def check_server_files(cert: Path, key: Path) -> None:
    """Load a server's certificate and key as a TLS server would, so that a wrong path, an
    unreadable key or a key of another certificate is reported before anything starts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{cert} with {key}: cannot be used as a TLS server's: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devices.pki",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the four files")
    parser.add_argument(
        "--host",
        action="append",
        metavar="NAME_OR_ADDRESS",
        help="a DNS name or IP address clients use to reach the broker or the API; repeat for "
        f"each (default: {', '.join(DEFAULT_HOSTS)})",
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    hosts = args.host or list(DEFAULT_HOSTS)
    try:
        files = make_test_pki(args.out, hosts, force=args.force)
    except TlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ca_key = files.ca.with_name("ca.key")
    print(f"CA certificate (give it to the clients):  {files.ca}, valid {CA_VALID_DAYS} days")
    print(f"CA key (keep it offline, mode 0600):      {ca_key}")
    print(
        f"server certificate:                       {files.cert}, valid {SERVER_VALID_DAYS} "
        f"days, for {', '.join(hosts)}"
    )
    print(f"server key (mode 0600):                   {files.key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
