"""Mutual-TLS plumbing: a small certificate authority for development and tests,
and the SSL contexts every hop uses (TLS 1.2+, client certificates required).

Production deployments bring their own certificates; ``paygate`` only needs
PEM files for its CA, its certificate and its key. The dev authority exists so
that the embedded defaults and the test suite run real mutual TLS on loopback;
it can be saved (``ca.crt`` + ``ca.key``) and loaded again, so certificates
issued later (``paygate dev-certs``) chain to the same CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Credentials:
    """PEM files of one party: its certificate, its private key, and the CA it trusts."""

    cert: Path
    key: Path
    ca: Path

    def __post_init__(self) -> None:
        # Accept plain strings too (paths read from stack.json or a config file).
        for name in ("cert", "key", "ca"):
            object.__setattr__(self, name, Path(getattr(self, name)))


class Authority:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, common_name: str = "paygate dev CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=False, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Authority:
        """An authority from its certificate and (unencrypted) private key, as :meth:`save`
        writes them, so certificates issued later chain to the same CA."""
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC private key")
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
            raise ValueError("the CA key does not match the CA certificate")
        authority = cls.__new__(cls)
        authority._key = key
        authority.certificate = certificate
        return authority

    @classmethod
    def load(cls, folder: Path) -> Authority:
        """The authority saved in ``folder`` (``ca.crt`` and ``ca.key``)."""
        return cls.from_pem((folder / "ca.crt").read_bytes(), (folder / "ca.key").read_bytes())

    def save(self, folder: Path) -> tuple[Path, Path]:
        """Write ``ca.crt`` and ``ca.key`` (0600) to ``folder``; return their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert = folder / "ca.crt"
        cert.write_bytes(self.cert_pem)
        key = folder / "ca.key"
        write_private(key, self._key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        return cert, key

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, server: bool = False,
              hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[bytes, bytes]:
        """Issue a certificate; return (certificate PEM, private key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=397))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def write(self, folder: Path, name: str, *, server: bool = False,
              hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Credentials:
        """Issue a certificate and write ``name.crt``, ``name.key`` (0600) and ``ca.crt``."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_pem, key_pem = self.issue(name, server=server, hosts=hosts)
        ca = folder / "ca.crt"
        ca.write_bytes(self.cert_pem)
        key = folder / f"{name}.key"
        write_private(key, key_pem)
        cert = folder / f"{name}.crt"
        cert.write_bytes(cert_pem)
        return Credentials(cert=cert, key=key, ca=ca)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), replacing any file
    there atomically (so an existing file's wider mode never carries over)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def server_context(creds: Credentials) -> ssl.SSLContext:
    """A TLS server context that requires a client certificate signed by ``creds.ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(creds.cert, creds.key)
    ctx.load_verify_locations(creds.ca)
    return ctx


def client_context(creds: Credentials) -> ssl.SSLContext:
    """A TLS client context that presents ``creds.cert`` and trusts only ``creds.ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(creds.cert, creds.key)
    ctx.load_verify_locations(creds.ca)
    return ctx


def peer_common_name(sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The CN of the verified peer certificate, or "" when there is none."""
    if sslobj is None:
        return ""
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return ""
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""
