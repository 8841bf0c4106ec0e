"""The web console in Debian's Chromium (driven by Playwright) against the real process and
the scripted upstream: sign in, agents, sessions, a streamed Markdown reply, a tool call
approved from its card, a run stopped, a stream resumed across a server restart, uploads, the
memory browser, a new API key; no console errors, only the public API, screenshots kept in
`test-artifacts/console/`. A missing browser is a failure, never a skip.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from soma.gateway.console import console_files
from soma.gateway.middleware.security import CONSOLE_CSP
from tests.e2e.platform import ROOT, Platform, launch
from tests.e2e.stacks import SLOW_CHUNKS, SLOW_DELAY_S, Upstream, model_env, start_upstream

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "console"
PHONE = {"width": 390, "height": 844}
OUTAGE = re.compile(
    r"Failed to load resource: (net::ERR_CONNECTION_REFUSED|the server responded with a status "
    r"of 503)"
)


class Console:
    """One running platform and what the browser did against it."""

    def __init__(self, tmp_path: Path, upstreams: list[Upstream]) -> None:
        self.tmp_path = tmp_path
        self.env = model_env({"tooly": upstreams[0], "slowpoke": upstreams[1]}) | {
            "SOMA_LLM__DEFAULT_MODEL": "tooly"
        }
        self.platform = self.start()
        self.port = self.platform.base_url.rsplit(":", 1)[1]
        self.key = (tmp_path / "data" / "admin.key").read_text().strip()

    def start(self) -> Platform:
        platform = launch(self.tmp_path, self.env)
        platform.wait_healthy()
        return platform

    def restart(self) -> None:
        """Stops the server and starts it again on the same port and data."""
        assert self.platform.terminate() == 0
        base_url = self.platform.base_url
        self.platform = launch(self.tmp_path, {**self.env, "SOMA_HTTP__PORT": self.port})
        self.platform.base_url = base_url
        self.platform.wait_healthy()

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.platform.base_url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    upstreams = [
        start_upstream("--tools"),
        start_upstream("--chunks", str(SLOW_CHUNKS), "--delay", str(SLOW_DELAY_S)),
    ]
    running = Console(tmp_path_factory.mktemp("console"), upstreams)
    try:
        yield running
    finally:
        if running.platform.process.poll() is None:
            running.platform.terminate()
        for upstream in upstreams:
            upstream.process.terminate()
            upstream.process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is required: scripts/system-deps.sh test"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


class Watched:
    """A page whose console errors, page errors and requests are recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[Request] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("request", lambda r: self.requests.append(r))
        page.on("dialog", lambda dialog: dialog.accept())


@pytest.fixture
def watched(
    browser: Browser, console: Console, request: pytest.FixtureRequest
) -> Iterator[Watched]:
    context = browser.new_context(base_url=console.platform.base_url)
    context.set_default_timeout(60_000)
    page = Watched(context.new_page())
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=ARTIFACTS / f"{request.node.name}-last.png", full_page=True)
    context.close()
    assert page.errors == [], page.errors
    assert_public_api_only(console, page.requests)


def assert_public_api_only(console: Console, requests: list[Request]) -> None:
    """Every request went to this server: the console's files or a route of the OpenAPI."""
    with console.api() as api:
        paths = api.get("/openapi.json").json()["paths"]
    routes = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in paths]
    files = set(console_files())
    for sent in requests:
        url = httpx.URL(sent.url)
        assert f"{url.scheme}://{url.host}:{url.port}" == console.platform.base_url, sent.url
        path = url.path
        if path == "/" or path.removeprefix("/console/") in files:
            continue
        assert any(r.match(path) for r in routes), f"not a public API route: {sent.method} {path}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="New session")).to_be_visible()


def new_agent(page: Page, name: str, tools: str = "", approval: str = "", model: str = "") -> None:
    page.get_by_role("link", name="Agents").click()
    page.get_by_role("button", name="New agent").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Instructions").fill("Answer briefly.")
    page.get_by_label("Model").fill(model)
    page.get_by_label("Tools", exact=True).fill(tools)
    page.get_by_label("Tools that need approval").fill(approval)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name=re.compile(f"^{name} "))).to_be_visible()


