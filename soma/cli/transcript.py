"""A run's events in the terminal: the reply as live Markdown, tool calls and results as they
happen, approvals asked through a callback, and the run's end with its usage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from soma.cli.api import Event

Decide = Callable[[dict[str, Any]], None]
"""Asked with the pending call (`approval_id`, `name`, `args`) and decides it."""
TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})
MAX_OUTPUT_CHARS = 2_000


class Transcript:
    """Renders the events of one run in order; `finished` once its terminal event came."""

    def __init__(self, console: Console, decide: Decide | None = None) -> None:
        self._console = console
        self._decide = decide
        self._text = ""
        self._live: Live | None = None
        self._calls: dict[str, dict[str, Any]] = {}
        self._streamed = False
        self.finished: str | None = None

    def show(self, event: Event) -> None:
        data = event.data
        if event.type == "message.delta":
            self._delta(str(data.get("text", "")))
        elif event.type == "tool.call":
            self._flush()
            self._calls[str(data.get("id"))] = {**data, "seen": time.monotonic()}
            args = orjson.dumps(data.get("args", {})).decode()
            self._line(f"⚙ tool {data.get('name')} {args}", "cyan")
        elif event.type == "tool.approval_required":
            self._flush()
            call = self._calls.get(str(data.get("id")), {})
            pending = {"args": call.get("args", {}), **data}
            if self._decide is None:
                self._line(f"⏸ {data.get('name')} waits for approval {data.get('approval_id')}")
            else:
                self._decide(pending)
        elif event.type == "tool.result":
            self._result(data)
        elif event.type == "message.completed":
            message = data.get("message") or {}
            if not self._streamed and message.get("content"):
                self._delta(str(message["content"]))
            self._flush()
        elif event.type in TERMINAL:
            self._end(event.type, data)

    def close(self) -> None:
        self._flush()

    def _delta(self, text: str) -> None:
        self._streamed = True
        self._text += text
        if self._live is None:
            self._live = Live(console=self._console, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(Markdown(self._text), refresh=True)

    def _flush(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._text = ""

    def _result(self, data: dict[str, Any]) -> None:
        self._flush()
        call = self._calls.get(str(data.get("id")), {})
        took = ""
        if "seen" in call:
            took = f" in {time.monotonic() - call['seen']:.1f} s"
        output = str(data.get("output", ""))
        if len(output) > MAX_OUTPUT_CHARS:
            output = output[:MAX_OUTPUT_CHARS] + " …"
        style = "green" if data.get("status") == "ok" else "red"
        self._line(f"↳ {call.get('name', 'tool')} {data.get('status')}{took}: {output}", style)

    def _end(self, kind: str, data: dict[str, Any]) -> None:
        self._flush()
        self.finished = kind
        if kind == "run.completed":
            usage = data.get("usage") or {}
            parts = [f"{k.replace('_tokens', '')} {v}" for k, v in usage.items() if v is not None]
            self._line("✓ done" + (f" ({', '.join(parts)} tokens)" if parts else ""), "dim")
        elif kind == "run.failed":
            error = data.get("error")
            detail = error.get("message", error) if isinstance(error, dict) else error
            self._line(f"✗ failed: {detail}", "red")
        else:
            self._line("■ cancelled", "yellow")

    def _line(self, text: str, style: str = "") -> None:
        self._console.print(Text(text, style=style))
