"""Waiting out upstream outages: retry window, backoff, breaker probes, wake-ups, cancellation.

Providers here are in-process fakes of the provider port and the clock is advanced by hand
(the pause advances it instead of sleeping), so no test waits for real time to pass except
the probe tests, which use a tiny probe interval and assert outcomes, never durations.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from soma.config.settings import LLMSettings, ModelSettings
from soma.llm.accumulate import collect
from soma.llm.breaker import BreakerState
from soma.llm.errors import (
    CircuitOpenError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
    UpstreamOutageError,
)
from soma.llm.metrics import LLMMetrics
from soma.llm.outage import ChangeSignal, RetryWindow, pause, reason_of
from soma.llm.router import ModelRouter
from soma.llm.types import ChatChunk, ChatMessage, ChatRequest, ChatResult
from soma.observability.metrics import Metrics

HELLO = ChatRequest(messages=[ChatMessage("user", "hi")])
Step = Exception | list[str]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakePause:
    """Advances the fake clock by the wait instead of sleeping; records every wait."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float, wake: asyncio.Event) -> None:
        self.waits.append(seconds)
        if not wake.is_set():
            self.clock.now += seconds
        await asyncio.sleep(0)


class FakeProvider:
    """Plays `steps` in order (an exception, or the texts to stream); then the default."""

    kind = "fake"

    def __init__(self, *steps: Step, up: bool = True) -> None:
        self.steps: deque[Step] = deque(steps)
        self.up = up
        self.calls = 0
        self.checks = 0

    def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        return self._stream()

    async def _stream(self) -> AsyncGenerator[ChatChunk, None]:
        self.calls += 1
        step: Step = self.steps.popleft() if self.steps else ["ok"]
        if not self.steps and not self.up and isinstance(step, list):
            step = ProviderUnavailableError("fake: connection refused")
        if isinstance(step, Exception):
            raise step
        for index, text in enumerate(step):
            if text == "!":
                raise ProviderUnavailableError("fake: connection reset")
            yield ChatChunk(text=text, finish_reason="stop" if index == len(step) - 1 else None)

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), "fake", self.kind)

    async def check(self) -> str:
        self.checks += 1
        if not self.up:
            raise ProviderUnavailableError("fake: connection refused")
        return "up"

    async def aclose(self) -> None:
        return None


