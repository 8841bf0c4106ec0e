// A tool call as a card: its arguments, its result and how long it took, and Approve / Deny
// while it waits for a person.

import { ApiError, post } from "/console/api.js";
import { h, notify } from "/console/dom.js";

function pretty(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value ?? {}, null, 2);
}

export class ToolCard {
  constructor(name, args) {
    this.started = performance.now();
    this.state = h("span", { class: "state" }, "running");
    this.duration = h("span", { class: "duration" });
    this.approval = h("div", { class: "approval", hidden: true });
    this.output = h("pre", { class: "output" });
    this.resultBox = h("details", { class: "result", hidden: true }, h("summary", {}, "Result"), this.output);
    this.el = h("li", { class: "tool-card", "aria-label": `Tool call ${name}` },
      h("div", { class: "tool-head" }, h("strong", {}, `⚙ ${name}`), this.state, this.duration),
      h("details", { class: "args", open: true }, h("summary", {}, "Arguments"), h("pre", {}, pretty(args))),
      this.approval, this.resultBox);
  }

  setState(text, kind = "") {
    this.state.textContent = text;
    this.state.className = `state ${kind}`;
  }

  askApproval(approvalId, name) {
    this.setState("awaiting approval", "waiting");
    const decide = async (decision) => {
      for (const button of this.approval.querySelectorAll("button")) button.disabled = true;
      try {
        const decided = await post(`/v1/approvals/${encodeURIComponent(approvalId)}`, { decision });
        this.approval.replaceChildren(h("p", {}, `${decided.status} by ${decided.decided_by ?? "you"}`));
        this.setState(decided.status === "approved" ? "approved, running" : "denied", decided.status);
      } catch (error) {
        for (const button of this.approval.querySelectorAll("button")) button.disabled = false;
        notify(error instanceof ApiError ? `Could not ${decision}: ${error.detail}` : String(error));
      }
    };
    this.approval.hidden = false;
    this.approval.replaceChildren(
      h("p", {}, `${name} needs your approval to run.`),
      h("button", { type: "button", class: "approve", onclick: () => decide("approve") }, "Approve"),
      h("button", { type: "button", class: "deny", onclick: () => decide("deny") }, "Deny"));
    this.approval.querySelector("button.approve").focus();
  }

  setResult(status, output, live = true) {
    this.setState(status, status === "ok" ? "ok" : "failed");
    if (live) this.duration.textContent = `${((performance.now() - this.started) / 1000).toFixed(1)} s`;
    this.output.textContent = output ?? "";
    this.resultBox.hidden = false;
    this.resultBox.open = true;
    if (!this.approval.querySelector("button")) return;
    this.approval.hidden = true;
  }
}