def new_session(page: Page, agent: str) -> None:
    page.get_by_role("link", name="Chat").click()
    page.get_by_label("Agent").select_option(agent)
    page.get_by_role("button", name="New session").click()
    expect(page.get_by_role("heading", name=f"Session · {agent}")).to_be_visible()


def say(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def status(page: Page) -> Any:
    return expect(page.locator(".run-status"))


def test_pages_and_assets_have_their_types_and_the_strict_policy(console: Console) -> None:
    files = console_files()
    assert {"index.html", "app.js", "console.css"} <= set(files)
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
             ".svg": "image/svg+xml"}  # fmt: skip
    # Public (no key), each with its content type and the console's CSP.
    for name in files:
        path = "/" if name == "index.html" else f"/console/{name}"
        answer = httpx.get(console.platform.base_url + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(types[Path(name).suffix]), path
        assert answer.headers["content-security-policy"] == CONSOLE_CSP.decode(), path
        assert answer.headers["x-content-type-options"] == "nosniff"
        # No third-party request can be written into the console: no absolute URL at all.
        assert not re.search(rb"https?://", files[name]) or name.endswith(".svg"), name
    index = files["index.html"].decode()
    assert re.findall(r"<script[^>]*>", index) == [
        '<script type="module" src="/console/app.js">'
    ], "one module script by URL, no inline script"
    assert "style=" not in index
    missing = httpx.get(console.platform.base_url + "/console/nope.js")
    assert missing.status_code == 404
    assert "default-src 'none'" in missing.headers["content-security-policy"]
    # The API itself still needs a key.
    assert httpx.get(console.platform.base_url + "/v1/agents").status_code == 401


def test_sign_in_chat_approve_a_tool_and_read_markdown(watched: Watched, console: Console) -> None:
    page = watched.page
    sign_in(page, console.key)
    assert page.evaluate("() => sessionStorage.length") == 1
    assert console.key not in page.url
    new_agent(page, "operator", tools="shell", approval="shell")
    # Edit it: the form shows what is stored, and a change is saved with PATCH.
    page.get_by_role("button", name="Edit operator").click()
    expect(page.get_by_label("Tools that need approval")).to_have_value("shell")
    page.get_by_label("Instructions").fill("Use the shell when asked.")
    page.get_by_label("Long-term memory").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name=re.compile("^operator .* on "))).to_be_visible()
    with console.api() as api:
        stored = api.get("/v1/agents/operator").json()
    assert stored["instructions"] == "Use the shell when asked." and stored["memory"] is True
    new_session(page, "operator")
    say(page, 'call [["shell", {"command": "echo from-the-browser"}]]')
    card = page.get_by_role("listitem", name="Tool call shell")
    expect(card.get_by_text('"command": "echo from-the-browser"')).to_be_visible()
    shot(page, "approval-asked")
    card.get_by_role("button", name="Approve").click()
    expect(card.locator(".output")).to_have_text("from-the-browser\n")
    expect(card.locator(".duration")).to_have_text(re.compile(r"^[0-9.]+ s$"))
    expect(page.get_by_text("results: from-the-browser")).to_be_visible()
    status(page).to_contain_text("completed · tokens: prompt")
    # A streamed reply, rendered as Markdown: bold and code, and a script tag stays text.
    say(page, "this is **strong** and `code` <script>alert(1)</script>")
    reply = page.locator(".message.assistant").last
    expect(reply.locator("strong")).to_have_text("strong")
    expect(reply.locator("code")).to_have_text("code")
    expect(reply).to_contain_text("<script>alert(1)</script>")
    assert page.locator(".transcript script").count() == 0
    shot(page, "chat")
    with console.api() as api:
        approvals = api.get("/v1/approvals").json()["items"]
    assert [a["status"] for a in approvals] == ["approved"]
    # The transcript comes back from the API after a reload (the key survives in the tab).
    page.reload()
    expect(page.get_by_text("results: from-the-browser")).to_be_visible()
    # Delete the session: gone from the list and from the API.
    session_id = page.url.rsplit("/", 1)[1]
    page.get_by_role("button", name=re.compile(f"^Delete Session {session_id[-6:]}")).click()
    expect(page.get_by_role("link", name=re.compile(session_id[-6:]))).to_have_count(0)
    with console.api() as api:
        assert api.get(f"/v1/sessions/{session_id}").status_code == 404


