import logging

import pytest

from shared.log_redaction import RedactingFilter, install_log_redaction, redact_text

PRESIGNED = ("http://127.0.0.1:8333/idbody-results/r1/identity_body_0.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=idbody%2F20261125&X-Amz-Signature=0123abcd")


def test_redact_text():
    assert redact_text(f"url={PRESIGNED} done") == (
        "url=http://127.0.0.1:8333/idbody-results/r1/identity_body_0.png?<redacted> done")
    assert redact_text("https://hooks.example.com/cb?token=s3cret#frag") == "https://hooks.example.com/cb?<redacted>#frag"
    assert redact_text("no query https://x.example/a") == "no query https://x.example/a"
    blob = "iVBORw0KGgo" + "A" * 300
    assert redact_text(f"img {blob}") == f"img <base64, {len(blob)} chars>"


@pytest.fixture
def captured():
    install_log_redaction()
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("test.redaction")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, records
    logger.removeHandler(handler)


def test_installed_factory_redacts_every_logger(captured):
    logger, records = captured
    embedding = [0.123456] * 512
    logger.info("result %s for %s", PRESIGNED, "r1")
    logger.info("upload %r embedding %s", b"\x89PNG" + b"\x00" * 5000, embedding)
    logger.info(f"inline {PRESIGNED}")
    logger.info("kps %s", [1.0, 2.0, 3.0])
    assert records[0] == "result http://127.0.0.1:8333/idbody-results/r1/identity_body_0.png?<redacted> for r1"
    assert records[1] == "upload '<5004 bytes>' embedding <512 numbers>"
    assert "X-Amz-Signature" not in records[2]
    assert records[3] == "kps [1.0, 2.0, 3.0]"  # short lists stay readable


def test_filter_form():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", (PRESIGNED,), None)
    RedactingFilter().filter(record)
    assert "Signature" not in record.getMessage()
