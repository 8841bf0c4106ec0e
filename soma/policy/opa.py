"""Decisions from an OPA server over its REST Data API, loaded with the same `.rego` files."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from soma.policy.port import DECISION_PATH, Decision, PolicyError, PolicyInput, decision_from_result

_BODY_EXCERPT = 200
_JSON = {"content-type": "application/json"}


def _failure(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def _error_text(response: httpx.Response) -> str:
    """OPA's error `{code, message}` as one short line, or the start of whatever came back."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and "message" in body:
        text = f"{body.get('code', 'error')}: {body['message']}"
    else:
        text = response.text
    return " ".join(text.split())[:_BODY_EXCERPT]


class OpaPolicy:
    """`POST {opa_url}/v1/data/soma/policy/decision` with `{"input": ...}`."""

    def __init__(
        self,
        opa_url: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = opa_url.rstrip("/")
        self._timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def description(self) -> str:
        return f"opa {self._base}"

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base, timeout=self._timeout_s, transport=self._transport
            )
        await self.check()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _started(self) -> httpx.AsyncClient:
        if self._client is None:
            raise PolicyError("the OPA client is not started")
        return self._client

    async def check(self) -> str:
        try:
            response = await self._started().get("/health")
        except httpx.HTTPError as exc:
            raise PolicyError(f"OPA at {self._base} unreachable: {_failure(exc)}") from None
        if response.status_code != 200:
            raise PolicyError(f"OPA at {self._base} unhealthy: HTTP {response.status_code}")
        return f"opa {self._base}"

    async def evaluate(self, input: PolicyInput) -> Decision:
        client = self._started()
        try:
            body = orjson.dumps({"input": input.to_json()})
        except TypeError as exc:
            raise PolicyError(f"policy input is not JSON: {exc}") from None
        try:
            response = await client.post(f"/v1/data/{DECISION_PATH}", content=body, headers=_JSON)
        except httpx.HTTPError as exc:
            raise PolicyError(f"OPA request failed: {_failure(exc)}") from None
        if response.status_code != 200:
            raise PolicyError(f"OPA answered HTTP {response.status_code}: {_error_text(response)}")
        try:
            answer: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PolicyError("OPA answered with a body that is not JSON") from None
        if not isinstance(answer, dict) or "result" not in answer:
            # OPA leaves `result` out when the decision is undefined for this input.
            raise PolicyError("OPA answered without a result (decision undefined)")
        return decision_from_result(answer["result"])
