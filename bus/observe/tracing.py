"""Distributed tracing with OpenTelemetry: one trace per request, gateway → worker → upstream.

Off by default. On when ``tracing.enabled: true`` in ``routing.yaml``, or when the standard
environment names an OTLP endpoint (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``) — unless ``OTEL_SDK_DISABLED=true``. Spans go out over
OTLP/HTTP (protobuf) to ``tracing.endpoint`` or, without it, where the ``OTEL_*``
environment says (``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*`` for batching), in batches, from
a background thread. Needs the ``otel`` extra (``pip install lgsp-bus[otel]``); asked for
without it, the process refuses to start with a message saying so.

Spans:

* ``gateway.request`` (SERVER) per ``POST /v1/{service}/{operation}``, continuing the
  caller's ``traceparent`` header if it sent one;
* ``worker.request`` (CONSUMER), a child of the gateway's span: the W3C ``traceparent``
  travels in the AMQP message headers (:mod:`bus.envelope`);
* ``upstream.call`` (CLIENT) per attempt of the adapter call, a child of the worker's.

Attributes are config names and codes only (service, operation, consumer, upstream,
attempt, outcome code, HTTP status), never a request body; every string value goes
through the log masking (:func:`bus.logs.mask_text`), so an ID number or a name that
reached one (a caller's request_id, a path segment) is masked as in the logs.

When tracing is off no span object is made: :func:`enabled` is a module-level flag that the
callers test before anything else (``bench/tracing_cost.py`` measures both ways).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bus.config import RoutingConfig
from bus.logs import mask_text

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "TracingUnavailable",
    "configure",
    "enabled",
    "outcome",
    "shutdown",
    "span",
    "traceparent",
    "wanted",
]

_TRACER: Tracer | None = None
_PROVIDER: Any = None
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but the ``otel`` extra is not installed."""


def wanted(config: RoutingConfig, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this config and environment turn tracing on."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return config.tracing.enabled or any(environ.get(name) for name in _ENDPOINT_VARS)


def enabled() -> bool:
    """True once :func:`configure` set tracing up (cheap: one global read)."""
    return _TRACER is not None


def configure(config: RoutingConfig, role: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Set tracing up for this process if :func:`wanted`; returns whether it is on."""
    global _TRACER, _PROVIDER
    if not wanted(config, environ):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    except ImportError as exc:
        raise TracingUnavailable(
            "tracing is on (tracing.enabled or OTEL_EXPORTER_OTLP_*ENDPOINT) but the "
            "OpenTelemetry packages are missing: pip install 'lgsp-bus[otel]'"
        ) from exc
    settings = config.tracing
    name = settings.service_name or environ.get("OTEL_SERVICE_NAME") or f"lgsp-bus-{role}"
    resource = Resource.create({"service.name": name, "lgsp.node": config.node})
    provider = TracerProvider(
        resource=resource, sampler=ParentBasedTraceIdRatio(settings.sample_ratio)
    )
    exporter = OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else None
    provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
    _PROVIDER = provider
    _TRACER = provider.get_tracer("lgsp-bus")
    return True


def shutdown() -> None:
    """Export what is buffered and stop (at process exit; a no-op when off)."""
    global _TRACER, _PROVIDER
    if _PROVIDER is not None:
        _PROVIDER.shutdown()
    _TRACER = _PROVIDER = None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        out[key] = mask_text(value) if isinstance(value, str) else value
    return out


@contextlib.contextmanager
def span(
    name: str,
    kind: str,
    attributes: Mapping[str, Any],
    parent: str | None = None,
) -> Iterator[Span]:
    """A span (current within the block) of ``kind`` (``server``, ``consumer``, ``client``,
    ``internal``), a child of the W3C ``parent`` traceparent if given, else of the current
    span. Call only when :func:`enabled`."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    assert _TRACER is not None
    context = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    with _TRACER.start_as_current_span(
        name,
        context=context,
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=_clean(attributes),
        record_exception=False,  # exception text may hold personal data; codes say enough
        set_status_on_exception=True,
    ) as current:
        yield current


def outcome(current: Span, code: str, status: int | None = None) -> None:
    """Record the outcome code (``OK`` or an error code) and HTTP status on ``current``."""
    from opentelemetry.trace import Status, StatusCode

    current.set_attribute("lgsp.outcome", mask_text(code))
    if status is not None:
        current.set_attribute("http.response.status_code", status)
    if code != "OK":
        current.set_status(Status(StatusCode.ERROR, mask_text(code)))


def set_attributes(current: Span, attributes: Mapping[str, Any]) -> None:
    """More attributes on ``current`` (masked like the others)."""
    current.set_attributes(_clean(attributes))


def traceparent() -> str | None:
    """The current span's W3C ``traceparent`` (None when off or outside a span)."""
    if _TRACER is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")
