"""Following a run's events to their end, resuming with `Last-Event-ID` when the stream drops."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import httpx

from soma.cli.api import Api, ApiError, Event, Events
from soma.cli.output import Output
from soma.cli.transcript import TERMINAL, Transcript

RESUME_WINDOW_S = 120.0
"""How long a dropped stream is retried without any event arriving (a restart takes a while)."""
BACKOFF_MAX_S = 5.0


def follow(
    api: Api,
    run_id: str,
    first: Events | None,
    on_event: Callable[[Event], None],
    after: int | None = None,
) -> str | None:
    """Feeds events to `on_event` until the terminal one; returns its type. A dropped stream
    (network or server restart) is resumed after the last id seen, with a growing pause."""
    events = first
    deadline = time.monotonic() + RESUME_WINDOW_S
    pause = 0.5
    while True:
        try:
            if events is None:
                events = api.stream("GET", f"/v1/runs/{run_id}/events", after=after)
            for event in events:
                deadline = time.monotonic() + RESUME_WINDOW_S
                pause = 0.5
                on_event(event)
                if event.type in TERMINAL:
                    return event.type
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        except ApiError as exc:
            # 503: the server is starting or draining; anything else will not get better.
            if exc.status != 503 or time.monotonic() > deadline:
                raise
        finally:
            if events is not None:
                events.close()
        if events is not None and events.last_id is not None:
            after = events.last_id
        if time.monotonic() > deadline:
            return None
        events = None
        time.sleep(pause)
        pause = min(pause * 2, BACKOFF_MAX_S)


def tail(api: Api, out: Output, args: argparse.Namespace) -> int:
    """`soma runs tail RUN_ID`: every event (from the start, or after `--after`) until the end."""
    if out.as_json:

        def emit(event: Event) -> None:
            out.json({"id": event.id, "event": event.type, "data": event.data})

        ended = follow(api, args.run, None, emit, args.after)
    else:
        transcript = Transcript(out.console)
        ended = follow(api, args.run, None, transcript.show, args.after)
        transcript.close()
    return 0 if ended == "run.completed" else 1
