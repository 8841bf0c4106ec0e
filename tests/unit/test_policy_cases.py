"""The shared policy table, on the embedded engine and through the OPA adapter over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from soma.config.settings import Settings
from soma.observability.metrics import Metrics
from soma.policy import PolicyService, create_policy
from tests.support.opa_server import OpaTestServer
from tests.unit.policy_cases import CASES, PolicyCase


@pytest.fixture(scope="module")
def opa() -> Iterator[OpaTestServer]:
    with OpaTestServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["embedded", "opa"])
async def policy(request: pytest.FixtureRequest) -> AsyncIterator[PolicyService]:
    config: dict[str, object] = {"engine": request.param}
    if request.param == "opa":
        config["opa_url"] = request.getfixturevalue("opa").url
    service = create_policy(Settings.model_validate({"policy": config}), Metrics())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_policy_case(policy: PolicyService, case: PolicyCase) -> None:
    assert await policy.decide(case.input) == case.expected


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
