"""The OpenAI doors driven by the official `openai` client against the real process (issue 14)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.platform import Platform
from tests.e2e.stacks import FAST_CHUNKS, Api, Stack
from tests.e2e.test_limits import tenant_with_key
from tests.e2e.test_tools import _other_tenant_key as other_tenant_key

pytestmark = pytest.mark.e2e


def client(platform: Platform, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=key, max_retries=0)


def test_models_list_the_callers_agents(stack: Stack) -> None:
    platform = stack.launch()
    api = Api(platform, stack.admin_key)
    created = api.client.post("/v1/agents", json={"name": "helper", "instructions": "Help."})
    assert created.status_code == 201, created.text
    oa = client(platform, stack.admin_key)
    names = {model.id for model in oa.models.list()}
    assert {"assistant", "helper"} <= names
    assert oa.models.retrieve("helper").id == "helper"
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("nobody")


def test_chat_completion_and_its_stream(stack: Stack) -> None:
    platform = stack.launch()
    oa = client(platform, stack.admin_key)
    completion = oa.chat.completions.create(
        model="assistant",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "assistant"
    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    chunks = list(
        oa.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": [{"type": "text", "text": "stream me"}]}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(d or "" for d in deltas) == "You said: stream me"
    assert len([d for d in deltas if d]) == FAST_CHUNKS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_the_history_reaches_the_model_and_a_session_can_be_bound(embedded: Stack) -> None:
    platform = embedded.launch()
    api = Api(platform, embedded.admin_key)
    oa = client(platform, embedded.admin_key)
    completion = oa.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ],
    )
    run = api.run(completion.headers["x-run-id"])
    messages = api.messages(run["session_id"])
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "Be brief."), ("user", "one"), ("assistant", "two"), ("user", "three"),
        ("assistant", "You said: three"),
    ]  # fmt: skip
    session = api.session()
    bound = oa.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "in my session"}],
        extra_headers={"X-Soma-Session-Id": session},
    )
    assert bound.choices[0].message.content == "You said: in my session"
    assert [m["content"] for m in api.messages(session)] == [
        "in my session", "You said: in my session",
    ]  # fmt: skip


def test_errors_are_the_clients_typed_exceptions(embedded: Stack) -> None:
    platform = embedded.launch()
    oa = client(platform, embedded.admin_key)
    with pytest.raises(openai.NotFoundError) as missing:
        oa.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as unsupported:
        oa.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "x"}], temperature=0.2
        )
    assert unsupported.value.code == "unsupported_parameter"
    assert unsupported.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as tools:
        oa.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "r",
                                                          "tool_call_id": "c1"}],
        )  # fmt: skip
    assert tools.value.param == "messages[1].role"
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(
            model="assistant", messages=[{"role": "assistant", "content": "no question"}]
        )
    with pytest.raises(openai.AuthenticationError):
        client(platform, "soma_nope_nope").models.list()
    raw = httpx.post(
        f"{platform.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {embedded.admin_key}"},
        content=b"{not json",
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"


def test_another_tenant_sees_nothing(embedded: Stack) -> None:
    platform = embedded.launch()
    api = Api(platform, embedded.admin_key)
    created = api.client.post("/v1/agents", json={"name": "private", "instructions": "Hi."})
    assert created.status_code == 201, created.text
    oa = client(platform, embedded.admin_key)
    response = oa.responses.create(model="private", input="mine")
    other = client(platform, other_tenant_key(api))
    assert "private" not in {model.id for model in other.models.list()}
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model="private", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="assistant", input="x", previous_response_id=response.id)


def test_a_refused_completion_leaves_no_session(embedded: Stack) -> None:
    """The new session is written with the run: refused at admission (429), nothing stays."""
    platform = embedded.launch()
    _, key = tenant_with_key(Api(platform, embedded.admin_key), max_inflight_runs=1)
    api = Api(platform, key)
    agent = api.client.post("/v1/agents", json={"name": "slowpoke", "model": "slow"})
    assert agent.status_code == 201, agent.text
    busy = api.session("slowpoke")
    assert api.send(busy, "take your time").status_code == 202
    with pytest.raises(openai.RateLimitError):
        client(platform, key).chat.completions.create(
            model="slowpoke",
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "one too many"}],
        )  # fmt: skip
    listed = api.client.get("/v1/sessions")
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()["items"]] == [busy]
