import datetime
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.url_guard import WebhookTarget
from tests.webhook_receiver import Receiver
from worker.webhooks.pinned_http import post_pinned


def _target(url: str, host: str, port: int, address: str = "127.0.0.1") -> WebhookTarget:
    return WebhookTarget(url=url, scheme=url.split(":", 1)[0], host=host, port=port, address=address)


@pytest.fixture
def receiver():
    r = Receiver(script=[200])
    yield r
    r.close()


def test_connects_to_pinned_address_but_sends_the_real_host(receiver):
    # 'hooks.invalid' cannot resolve: the request only arrives because the address is pinned
    url = f"http://hooks.invalid:{receiver.port}/cb?x=1"
    answer = post_pinned(_target(url, "hooks.invalid", receiver.port), b'{"a":1}', {"x-test": "1"}, 5)
    assert answer.status_code == 200 and answer.error is None
    (got,) = receiver.requests
    assert got.path == "/cb?x=1"
    assert got.headers["host"] == f"hooks.invalid:{receiver.port}"
    assert got.headers["x-test"] == "1" and got.headers["content-type"] == "application/json"
    assert got.body == b'{"a":1}'


def test_redirect_is_not_followed(receiver):
    other = Receiver(script=[200])
    try:
        receiver.script = [(302, {"location": other.url()})]
        answer = post_pinned(_target(receiver.url(), "127.0.0.1", receiver.port), b"{}", {}, 5)
        assert answer.status_code == 302
        assert other.connections == 0 and other.requests == []
    finally:
        other.close()


def test_retry_after_is_returned(receiver):
    receiver.script = [(429, {"retry-after": "17"})]
    answer = post_pinned(_target(receiver.url(), "127.0.0.1", receiver.port), b"{}", {}, 5)
    assert (answer.status_code, answer.retry_after) == (429, "17")


def test_silent_server_times_out_within_the_deadline():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel completes the handshake; nobody ever answers
        port = listener.getsockname()[1]
        answer = post_pinned(_target(f"http://127.0.0.1:{port}/", "127.0.0.1", port), b"{}", {}, 0.3)
    assert answer.status_code is None and "Timeout" in answer.error


def test_connection_refused_is_an_error_not_an_exception():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    answer = post_pinned(_target(f"http://127.0.0.1:{port}/", "127.0.0.1", port), b"{}", {}, 2)
    assert answer.status_code is None and answer.error


def _self_signed(tmp_path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_verifies_the_certificate_against_the_host_name_not_the_address(tmp_path):
    cert, key = _self_signed(tmp_path, "hooks.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    receiver = Receiver(script=[204], ssl_context=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        url = f"https://hooks.test:{receiver.port}/secure"
        answer = post_pinned(_target(url, "hooks.test", receiver.port), b"{}", {}, 5, ssl_context=client_ctx)
        assert answer.status_code == 204
        assert receiver.requests[0].headers["host"] == f"hooks.test:{receiver.port}"
        # same pinned address, a name the certificate does not cover: the TLS handshake must fail
        wrong = f"https://other.test:{receiver.port}/secure"
        answer = post_pinned(_target(wrong, "other.test", receiver.port), b"{}", {}, 5, ssl_context=client_ctx)
        assert answer.status_code is None and "ConnectError" in answer.error
        assert len(receiver.requests) == 1
    finally:
        receiver.close()
