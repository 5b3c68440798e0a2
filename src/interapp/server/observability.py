"""Prometheus metrics and structured (JSON lines) logs for the application server.

Theory of operation: the metric objects live in this module; the code that does the work bumps
them (the token endpoint counts logins and refreshes by outcome, the event hub counts delivered
events, the stream handler tracks open streams, the error renderer counts errors by code).
:class:`MetricsMiddleware` times every HTTP request by *route template* (never the raw path or
query string, which may carry tickets). With ``--workers N`` each worker writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them, so any worker answers for all.
Log records are one JSON object per line and carry no secrets: nothing logs a token, password
or URL query value. uvicorn's own lines do name the path and query of each WebSocket
(``"WebSocket /v1/events?ticket=…" [accepted]``, at ``info``), so every record passes
:class:`RedactQuery` on its way out, which keeps the parameter names and drops their values.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_SECONDS = Histogram(
    "interapp_http_request_duration_seconds", "HTTP request latency by route.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
LOGINS = Counter("interapp_logins_total", "Token grants by grant type and outcome.",
                 ["grant", "outcome"])
REFRESHES = Counter("interapp_refreshes_total", "Refresh-token rotations by outcome.",
                    ["outcome"])
EVENTS_DELIVERED = Counter("interapp_events_delivered_total",
                           "Events handed to connected streams.")
ACTIVE_STREAMS = Gauge("interapp_active_streams", "Connected event streams.",
                       multiprocess_mode="livesum")
ERRORS = Counter("interapp_errors_total", "Error responses by code.", ["code"])
SEND_BATCH = Histogram(
    "interapp_message_batch_size", "Messages stored per transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32))

log = logging.getLogger("interapp.server.access")


def metrics_body() -> tuple[bytes, str]:
    """The exposition text (aggregated over workers in multi-process mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Times HTTP requests by route template and writes one access-log record each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": scope["method"], "route": route,
                                           "status": status, "ms": round(elapsed * 1000, 2)})


_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname.lower(),
            "logger": record.name, "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__  # the type only: no trace, no values
        return json.dumps(entry, default=str)


_QUERY_VALUE = re.compile(r"([?&][^?&=\s\"#]+)=[^&\s\"#]*")
REDACTED = "[redacted]"


def redact_query(text: str) -> str:
    """``/v1/events?ticket=abc&since=3`` → ``/v1/events?ticket=[redacted]&since=[redacted]``."""
    return _QUERY_VALUE.sub(rf"\1={REDACTED}", text) if "=" in text else text


class RedactQuery(logging.Filter):
    """Drops the values of URL query parameters from a record's message and arguments
    (a browser's single-use event ticket travels as ``?ticket=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_query(a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def configure_logging(level: str, fmt: str) -> dict[str, Any]:
    """Route interapp's and uvicorn's logs to stderr as JSON lines (or text); uvicorn config."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactQuery())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("interapp", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper() if level != "trace" else "DEBUG")
        logger.propagate = False
    return {"version": 1, "disable_existing_loggers": False}