def settings(**overrides: float) -> LLMSettings:
    values = {
        "retry_window_s": 60.0,
        "retry_backoff_max_s": 4.0,
        "retry_after_max_s": 20.0,
        "breaker_failures": 3,
        "breaker_reset_s": 30.0,
        "probe_interval_s": 0.01,
        **overrides,
    }
    return LLMSettings(
        default_model="gpt",
        models={"gpt": ModelSettings(provider="openai", base_url="http://up.invalid/v1")},
        **values,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class World:
    def __init__(self, provider: FakeProvider, **overrides: float) -> None:
        self.clock = Clock()
        self.pause = FakePause(self.clock)
        self.metrics = Metrics()
        self.provider = provider
        self.router = ModelRouter(
            settings(**overrides),
            LLMMetrics(self.metrics),
            {"gpt": provider, "local": FakeProvider()},
            clock=self.clock,
            pause=self.pause,
            rng=lambda: 0.5,
        )

    async def text(self) -> str:
        return "".join([c.text async for c in self.router.stream(None, HELLO)])


@pytest.fixture
async def closing() -> AsyncIterator[list[ModelRouter]]:
    routers: list[ModelRouter] = []
    yield routers
    for router in routers:
        await router.aclose()


def test_retry_window_backs_off_exponentially_with_jitter_up_to_the_cap() -> None:
    clock = Clock()
    window = RetryWindow(100, backoff_max_s=4, retry_after_max_s=20, clock=clock, rng=lambda: 1.0)
    assert [window.next_wait() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    low = RetryWindow(100, backoff_max_s=4, retry_after_max_s=20, clock=clock, rng=lambda: 0.0)
    # Equal jitter: never under half the ceiling, so a burst of waiters still spreads out.
    assert [low.next_wait() for _ in range(4)] == [0.125, 0.25, 0.5, 1.0]


def test_retry_window_honours_retry_after_up_to_its_cap_and_ends_at_the_deadline() -> None:
    clock = Clock()
    window = RetryWindow(30, backoff_max_s=4, retry_after_max_s=20, clock=clock, rng=lambda: 1.0)
    assert window.next_wait(7.0) == 7.0
    clock.now += 7
    assert window.next_wait(500.0) == 20.0
    clock.now += 20
    assert window.next_wait(0.0) == 1.0  # a zero Retry-After still backs off a little
    clock.now += 1
    assert window.next_wait(10.0) == 2.0  # never past the end of the window
    clock.now += 2
    assert window.next_wait() is None
    assert window.waits == 4


def test_reasons_name_the_kind_of_failure_never_the_address() -> None:
    assert reason_of(ProviderUnavailableError("http://u:p@h/ refused")) == "unreachable"
    assert reason_of(ProviderTimeoutError("slow")) == "timeout"
    assert reason_of(ProviderUnavailableError("x", status=408)) == "timeout"
    assert reason_of(ProviderUnavailableError("x", status=429)) == "rate_limited"
    assert reason_of(ProviderUnavailableError("x", status=503)) == "server_error"
    assert reason_of(CircuitOpenError("open")) == "circuit_open"


async def test_pause_returns_when_woken_and_after_its_timeout() -> None:
    signal = ChangeSignal()
    wake = signal.current()
    waiter = asyncio.create_task(pause(3600, wake))
    await asyncio.sleep(0)
    signal.notify()
    await asyncio.wait_for(waiter, 5)
    assert wake.is_set() and not signal.current().is_set()
    await pause(0.001, signal.current())  # times out quietly


async def test_transient_failures_before_the_first_token_are_waited_out(
    closing: list[ModelRouter],
) -> None:
    provider = FakeProvider(
        ProviderUnavailableError("fake: connection refused"),
        ProviderTimeoutError("fake: no answer"),
        ProviderUnavailableError("fake: HTTP 503", status=503),
        ["hel", "lo"],
    )
    world = World(provider, breaker_failures=10)
    closing.append(world.router)
    assert await world.text() == "hello"
    assert provider.calls == 4
    assert world.pause.waits == [0.1875, 0.375, 0.75]
    waits = "soma_llm_retry_waits_total"
    for reason in ("unreachable", "timeout", "server_error"):
        assert sample(world.metrics, waits, model="gpt", reason=reason) == 1
    assert sample(world.metrics, "soma_llm_waiting_requests", model="gpt") == 0


async def test_a_429_waits_as_long_as_its_retry_after(closing: list[ModelRouter]) -> None:
    provider = FakeProvider(
        ProviderUnavailableError("fake: HTTP 429", status=429, retry_after_s=7.0),
        ProviderUnavailableError("fake: HTTP 429", status=429, retry_after_s=900.0),
        ["ok"],
    )
    world = World(provider)
    closing.append(world.router)
    assert await world.text() == "ok"
    assert world.pause.waits == [7.0, 20.0]
    waits = "soma_llm_retry_waits_total"
    assert sample(world.metrics, waits, model="gpt", reason="rate_limited") == 2


async def test_a_rejected_request_fails_at_once(closing: list[ModelRouter]) -> None:
    world = World(FakeProvider(ProviderRequestError("fake: HTTP 400 bad request", status=400)))
    closing.append(world.router)
    with pytest.raises(ProviderRequestError):
        await world.text()
    assert world.pause.waits == []
    assert world.provider.calls == 1


async def test_a_failure_after_the_first_token_is_not_retried(closing: list[ModelRouter]) -> None:
    world = World(FakeProvider(["partial", "!"]))
    closing.append(world.router)
    seen: list[str] = []
    with pytest.raises(StreamInterruptedError):
        async for chunk in world.router.stream(None, HELLO):
            seen.append(chunk.text)
    assert seen == ["partial"]
    assert world.pause.waits == []
    assert world.provider.calls == 1


async def test_an_outage_longer_than_the_window_fails_with_a_clear_error(
    closing: list[ModelRouter],
) -> None:
    provider = FakeProvider(up=False)
    world = World(provider, retry_window_s=10, probe_interval_s=3600)
    closing.append(world.router)
    with pytest.raises(UpstreamOutageError) as caught:
        await world.text()
    error = caught.value
    assert str(error) == (
        "the model upstream is unavailable: model 'gpt' did not answer within the retry"
        " window of 10s (last failure: circuit_open)"
    )
    assert world.clock.now - 1000.0 == pytest.approx(10)
    # Three real calls opened the breaker; every later try failed fast without a call.
    assert provider.calls == 3
    assert sample(world.metrics, "soma_llm_retry_window_exhausted_total", model="gpt") == 1
    waits = "soma_llm_retry_waits_total"
    assert sample(world.metrics, waits, model="gpt", reason="unreachable") == 3
    assert sample(world.metrics, waits, model="gpt", reason="circuit_open") >= 1
    assert sample(world.metrics, "soma_llm_circuit_open", model="gpt") == 1
    assert world.router.open_circuits() == ["gpt"]


async def test_a_zero_window_fails_on_the_first_unavailable_pass(
    closing: list[ModelRouter],
) -> None:
    down = ProviderUnavailableError("fake: down", status=502)
    world = World(FakeProvider(down), retry_window_s=0)
    closing.append(world.router)
    with pytest.raises(UpstreamOutageError, match=r"last failure: server_error"):
        await world.text()
    assert world.pause.waits == []


async def test_a_probe_half_opens_the_breaker_and_wakes_every_waiter(
    closing: list[ModelRouter],
) -> None:
    provider = FakeProvider(up=False)
    metrics = Metrics()
    router = ModelRouter(
        settings(breaker_failures=2, breaker_reset_s=3600, retry_backoff_max_s=3600),
        LLMMetrics(metrics),
        {"gpt": provider, "local": FakeProvider()},
    )
    closing.append(router)
    waiters = [asyncio.create_task(router.complete(None, HELLO)) for _ in range(20)]
    async with asyncio.timeout(30):
        while router.open_circuits() != ["gpt"] or provider.checks < 2:
            await asyncio.sleep(0.01)
    calls_while_down = provider.calls
    assert all(not w.done() for w in waiters)
    provider.up = True
    # Backoff is an hour and the breaker resets after an hour: only the probe can end this.
    async with asyncio.timeout(30):
        results = await asyncio.gather(*waiters)
    assert [r.content for r in results] == ["ok"] * 20
    assert router.route("gpt").breaker.state is BreakerState.CLOSED
    assert provider.calls == calls_while_down + 20
    assert sample(metrics, "soma_llm_breaker_probes_total", model="gpt", result="ok") == 1
    assert sample(metrics, "soma_llm_breaker_probes_total", model="gpt", result="unavailable") >= 1
    assert sample(metrics, "soma_llm_waiting_requests", model="gpt") == 0
    assert sample(metrics, "soma_llm_circuit_open", model="gpt") == 0


async def test_cancelling_a_waiting_request_ends_it_at_once(closing: list[ModelRouter]) -> None:
    provider = FakeProvider(up=False)
    metrics = Metrics()
    router = ModelRouter(
        settings(breaker_failures=1, retry_backoff_max_s=3600, probe_interval_s=3600),
        LLMMetrics(metrics),
        {"gpt": provider, "local": FakeProvider()},
    )
    closing.append(router)
    waiter = asyncio.create_task(router.complete(None, HELLO))
    async with asyncio.timeout(30):
        while sample(metrics, "soma_llm_waiting_requests", model="gpt") != 1:
            await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 30)
    assert sample(metrics, "soma_llm_waiting_requests", model="gpt") == 0


async def test_stopping_the_router_ends_its_probes() -> None:
    provider = FakeProvider(up=False)
    world = World(provider, breaker_failures=1, retry_window_s=0, probe_interval_s=0.001)
    with pytest.raises(UpstreamOutageError):
        await world.text()
    async with asyncio.timeout(30):
        while provider.checks == 0:
            await asyncio.sleep(0.01)
    await world.router.aclose()
    checks = provider.checks
    await asyncio.sleep(0.05)
    assert provider.checks == checks
    assert world.router.open_circuits() == ["gpt"]
