"""The CLI's HTTP client: the public API only, problem+json errors as `ApiError`, SSE events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from soma.config import ClientSettings

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=None)


class ApiError(Exception):
    """An answer that is not 2xx, with the problem's title and detail when it has one."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Event:
    """One server-sent event of a run."""

    id: int | None
    type: str
    data: dict[str, Any]


class Api:
    """A thin client of `/v1`; `key` goes in the Authorization header and nowhere else."""

    def __init__(self, settings: ClientSettings, transport: httpx.BaseTransport | None = None):
        headers = {"User-Agent": "soma-cli"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self.url = settings.url
        self.http = httpx.Client(
            base_url=settings.url, headers=headers, timeout=TIMEOUT, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        check(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=present(params))

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=present(params))

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> None:
        self.request("DELETE", path, params=present(params))

    def items(self, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
        """Up to `limit` items of a cursor-paginated list, following `next_cursor`."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < limit:
            page = self.get(path, limit=min(200, limit - len(found)), cursor=cursor, **params)
            found.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found

    def stream(self, method: str, path: str, after: int | None = None, **kwargs: Any) -> Events:
        """A run's events; `after` resumes past that event id (`Last-Event-ID`)."""
        headers = {} if after is None else {"Last-Event-ID": str(after)}
        request = self.http.build_request(method, path, headers=headers, **kwargs)
        request.extensions["timeout"] = STREAM_TIMEOUT.as_dict()
        response = self.http.send(request, stream=True)
        if response.status_code >= 400:
            response.read()
            response.close()
            check(response)
        return Events(response)


class Events:
    """Iterates the events of an open SSE response; `last_id` is what to resume from."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.run_id = response.headers.get("X-Run-ID")
        self.last_id: int | None = None

    def __iter__(self) -> Iterator[Event]:
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in self.response.iter_lines():
            if line:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                elif name:
                    fields[name] = value
                continue
            if "event" in fields or data:
                event = Event(_int(fields.get("id")), fields.get("event", "message"),
                              orjson.loads("\n".join(data) or "{}"))  # fmt: skip
                if event.id is not None:
                    self.last_id = event.id
                yield event
            fields, data = {}, []

    def close(self) -> None:
        self.response.close()


def check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail = response.reason_phrase
    try:
        body = response.json()
        detail = str(body.get("detail") or body.get("title") or detail)
    except ValueError:
        pass
    raise ApiError(response.status_code, detail)


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def present(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
