"""Optional OpenTelemetry tracing of one job: ``idbody.submit`` (gateway) → ``idbody.generate``
(gpu worker) → ``idbody.webhook`` (io worker), one trace, linked through the Celery messages.

Off unless ``IDBODY_OTEL_ENDPOINT`` names an OTLP/HTTP collector; only then is OpenTelemetry
imported (the ``otel`` extra: ``pip install "identity-body[otel]"``), so the default install
carries none of it and a span costs nothing. The trace context rides in each task's message
headers as W3C ``traceparent``.

Example::

    setup_tracing(settings, "idbody-api")                 # once per process
    with span("idbody.submit", request_id=rid):
        celery.send_task(..., headers=trace_headers())     # the task continues this trace
    with span("idbody.generate", carrier=task_headers(current_task), request_id=rid): ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # set by setup_tracing when an endpoint is configured; None: tracing off
PROPAGATED = ("traceparent", "tracestate")


def setup_tracing(settings: Any, service_name: str, exporter: Any = None) -> bool:
    """Send spans to ``settings.otel_endpoint`` (or to ``exporter``, for tests). False when off."""
    global _tracer
    if not settings.otel_endpoint and exporter is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("IDBODY_OTEL_ENDPOINT is set but OpenTelemetry is not installed: "
                    "pip install 'identity-body[otel]'; tracing stays off")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracer = provider.get_tracer("identity-body")
    log.info("tracing to %s as %s", settings.otel_endpoint or "a test exporter", service_name)
    return True


def tracing_enabled() -> bool:
    return _tracer is not None


@contextmanager
def span(name: str, carrier: Mapping[str, Any] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span named ``name``, the child of the context in ``carrier`` (message headers) if any,
    else of the current span. Attributes are prefixed ``idbody.``. Yields None when tracing is off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract

    context = extract(dict(carrier)) if carrier else None
    attrs = {f"idbody.{key}": value for key, value in attributes.items() if value is not None}
    with _tracer.start_as_current_span(name, context=context, attributes=attrs) as current:
        yield current


def trace_headers() -> dict[str, str]:
    """The current span's context as message headers (empty when tracing is off)."""
    if _tracer is None:
        return {}
    from opentelemetry.propagate import inject

    headers: dict[str, str] = {}
    inject(headers)
    return headers


def task_headers(task: Any) -> dict[str, str]:
    """The trace headers a Celery task's message brought (Celery puts custom headers on the
    request, or under ``request.headers`` depending on the protocol)."""
    request = getattr(task, "request", None)
    if request is None:
        return {}
    found = {key: getattr(request, key, None) for key in PROPAGATED}
    nested = getattr(request, "headers", None) or {}
    return {key: value or nested.get(key) for key, value in found.items() if value or nested.get(key)}
