"""A throw-away certificate authority and server certificate for HTTPS sandboxes."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TLSFiles:
    ca_file: str
    cert_file: str
    key_file: str
    ca_pem: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def load_or_generate(directory: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSFiles:
    """Reuse the CA and server certificate in ``directory`` while valid for ``hosts``, or make new ones.

    Reuse keeps a restarted sandbox verifiable with the CA that clients (and Fleetgate's database) stored."""
    paths = TLSFiles(
        os.path.join(directory, "ca.crt"),
        os.path.join(directory, "server.crt"),
        os.path.join(directory, "server.key"),
        b"",
    )
    if all(os.path.exists(p) for p in (paths.ca_file, paths.cert_file, paths.key_file)):
        with open(paths.cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            known = {str(v) for v in names.get_values_for_type(x509.IPAddress)} | set(
                names.get_values_for_type(x509.DNSName)
            )
        except x509.ExtensionNotFound:
            known = set()
        fresh = cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
        if fresh and set(hosts) <= known:
            with open(paths.ca_file, "rb") as f:
                return TLSFiles(paths.ca_file, paths.cert_file, paths.key_file, f.read())
    return generate(directory, hosts)


def generate(directory: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSFiles:
    """Write ``ca.crt``, ``server.crt`` and ``server.key`` into ``directory`` (valid for a year)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fleetgate-sandbox-ca"))
        .issuer_name(_name("fleetgate-sandbox-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fleetgate-sandbox"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    paths = TLSFiles(
        os.path.join(directory, "ca.crt"),
        os.path.join(directory, "server.crt"),
        os.path.join(directory, "server.key"),
        ca_pem,
    )
    with open(paths.ca_file, "wb") as f:
        f.write(ca_pem)
    with open(paths.cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths
