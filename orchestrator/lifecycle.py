"""Starting, probing, retrying and stopping the services of one plan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

from orchestrator.registry import ServiceState
from soma.core import Drainable, Health, HealthStatus
from soma.observability.logging import service_var
from soma.observability.metrics import Metrics

_log = logging.getLogger("soma.orchestrator")
HEALTH_TIMEOUT_S = 2.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


class CriticalStartFailure(Exception):
    """A critical service failed to start; the message is the one-line reason."""


@runtime_checkable
class Admitting(Protocol):
    """A service that takes new work (the gateway): it accepts only while the plan is ready."""

    def admit_when(self, ready: Callable[[], bool]) -> None: ...


@runtime_checkable
class HealthDetailsGate(Protocol):
    """A service that can tell whether a bearer credential may see health details."""

    async def admits_health_details(self, credentials: str, client: str) -> bool: ...


class Lifecycle:
    """Owns the per-service state of a started plan; the orchestrator drives it."""

    def __init__(
        self, states: Sequence[ServiceState], metrics: Metrics, stop_timeout_s: float
    ) -> None:
        self.states = list(states)
        self.metrics = metrics
        self.stop_timeout_s = stop_timeout_s
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._draining = False

    def accepting(self) -> bool:
        """Every service started and no drain begun: readiness, and what the gateway admits by.

        One predicate for both, so `/v1/health/ready` is 200 exactly while new work is taken.
        """
        return self._started and not self._draining

    async def admits_health_details(self, credentials: str, client: str) -> bool:
        """Whether a started gate service accepts `credentials` for health details."""
        for state in self.states:
            service = state.service
            if isinstance(service, HealthDetailsGate) and state.status == HealthStatus.HEALTHY:
                try:
                    return await asyncio.wait_for(
                        service.admits_health_details(credentials, client), HEALTH_TIMEOUT_S
                    )
                except TimeoutError:
                    return False
        return False

    async def start_all(self) -> None:
        """Start in order; raise `CriticalStartFailure` after stopping what already started."""
        for state in self.states:
            if isinstance(state.service, Admitting):
                state.service.admit_when(self.accepting)
        for state in self.states:
            try:
                await self._start_one(state)
            except asyncio.CancelledError:
                await self.stop_all(deadline=time.monotonic() + self.stop_timeout_s)
                raise
            except Exception as exc:
                reason = _one_line(exc)
                if state.definition.critical:
                    state.report(Health.unhealthy(reason))
                    self._set_up(state, False)
                    await self.stop_all(deadline=time.monotonic() + self.stop_timeout_s)
                    raise CriticalStartFailure(
                        f"service {state.name} failed to start: {reason}"
                    ) from exc
                state.report(Health(HealthStatus.DEGRADED, f"start failed: {reason}"))
                self._set_up(state, False)
                _log.warning("service %s degraded, retrying in background: %s", state.name, reason)
                self._retries[state.name] = asyncio.create_task(self._retry(state))
        self._started = True

    async def _start_one(self, state: ServiceState) -> None:
        assert state.service is not None
        state.status = HealthStatus.STARTING
        state.attempts += 1
        token = service_var.set(state.name)
        began = time.perf_counter()
        try:
            await state.service.start()
        finally:
            service_var.reset(token)
        state.report(Health.healthy())
        self._set_up(state, True)
        _log.info(
            "service %s started",
            state.name,
            extra={"elapsed_ms": round((time.perf_counter() - began) * 1000, 1)},
        )

    async def _retry(self, state: ServiceState) -> None:
        delay = RETRY_INITIAL_S
        while True:
            await asyncio.sleep(delay)
            try:
                await self._start_one(state)
                return
            except Exception as exc:
                state.report(Health(HealthStatus.DEGRADED, f"start failed: {_one_line(exc)}"))
                delay = min(delay * 2, RETRY_MAX_S)

    async def drain_all(self, deadline: float) -> None:
        """Let services finish or hand back in-flight work, all at once: the gateway must
        refuse new work while the workers are still finishing theirs."""
        self._draining = True
        drains: list[Coroutine[Any, Any, bool]] = []
        for state in reversed(self.states):
            service = state.service
            running = state.status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
            if running and isinstance(service, Drainable):
                drains.append(self._bounded(state, service.drain(), deadline, "drain"))
        await asyncio.gather(*drains)

    async def stop_all(self, deadline: float) -> bool:
        """Stop started services in reverse order; False if any stop failed or ran out of time."""
        self._draining = True
        for task in self._retries.values():
            task.cancel()
        clean = True
        for state in reversed(self.states):
            if state.service is None or state.attempts == 0:
                continue
            if state.status == HealthStatus.STOPPED:
                continue
            ok = await self._bounded(state, state.service.stop(), deadline, "stop")
            clean = clean and ok
            state.report(Health(HealthStatus.STOPPED, state.detail if not ok else ""))
            self._set_up(state, False)
        return clean

    async def _bounded(
        self, state: ServiceState, work: Awaitable[None], deadline: float, verb: str
    ) -> bool:
        remaining = max(deadline - time.monotonic(), 0.01)
        token = service_var.set(state.name)
        try:
            await asyncio.wait_for(work, timeout=remaining)
            return True
        except TimeoutError:
            _log.error("service %s did not %s within the shutdown timeout", state.name, verb)
            return False
        except Exception as exc:
            _log.error("service %s failed to %s: %s", state.name, verb, _one_line(exc))
            return False
        finally:
            service_var.reset(token)

    async def probe(self) -> None:
        """Ask every started service for its health, concurrently and with a timeout."""
        await asyncio.gather(*(self._probe_one(s) for s in self.states))

    async def _probe_one(self, state: ServiceState) -> None:
        if state.service is None or state.status in (
            HealthStatus.STARTING,
            HealthStatus.STOPPED,
        ):
            return
        if state.name in self._retries and not self._retries[state.name].done():
            return
        try:
            health = await asyncio.wait_for(state.service.health(), HEALTH_TIMEOUT_S)
        except TimeoutError:
            health = Health.unhealthy(f"health check timed out after {HEALTH_TIMEOUT_S:g}s")
        except Exception as exc:
            health = Health.unhealthy(f"health check failed: {_one_line(exc)}")
        state.report(health)
        self._set_up(state, health.status == HealthStatus.HEALTHY)

    def critical_healthy(self) -> bool:
        return all(s.status == HealthStatus.HEALTHY for s in self.states if s.definition.critical)

    def _set_up(self, state: ServiceState, up: bool) -> None:
        self.metrics.service_up.labels(state.name).set(1 if up else 0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
