"""What a consumer of this release does with events of a newer one (docs/rollback.md)."""

from __future__ import annotations

import orjson
import pytest

from soma.core.events import Envelope


def test_unknown_envelope_and_payload_fields_are_ignored() -> None:
    newer = {
        "event_id": "e1",
        "type": "run.requested",
        "version": 2,
        "tenant_id": "t1",
        "session_id": "s1",
        "run_id": "r1",
        "ts": "2026-12-03T12:00:00+00:00",
        "payload": {"future": {"nested": True}},
        "added_later": "x",
    }
    envelope = Envelope.from_bytes(orjson.dumps(newer))
    assert (envelope.run_id, envelope.version, envelope.payload) == ("r1", 2, newer["payload"])
    assert "added_later" not in orjson.loads(envelope.to_bytes())


def test_an_envelope_without_its_required_fields_is_refused() -> None:
    # Refused deliveries are retried and dead-lettered, never silently dropped.
    with pytest.raises(ValueError):
        Envelope.from_bytes(orjson.dumps({"type": "run.requested"}))
