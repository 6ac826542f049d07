"""Tracing is off by default and then imports nothing; on, one trace follows the context through
message headers from submit to task to webhook (in-memory exporter here; the whole stack exports
over OTLP/HTTP in tests/test_webhooks_e2e.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared import tracing
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_off_without_an_endpoint_and_opentelemetry_never_imported() -> None:
    code = (
        "import sys\n"
        "from shared.settings import Settings\n"
        "from shared.tracing import setup_tracing, span, trace_headers\n"
        "assert setup_tracing(Settings(_env_file=None), 'x') is False\n"
        "with span('idbody.submit', request_id='r1') as s:\n"
        "    assert s is None and trace_headers() == {}\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.sdk')], 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_context_travels_through_headers_from_submit_to_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    monkeypatch.setattr(tracing, "_tracer", None)
    assert tracing.setup_tracing(Settings(_env_file=None), "test", exporter=exporter)
    with tracing.span("idbody.submit", request_id="r1"):
        gpu_message = tracing.trace_headers()
    with tracing.span("idbody.generate", carrier=gpu_message, request_id="r1"):
        io_message = tracing.trace_headers()
    with tracing.span("idbody.webhook", carrier=io_message, request_id="r1", event="succeeded"):
        pass
    submit, generate, webhook = exporter.get_finished_spans()
    assert submit.context.trace_id == generate.context.trace_id == webhook.context.trace_id
    assert generate.parent.span_id == submit.context.span_id
    assert webhook.parent.span_id == generate.context.span_id
    assert webhook.attributes["idbody.request_id"] == "r1" and webhook.attributes["idbody.event"] == "succeeded"
    assert "traceparent" in gpu_message


def test_task_headers_reads_what_celery_put_on_the_request() -> None:
    class Request:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        headers = None

    class Task:
        request = Request()

    assert tracing.task_headers(Task()) == {"traceparent": Request.traceparent}
    Request.traceparent, Request.headers = None, {"traceparent": "x"}
    assert tracing.task_headers(Task()) == {"traceparent": "x"}
