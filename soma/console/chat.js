// Sessions and the chat: list, create and delete sessions; send messages (with dropped files
// as attachments) and render the run as it streams; stop it; resume after a network drop.

import { ApiError, call, del, get, items, post, stream } from "/console/api.js";
import { clear, field, h, notify, when } from "/console/dom.js";
import { followRun } from "/console/events.js";
import { render } from "/console/markdown.js";
import { ToolCard } from "/console/toolcard.js";

export async function chatView(main, sessionId) {
  const view = new ChatView(main);
  await view.load(sessionId);
  return () => view.leave();
}

class ChatView {
  constructor(main) {
    this.agents = [];
    this.session = null;
    this.run = null;
    this.attachments = [];
    this.uploading = 0;
    this.agentSelect = h("select", { name: "agent" });
    this.list = h("ul", { class: "session-list" });
    this.transcript = h("ol", { class: "transcript", "aria-label": "Transcript" });
    this.status = h("p", { class: "run-status", role: "status", "aria-live": "polite" });
    this.input = h("textarea", { name: "content", rows: 3, required: true, onkeydown: (e) => this.onKey(e) });
    this.files = h("input", { type: "file", multiple: true, onchange: () => this.upload([...this.files.files]) });
    this.chips = h("ul", { class: "attachments", "aria-label": "Attachments" });
    this.sendButton = h("button", { type: "submit" }, "Send");
    this.stopButton = h("button", { type: "button", class: "stop", disabled: true, onclick: () => this.stop() }, "Stop");
    this.composer = h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); this.send(); } },
      field("Message", this.input, "Enter sends, Shift+Enter starts a new line; drop files here to attach them."),
      field("Attach files", this.files), this.chips,
      h("div", { class: "actions" }, this.sendButton, this.stopButton));
    for (const type of ["dragenter", "dragover"]) {
      this.composer.addEventListener(type, (e) => { e.preventDefault(); this.composer.classList.add("dropping"); });
    }
    this.composer.addEventListener("dragleave", () => this.composer.classList.remove("dropping"));
    this.composer.addEventListener("drop", (e) => {
      e.preventDefault();
      this.composer.classList.remove("dropping");
      this.upload([...(e.dataTransfer?.files ?? [])]);
    });
    this.conversation = h("section", { class: "conversation", "aria-label": "Conversation", hidden: true },
      h("h2", { class: "session-title" }), this.status, this.transcript, this.composer);
    const create = h("form", { class: "new-session", onsubmit: (e) => { e.preventDefault(); this.create(); } },
      field("Agent", this.agentSelect), h("button", { type: "submit" }, "New session"));
    main.append(h("div", { class: "chat" },
      h("aside", { class: "sessions", "aria-label": "Sessions" }, h("h2", {}, "Sessions"), create, this.list),
      this.conversation));
  }

  async load(sessionId) {
    this.agents = await items("/v1/agents");
    this.agentSelect.replaceChildren(...this.agents.map((a) => h("option", { value: a.name }, a.name)));
    await this.refresh();
    if (sessionId) await this.open(sessionId);
  }

  leave() {
    this.run?.controller.abort();
  }

  agentName(id) {
    return this.agents.find((a) => a.id === id)?.name ?? id;
  }

  async refresh() {
    const sessions = await items("/v1/sessions", {}, 200);
    this.list.replaceChildren(...sessions.map((s) => {
      const label = s.title || `Session ${s.id.slice(-6)}`;
      return h("li", { class: s.id === this.session?.id ? "current" : "" },
        h("a", { href: `#/chat/${s.id}`, "aria-current": s.id === this.session?.id ? "page" : false },
          h("span", {}, label), h("small", {}, `${this.agentName(s.agent_id)} · ${when(s.created_at)}`)),
        h("button", { type: "button", class: "delete", "aria-label": `Delete ${label}`,
          onclick: () => this.remove(s) }, "Delete"));
    }));
  }

  async create() {
    const session = await post("/v1/sessions", { agent: this.agentSelect.value });
    location.hash = `#/chat/${session.id}`;
  }

  async remove(session) {
    if (!confirm(`Delete this session and its messages?`)) return;
    await del(`/v1/sessions/${encodeURIComponent(session.id)}`);
    if (this.session?.id === session.id) location.hash = "#/chat";
    else await this.refresh();
  }

  async open(sessionId) {
    this.session = await get(`/v1/sessions/${encodeURIComponent(sessionId)}`);
    this.conversation.hidden = false;
    this.conversation.querySelector(".session-title").textContent =
      `${this.session.title || "Session"} · ${this.agentName(this.session.agent_id)}`;
    await this.refresh();
    const messages = await items(`/v1/sessions/${encodeURIComponent(sessionId)}/messages`, {}, 1000);
    clear(this.transcript);
    const cards = new Map();
    for (const message of messages) {
      if (message.role === "tool") {
        cards.get(message.tool_call_id)?.setResult("ok", message.content, false);
        continue;
      }
      if (message.content) this.bubble(message.role, message.content);
      for (const tool of message.tool_calls ?? []) {
        const card = new ToolCard(tool.function?.name ?? tool.name, tool.function?.arguments ?? tool.args);
        card.setState("called");
        cards.set(tool.id, card);
        this.transcript.append(card.el);
      }
    }
    this.input.focus();
  }

  bubble(role, text) {
    const body = h("div", { class: "body" });
    body.append(role === "assistant" ? render(text) : text);
    const item = h("li", { class: `message ${role}` }, h("span", { class: "role" }, role === "user" ? "You" : "Agent"), body);
    this.transcript.append(item);
    item.scrollIntoView({ block: "end" });
    return body;
  }

  onKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.composer.requestSubmit();
    }
  }

  async upload(files) {
    // Send waits for the uploads: a message goes with every file dropped before it.
    this.uploading += files.length;
    this.setRunning(Boolean(this.run));
    for (const file of files) {
      const form = new FormData();
      form.append("file", file, file.name);
      if (this.session) form.append("session_id", this.session.id);
      const chip = h("li", {}, `${file.name} (uploading…)`);
      this.chips.append(chip);
      try {
        const uploaded = await call("POST", "/v1/uploads", form);
        const entry = { id: uploaded.id, name: file.name };
        this.attachments.push(entry);
        chip.replaceChildren(`📎 ${file.name}`, h("button", { type: "button", class: "link",
          "aria-label": `Remove ${file.name}`, onclick: () => {
            this.attachments = this.attachments.filter((a) => a !== entry);
            chip.remove();
          } }, "Remove"));
      } catch (error) {
        chip.remove();
        notify(`Upload of ${file.name} failed: ${error instanceof ApiError ? error.detail : error}`);
      } finally {
        this.uploading -= 1;
        this.setRunning(Boolean(this.run));
      }
    }
    this.files.value = "";
  }

  setRunning(running) {
    this.sendButton.disabled = running || this.uploading > 0;
    this.stopButton.disabled = !running;
  }

  async send() {
    const content = this.input.value.trim();
    if (!content || !this.session || this.run || this.uploading) return;
    const body = { content };
    if (this.attachments.length) body.attachments = this.attachments.map((a) => a.id);
    const mine = this.bubble("user", content);
    for (const a of this.attachments) mine.append(h("span", { class: "attached" }, `📎 ${a.name}`));
    this.input.value = "";
    this.attachments = [];
    clear(this.chips);
    const controller = new AbortController();
    this.run = { id: null, controller, text: "", body: null, cards: new Map() };
    this.setRunning(true);
    try {
      const path = `/v1/sessions/${encodeURIComponent(this.session.id)}/messages?stream=true`;
      const response = await stream("POST", path, body, null, controller.signal);
      this.run.id = response.headers.get("X-Run-ID");
      this.setStatus("queued");
      await followRun(this.run.id, response, (event) => this.onEvent(event), {
        signal: controller.signal,
        onReconnect: () => this.setStatus("connection lost, resuming…"),
      });
    } catch (error) {
      if (!controller.signal.aborted) notify(error instanceof ApiError ? error.detail : String(error));
    } finally {
      this.run = null;
      this.setRunning(false);
    }
  }

  async stop() {
    if (!this.run?.id) return;
    this.stopButton.disabled = true;
    this.setStatus("stopping…");
    try {
      await post(`/v1/runs/${encodeURIComponent(this.run.id)}/cancel`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) notify(String(error.detail ?? error));
    }
  }

  setStatus(text, usage) {
    const parts = [`Run ${this.run?.id ?? ""}: ${text}`];
    if (usage) {
      const counts = Object.entries(usage).filter(([, v]) => v != null).map(([k, v]) => `${k.replace("_tokens", "")} ${v}`);
      if (counts.length) parts.push(`tokens: ${counts.join(", ")}`);
    }
    this.status.textContent = parts.join(" · ");
  }

  onEvent({ event, data }) {
    const run = this.run;
    if (!run) return;
    if (event === "run.started") {
      // A later attempt (after a restart) streams the reply again from its start.
      if (data.attempt > 1 && run.body) run.body.replaceChildren();
      run.text = "";
      this.setStatus(data.attempt > 1 ? `running (attempt ${data.attempt})` : "running");
    }
    else if (event === "message.delta") {
      run.text += data.text ?? "";
      run.body ??= this.bubble("assistant", "");
      run.body.replaceChildren(render(run.text));
      run.body.parentElement.scrollIntoView({ block: "end" });
    } else if (event === "tool.call") {
      run.body = null;
      run.text = "";
      const card = new ToolCard(data.name, data.args);
      run.cards.set(data.id, card);
      this.transcript.append(card.el);
      this.setStatus(`calling ${data.name}`);
    } else if (event === "tool.approval_required") {
      run.cards.get(data.id)?.askApproval(data.approval_id, data.name);
      this.setStatus("awaiting approval");
    } else if (event === "tool.result") {
      run.cards.get(data.id)?.setResult(data.status, data.output);
      this.setStatus("running");
    } else if (event === "message.completed") {
      const content = data.message?.content ?? run.text;
      if (content) (run.body ??= this.bubble("assistant", "")).replaceChildren(render(content));
    } else if (event === "run.completed") this.setStatus("completed", data.usage);
    else if (event === "run.failed") this.setStatus(`failed: ${data.error?.message ?? JSON.stringify(data.error)}`);
    else if (event === "run.cancelled") this.setStatus("cancelled");
  }
}
