"""JSON log lines with request, tenant, run and trace context (ARCHITECTURE §13)."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from opentelemetry import trace

service_var: ContextVar[str] = ContextVar("soma_service", default="orchestrator")
request_id_var: ContextVar[str | None] = ContextVar("soma_request_id", default=None)
tenant_id_var: ContextVar[str | None] = ContextVar("soma_tenant_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("soma_session_id", default=None)
run_id_var: ContextVar[str | None] = ContextVar("soma_run_id", default=None)

_CONTEXT: tuple[tuple[str, ContextVar[str | None]], ...] = (
    ("request_id", request_id_var),
    ("tenant_id", tenant_id_var),
    ("session_id", session_id_var),
    ("run_id", run_id_var),
)
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def context_fields() -> dict[str, str]:
    """The log context of the current task: ids known so far and the active span."""
    fields: dict[str, str] = {"service": service_var.get()}
    for key, var in _CONTEXT:
        value = var.get()
        if value is not None:
            fields[key] = value
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra attributes given to the logger are kept."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(context_fields())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in context_fields().items())
        text = f"{record.levelname:<7} {record.name}: {record.getMessage()} [{ctx}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Route every logger (ours, uvicorn's, libraries') through one handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
