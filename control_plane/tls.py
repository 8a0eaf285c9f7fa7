"""TLS material for Weir: a development CA (``weir certs``) and checked loading of PEM files.

Why a helper at all: mTLS between Envoy and the xDS server needs a CA, a
server certificate whose subject alternative names match the address Envoy
dials, and one client certificate per proxy (or per fleet). Getting any of
those wrong shows up as an opaque handshake failure on both sides, so
``weir certs`` writes a consistent set and the loaders here say which file is
wrong and why before a server starts.

Keys are ECDSA P-256 (small, fast handshakes; accepted by BoringSSL in Envoy
and by gRPC). Private keys are written with mode 0600. This CA is for
development and tests; in production use your organisation's CA (the files
are ordinary PEM, so anything that issues PEM works).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertError",
    "IssuedFiles",
    "ServerTls",
    "issue_dev_certs",
    "read_pem_files",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"


class CertError(ValueError):
    """A certificate or key file that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class ServerTls:
    """A TLS server's files: its certificate chain and key, and (for mTLS) the CA its clients must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(cert, key, client CA) as PEM bytes, each checked; CertError names the bad file."""
        cert, key = read_pem_files(self.cert, self.key)
        ca = _read_certs(self.client_ca) if self.client_ca is not None else None
        return cert, key, ca


@dataclass(frozen=True)
class IssuedFiles:
    """What :func:`issue_dev_certs` wrote (or reused)."""

    ca_cert: Path
    ca_key: Path
    created_ca: bool
    written: tuple[Path, ...]


def read_pem_files(cert_path: Path | str, key_path: Path | str) -> tuple[bytes, bytes]:
    """Read a certificate (chain) and its private key; check that they are PEM and belong together."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert_pem = _read_certs(cert_path)
    key_pem = _read(key_path)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as err:
        raise CertError(f"{key_path}: not an unencrypted PEM private key ({err})") from None
    leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    if leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertError(f"{key_path}: this key does not belong to the certificate in {cert_path}")
    return cert_pem, key_pem


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CertError(f"{path}: cannot read: {err.strerror or err}") from None


def _read_certs(path: Path) -> bytes:
    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise CertError(f"{path}: not a PEM certificate ({err})") from None
    now = dt.datetime.now(dt.timezone.utc)
    for cert in certs:
        if cert.not_valid_after_utc < now:
            raise CertError(f"{path}: the certificate {cert.subject.rfc4514_string()} expired on "
                            f"{cert.not_valid_after_utc:%Y-%m-%d}; issue a new one (weir certs)")
    return data


# --------------------------------------------------------------------------- the development CA


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write(path, pem, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode (no window in which a key is world-readable), replaced atomically.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Weir development CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_pem, key_pem = read_pem_files(cert_path, key_path)
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertError(f"{cert_path}: not a CA certificate (no basicConstraints CA:TRUE)")
    return cert, key  # type: ignore[return-value]


def _issue(ca_cert: x509.Certificate, ca_key, common_name: str, dns: Iterable[str], ips: Iterable[str],
           usage: list[x509.ObjectIdentifier], days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = dt.datetime.now(dt.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _check_client_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise CertError(f"client name {name!r}: use letters, digits and - _ . (it names the files client-NAME.crt/key)")


def issue_dev_certs(
    directory: Path | str,
    *,
    server_names: Iterable[str] = (),
    server_ips: Iterable[str] = (),
    clients: Iterable[str] = (),
    days: int = 365,
    force: bool = False,
) -> IssuedFiles:
    """Write (or reuse) a CA in ``directory`` and issue a server certificate and client certificates.

    The CA (``ca.crt``, ``ca.key``) is created when absent and reused when present, so
    running again with ``--client gw-7`` adds a proxy without re-issuing the others.
    ``server_names``/``server_ips`` become the server certificate's subject
    alternative names (what Envoy verifies against the address it dials);
    each client name gives ``client-NAME.crt`` and ``client-NAME.key``.
    Existing leaf files are refused unless ``force``.
    """
    out = Path(directory)
    names, ips, client_names = list(server_names), list(server_ips), list(clients)
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise CertError(f"--server-ip {ip!r} is not an IP address (host names go in --server-name)") from None
    for name in names:
        if not name or any(c.isspace() for c in name) or "/" in name:
            raise CertError(f"--server-name {name!r} is not a host name")
    for client in client_names:
        _check_client_name(client)
    if not 1 <= days <= 3650:
        raise CertError(f"--days must be between 1 and 3650 (got {days})")
    out.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = out / CA_CERT, out / CA_KEY
    leaves: list[tuple[Path, Path, str, list[str], list[str], list[x509.ObjectIdentifier]]] = []
    if names or ips:
        # Client use too: a Weir replica presents it to the leader's xDS port (the access-log relay, docs/ha.md).
        leaves.append((out / SERVER_CERT, out / SERVER_KEY, (names or ips)[0], names, ips,
                       [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]))
    for client in client_names:
        leaves.append((out / f"client-{client}.crt", out / f"client-{client}.key", client, [client], [],
                       [ExtendedKeyUsageOID.CLIENT_AUTH]))
    if not force:
        existing = [str(p) for cert, key, *_ in leaves for p in (cert, key) if p.exists()]
        if existing:
            raise CertError(f"{', '.join(existing)} already exist; pass --force to replace them")
    created_ca = False
    if ca_cert_path.exists() or ca_key_path.exists():
        ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    else:
        ca_key = _new_key()
        now = dt.datetime.now(dt.timezone.utc)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Weir development CA"))
            .issuer_name(_name("Weir development CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=max(days, 5 * 365)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key_path, ca_key)
        _write(ca_cert_path, _cert_pem(ca_cert), 0o644)
        created_ca = True
    written: list[Path] = []
    for cert_path, key_path, cn, dns, ip_list, usage in leaves:
        cert, key = _issue(ca_cert, ca_key, cn, dns, ip_list, usage, days)
        _write_key(key_path, key)
        _write(cert_path, _cert_pem(cert), 0o644)
        written += [cert_path, key_path]
    return IssuedFiles(ca_cert_path, ca_key_path, created_ca, tuple(written))
