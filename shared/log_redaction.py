"""Keep biometric data and credentials out of logs.

Every log record is rewritten when it is created (a log-record factory, so records from every
logger and library pass through it, whichever handler prints them):

- URLs lose their query string (``?X-Amz-Signature=...`` of presigned URLs, tokens in webhook URLs):
  ``https://s3/b/k.png?<redacted>``;
- ``bytes`` arguments become ``<N bytes>`` (image data);
- long runs of base64 become ``<base64, N chars>`` (images or embeddings sent as text);
- long sequences of numbers become ``<N numbers>`` (face embeddings, keypoints arrays).

Example::

    install_log_redaction()
    logging.getLogger("x").info("url %s", "https://h/k?X-Amz-Signature=abc")  # https://h/k?<redacted>
"""

from __future__ import annotations

import logging
import re
from typing import Any

_URL_QUERY = re.compile(r"((?:https?|s3)://[^\s?#'\"<>]+)\?[^\s#'\"<>]*", re.IGNORECASE)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{200,}")
MAX_NUMBERS = 16

_installed = False


def redact_text(text: str) -> str:
    """Strip URL query strings and long base64 runs from ``text``.

    Example::

        redact_text("see https://x/y?token=1")   # 'see https://x/y?<redacted>'
    """
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    return _BASE64_RUN.sub(lambda m: f"<base64, {len(m.group(0))} chars>", text)


def redact_value(value: Any) -> Any:
    """A log argument made safe to print; other values pass through unchanged."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return redact_text(value)
    if _is_number_sequence(value):
        return f"<{len(value)} numbers>"
    if type(value).__name__ in ("ndarray", "Tensor") and getattr(value, "size", None) is not None:
        size = value.size if isinstance(value.size, int) else value.numel()
        return f"<{type(value).__name__} of {size} values>" if size > MAX_NUMBERS else value
    return value


def _is_number_sequence(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > MAX_NUMBERS
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Rewrite a record's message and arguments in place; returns it."""
    if isinstance(record.msg, str):
        record.msg = redact_text(record.msg)
    else:
        record.msg = redact_value(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(redact_value(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: redact_value(v) for k, v in record.args.items()}
    return record


class RedactingFilter(logging.Filter):
    """The same rewriting as a filter, for handlers configured elsewhere (e.g. a dictConfig)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction() -> None:
    """Redact every log record of this process from now on; calling it again does nothing."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True
