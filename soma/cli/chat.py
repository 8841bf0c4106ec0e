"""`soma chat`: an interactive conversation in the terminal over one session.

Each line is sent with `?stream=true`; the reply streams in as Markdown, tool calls show as
they happen and approvals are answered inline. Ctrl-C during a reply cancels the run (and the
stream is followed to its `run.cancelled`); Ctrl-C or Ctrl-D at the prompt leaves.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from soma.cli.api import Api, ApiError
from soma.cli.output import Output
from soma.cli.tail import follow
from soma.cli.transcript import Transcript

PROMPT = "you> "
QUIT = frozenset({"/quit", "/exit", "/q"})


class Chat:
    """One terminal conversation in one session."""

    def __init__(self, api: Api, console: Console, session_id: str) -> None:
        self._api = api
        self._console = console
        self.session_id = session_id

    def send(self, content: str) -> str | None:
        """Sends one message and renders its run to the end; returns the terminal event."""
        transcript = Transcript(self._console, self._decide)
        events = self._api.stream(
            "POST", f"/v1/sessions/{self.session_id}/messages",
            params={"stream": "true"}, json={"content": content},
        )  # fmt: skip
        run_id = events.run_id or ""
        try:
            return follow(self._api, run_id, events, transcript.show)
        except KeyboardInterrupt:
            transcript.close()
            self._console.print("stopping the run…", style="yellow")
            self._cancel(run_id)
            return follow(self._api, run_id, None, transcript.show, events.last_id)
        finally:
            transcript.close()

    def _cancel(self, run_id: str) -> None:
        try:
            self._api.post(f"/v1/runs/{run_id}/cancel")
        except ApiError as exc:
            if exc.status != 409:  # 409: it had already finished
                raise

    def _decide(self, pending: dict[str, Any]) -> None:
        args = orjson.dumps(pending.get("args", {})).decode()
        question = f"approve {pending.get('name')} {args}? [y/N] "
        answer = self._console.input(Text(question, style="bold yellow")).strip().lower()
        decision = "approve" if answer in {"y", "yes"} else "deny"
        try:
            decided = self._api.post(
                f"/v1/approvals/{pending['approval_id']}", {"decision": decision}
            )
        except ApiError as exc:
            self._console.print(f"could not {decision}: {exc.detail}", style="red", markup=False)
            return
        self._console.print(f"{decided['status']}", style="dim")


def open_session(api: Api, agent: str | None, session: str | None) -> tuple[str, str]:
    """The session to chat in (given, or a new one of `agent`) and its agent's name."""
    if session:
        found = api.get(f"/v1/sessions/{session}")
    else:
        found = api.post("/v1/sessions", {"agent": agent} if agent else {})
    name = api.get(f"/v1/agents/{found['agent_id']}")["name"]
    return str(found["id"]), str(name)


def chat(api: Api, out: Output, args: argparse.Namespace) -> int:
    console = out.console
    session_id, agent = open_session(api, args.agent, args.session)
    console.print(f"session {session_id} with agent {agent}", style="bold", markup=False)
    console.print("/quit leaves; Ctrl-C stops a reply", style="dim")
    conversation = Chat(api, console, session_id)
    while True:
        try:
            line = console.input(Text(PROMPT, style="bold")).strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return 0
        if line in QUIT:
            return 0
        if not line:
            continue
        try:
            conversation.send(line)
        except ApiError as exc:
            console.print(f"error {exc.status}: {exc.detail}", style="red", markup=False)