def test_stop_a_run_and_resume_a_stream_after_the_server_restarts(
    watched: Watched, console: Console
) -> None:
    page = watched.page
    sign_in(page, console.key)
    new_agent(page, "slowpoke", model="slowpoke")
    new_session(page, "slowpoke")
    say(page, "stop me please")
    expect(page.locator(".message.assistant").last).to_contain_text("You said")
    page.get_by_role("button", name="Stop").click()
    status(page).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    shot(page, "stopped")
    # The connection drops mid-reply (the server restarts): the console resumes the stream
    # with Last-Event-ID and the run's next attempt completes in the same bubble.
    say(page, "survive a restart")
    reply = page.locator(".message.assistant").last
    expect(reply).to_contain_text("You said")
    console.restart()
    status(page).to_contain_text("completed", timeout=120_000)
    expect(reply.locator(".body")).to_have_text("You said: survive a restart")
    # What the browser logged while the server was away (refused, then 503 while starting).
    watched.errors = [e for e in watched.errors if not OUTAGE.match(e)]
    resumed = [r for r in watched.requests if r.url.endswith("/events")]
    assert resumed and all(r.headers.get("last-event-id") for r in resumed)
    shot(page, "resumed")


def test_admin_creates_a_key_shown_once_and_phone_layout(
    watched: Watched, console: Console
) -> None:
    page = watched.page
    sign_in(page, console.key)
    page.get_by_role("link", name="Admin").click()
    page.get_by_label("New tenant").fill("acme")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.get_by_role("row", name=re.compile("^acme "))).to_be_visible()
    page.get_by_label("New key name").fill("from-the-console")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New API key")
    key = secret.input_value()
    assert key.startswith("soma_")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    shot(page, "new-key")
    with httpx.Client(base_url=console.platform.base_url) as client:
        answer = client.get("/v1/agents", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_label("New API key")).to_have_count(0)
    # Phone-sized: nothing wider than the screen; every control still reachable.
    page.set_viewport_size(PHONE)
    page.get_by_role("link", name="Chat").click()
    expect(page.get_by_role("button", name="New session")).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "phone")
    # Keyboard: the skip link comes before the navigation and leads to the content.
    page.get_by_role("link", name="Chat").focus()
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    # Sign out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("() => sessionStorage.length") == 0
    expect(page.get_by_label("API key")).to_be_visible()


def test_upload_by_drop_and_the_memory_browser(watched: Watched, console: Console) -> None:
    page = watched.page
    sign_in(page, console.key)
    new_session(page, "assistant")
    transfer = page.evaluate_handle(
        "() => { const t = new DataTransfer();"
        " t.items.add(new File(['dropped text'], 'note.txt', {type: 'text/plain'})); return t; }"
    )
    page.dispatch_event("form.composer", "drop", {"dataTransfer": transfer})
    expect(page.get_by_role("list", name="Attachments")).to_contain_text("📎 note.txt")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    say(page, "here is a file")
    expect(page.locator(".message.user").last).to_contain_text("note.txt")
    status(page).to_contain_text("completed")
    session_id = page.url.rsplit("/", 1)[1]
    with console.api() as api:
        messages = api.get(f"/v1/sessions/{session_id}/messages").json()["items"]
        attached = messages[0]["metadata"]["attachments"]
        assert len(attached) == 1
        upload = api.get(f"/v1/uploads/{attached[0]}")
        assert upload.status_code == 200, upload.text
        content = api.get(f"/v1/uploads/{attached[0]}/content")
        assert content.content == b"dropped text"
        for text in ("The user's cat is called Miso", "The user prefers tea"):
            created = api.post("/v1/memories", json={"content": text})
            assert created.status_code in (200, 201), created.text
    page.get_by_role("link", name="Memories").click()
    page.get_by_label("Search").fill("cat")
    page.get_by_role("button", name="Search").click()
    memory = page.locator(".memory", has_text="Miso")
    expect(memory).to_be_visible()
    shot(page, "memories")
    memory.get_by_role("button", name=re.compile("^Delete memory")).click()
    expect(page.locator(".memory", has_text="Miso")).to_have_count(0)
    with console.api() as api:
        # (The operator agent, with memory on, keeps memories of its own conversations.)
        left = api.get("/v1/memories", params={"agent": "assistant"}).json()["items"]
    assert [m["content"] for m in left] == ["The user prefers tea"]
