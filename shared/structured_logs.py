"""Logs as one JSON object per line (for collectors) or plain text (for a terminal), chosen by
``IDBODY_LOG_FORMAT`` (auto: JSON in a container deployment, text elsewhere).

Every line carries the job it belongs to: ``request_id`` is bound for the span of a submit, a
generation task and a webhook delivery (``bind_request_id``), so one id finds a job's lines in the
gateway, the gpu worker and the io worker. Job events add ``event``, ``status``, ``worker`` and
timings (``queue_wait_s``, ``duration_s``) through ``extra=``.

Example::

    configure_logging(settings)                                   # a worker's start
    uvicorn.run(..., log_config=logging_config(settings))         # the gateway
    with bind_request_id(rid):
        log.info("job finished", extra={"event": "job.finished", "status": "succeeded", "duration_s": 6.1})
    # {"ts": "2026-11-26T14:02:03.120Z", "level": "INFO", "logger": "worker.jobs.runner",
    #  "message": "job finished", "request_id": "3f2a...", "worker": "host:41", "event": "job.finished", ...}
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("idbody_request_id", default=None)
# the fields a record may carry beside its message (set with extra=...), in output order
EVENT_FIELDS = ("event", "status", "error_code", "attempt", "outcome", "queue_wait_s", "duration_s",
                "trace_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


@contextmanager
def bind_request_id(request_id: str | None) -> Iterator[None]:
    """Every record logged inside carries ``request_id`` (threads and tasks see their own)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class JobContextFilter(logging.Filter):
    """Adds ``request_id`` (bound, unless the record brought its own) and ``worker`` (host:pid)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get() or "-"
        if getattr(record, "worker", None) is None:
            record.worker = f"{socket.gethostname()}:{os.getpid()}"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if getattr(record, "request_id", "-") == "-" else record.request_id,
            "worker": getattr(record, "worker", None),
        }
        for name in EVENT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_format(settings: Any) -> str:
    """"json" or "text": the setting, or for ``auto`` JSON in a container deployment."""
    if settings.log_format != "auto":
        return settings.log_format
    return "json" if settings.deployment == "container" else "text"


def logging_config(settings: Any) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the process: one stderr handler on the root logger, and
    uvicorn's loggers sent to it, so access lines come out in the same format."""
    formatter = ({"()": "shared.structured_logs.JsonFormatter"} if log_format(settings) == "json"
                 else {"format": TEXT_FORMAT})
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job": {"()": "shared.structured_logs.JobContextFilter"}},
        "formatters": {"main": formatter},
        "handlers": {"main": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["job"],
                              "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["main"], "level": level},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")},
    }


def configure_logging(settings: Any) -> None:
    """Apply ``logging_config`` and the redaction of biometric data and credentials."""
    from shared.log_redaction import install_log_redaction

    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)  # warnings.warn(...) becomes a record in the same format
    install_log_redaction()
