"""A self-signed certificate for a local TLS server (the local stack's gRPC and REST endpoints).

    key_pem, cert_pem = self_signed_cert()
    server = serve_grpc(servicer, tls=(key_pem, cert_pem))
    transport = GrpcTransport(f"localhost:{server.port}", tls=True, root_certificates=cert_pem)

The certificate is its own root: a client trusts it by taking ``cert_pem`` as its root certificates.
Built with ``cryptography`` when it is installed (google-auth usually brings it), else with the
``openssl`` command.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bpj import errors


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def self_signed_cert(
    hosts: Sequence[str] = ("localhost", "127.0.0.1"), *, days: int = 365
) -> tuple[bytes, bytes]:
    """``(key_pem, cert_pem)``: an ECDSA P-256 key and a certificate valid for ``hosts`` (a DNS name or an
    IP address each, all in subjectAltName) from one day ago for ``days`` days."""
    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    if not hosts:
        raise errors.UsageError("self_signed_cert needs at least one host name or address")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return _with_openssl(hosts, days)
    return _with_cryptography(hosts, days)


def _with_cryptography(hosts: list[str], days: int) -> tuple[bytes, bytes]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
    ]
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _with_openssl(hosts: list[str], days: int) -> tuple[bytes, bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise errors.UsageError(
            "a self-signed certificate needs the cryptography package or the openssl command"
        )
    san = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    with tempfile.TemporaryDirectory(prefix="bpj-tls-") as tmp:
        key_path, cert_path = Path(tmp, "key.pem"), Path(tmp, "cert.pem")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key_path),
                "-out",
                str(cert_path),
                "-days",
                str(days),
                "-subj",
                f"/CN={hosts[0]}",
                "-addext",
                f"subjectAltName={san}",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ],
            check=True,
            capture_output=True,
        )
        return key_path.read_bytes(), cert_path.read_bytes()
