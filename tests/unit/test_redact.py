"""Secrets in URLs never reach a log line, an error message or a health detail."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from soma.core.redact import redact_text, redact_url
from soma.llm.errors import (
    AllModelsFailedError,
    CircuitOpenError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
    UnknownModelError,
    public_error,
)
from soma.llm.openai import OpenAIProvider
from soma.observability.logging import configure_logging

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:hunter2@llm:9000/v1", "http://***@llm:9000/v1"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("postgresql+asyncpg://soma:hunter2@db/soma", "postgresql+asyncpg://***@db/soma"),
        ("https://hunter2@github.com/x.git", "https://***@github.com/x.git"),
        ("http://a:b@c@host/", "http://***@host/"),
        ("http://h/v1?api_key=hunter2&model=m", "http://h/v1?api_key=***&model=m"),
        ("http://h/?key=hunter2;sig=hunter2", "http://h/?key=***;sig=***"),
        ("http://h/?X-Amz-Signature=hunter2&x=1", "http://h/?X-Amz-Signature=***&x=1"),
        ("http://h/?access_token=hunter2#token=hunter2", "http://h/?access_token=***#token=***"),
        ("http://h/?password=hunter2&secret=hunter2", "http://h/?password=***&secret=***"),
        ("http://[::1]:80/p?token=hunter2", "http://[::1]:80/p?token=***"),
        ("http://plain.host:80/v1?model=m", "http://plain.host:80/v1?model=m"),
    ],
)
def test_redact_url_masks_userinfo_and_secret_parameters(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_every_url_and_partial_query() -> None:
    text = (
        f"gpt: http://u:{SECRET}@10.0.0.5:9000/v1 unreachable; fallback "
        f'"https://h/v1?api_key={SECRET}" failed; GET /v1/x?token={SECRET}&page=2'
    )
    redacted = redact_text(text)
    assert SECRET not in redacted
    assert "http://***@10.0.0.5:9000/v1 unreachable" in redacted
    assert "/v1/x?token=***&page=2" in redacted
    assert redact_text(redacted) == redacted
    assert redact_text("nothing to see: a=b") == "nothing to see: a=b"


def test_openai_provider_never_shows_the_credentials_of_its_base_url() -> None:
    provider = OpenAIProvider("gpt", f"http://user:{SECRET}@127.0.0.1:1/v1?key={SECRET}", "m")
    assert SECRET not in repr(provider)
    assert SECRET not in provider.describe()
    assert provider.base_url.startswith("http://user:")  # requests still carry them


def test_public_error_says_what_failed_without_addresses() -> None:
    where = f"http://user:{SECRET}@10.1.2.3:9000/v1"
    cases = {
        ProviderUnavailableError(f"gpt: {where} unreachable"): "the model upstream is unavailable",
        CircuitOpenError(f"gpt at {where}: circuit open"): "the model upstream is unavailable",
        AllModelsFailedError("gpt", [("gpt", f"{where} down")]): (
            "the model upstream is unavailable"
        ),
        ProviderTimeoutError(f"no answer from {where}"): (
            "the model upstream is unavailable: it did not answer in time"
        ),
        ProviderRequestError(f"HTTP 400 from {where}", status=400): (
            "the model upstream rejected the request (HTTP 400)"
        ),
        StreamInterruptedError(f"{where} broke"): (
            "the model upstream stopped answering in the middle of the reply"
        ),
        UnknownModelError("gpt", ["local"]): "the agent's model 'gpt' is not configured",
        RuntimeError(f"boom at {where}"): "the run failed because of an internal error",
    }
    for exc, sentence in cases.items():
        assert public_error(exc) == sentence
        assert "10.1.2.3" not in public_error(exc)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    yield stream
    configure_logging("json", "INFO")


def test_the_log_filter_redacts_message_args_extras_and_tracebacks(json_log: io.StringIO) -> None:
    log = logging.getLogger("soma.test.redact")
    url = f"http://user:{SECRET}@llm:9000/v1?api_key={SECRET}"
    log.warning("calling %s", url, extra={"base_url": url, "urls": [url], "where": {"u": url}})
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        log.exception("upstream failed")
    lines = [orjson.loads(line) for line in json_log.getvalue().splitlines()]
    assert SECRET not in json_log.getvalue()
    first, second = lines
    assert first["msg"] == "calling http://***@llm:9000/v1?api_key=***"
    assert first["base_url"] == first["urls"][0] == first["where"]["u"]
    assert "cannot reach http://***@llm:9000/v1" in second["exc"]


def test_the_text_format_is_redacted_too() -> None:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream)
    try:
        logging.getLogger("soma.test.redact").error("db at postgresql://u:%s@db/x down", SECRET)
    finally:
        configure_logging("json", "INFO")
    assert SECRET not in stream.getvalue()
    assert "postgresql://***@db/x down" in stream.getvalue()
