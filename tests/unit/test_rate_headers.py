"""Rate headers stay numbers a client can read, whatever rate an admin set."""

from __future__ import annotations

import math

from soma.gateway.auth.guard import retry_after
from soma.limits.governor import RateVerdict
from soma.limits.port import Taken


def test_a_bucket_that_never_refills_reports_a_day() -> None:
    verdict = RateVerdict(Taken(False, 1, 0, math.inf, math.inf))
    assert verdict.headers["RateLimit-Reset"] == "86400"
    assert retry_after(math.inf) == "86400"


def test_ordinary_values_round_up() -> None:
    verdict = RateVerdict(Taken(True, 10, 9, 0.2, 0.0))
    assert verdict.headers == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "9",
        "RateLimit-Reset": "1",
    }
    assert retry_after(0.01) == "1"
