"""JSON log lines with request, tenant, run and trace context (ARCHITECTURE §13)."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from opentelemetry import trace

from soma.core.redact import redact_text

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


class RedactingFilter(logging.Filter):
    """Masks URL credentials and secret query parameters in every record before it is formatted.

    The message, string extras (also inside lists and dicts) and the exception text are
    rewritten in place, so every handler after this one sees only the redacted record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # Arguments that do not fit the format: mask both parts as they are.
            record.msg = redact_text(str(record.msg))
            args = record.args
            if isinstance(args, tuple):
                record.args = tuple(_redact_value(a) for a in args)
            elif args is not None:
                record.args = _redact_value(args)
        else:
            redacted = redact_text(message)
            if redacted != message or record.args:
                record.msg, record.args = redacted, None
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and not key.startswith("_"):
                record.__dict__[key] = _redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(str(value))
    if depth >= 2:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The traceback: the filter's redacted text when it ran, else formatted now and redacted."""
    if record.exc_text:
        return redact_text(record.exc_text)
    if record.exc_info:
        return redact_text(formatter.formatException(record.exc_info))
    return None


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
        exc = _exception_text(self, record)
        if exc:
            line["exc"] = exc
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in context_fields().items())
        text = f"{record.levelname:<7} {record.name}: {record.getMessage()} [{ctx}]"
        exc = _exception_text(self, record)
        if exc:
            text += "\n" + exc
        return text


def configure_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Route every logger (ours, uvicorn's, libraries') through one handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
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
