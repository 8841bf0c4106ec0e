// Agents: list, create and edit (instructions, model, tools, approvals, memory), delete.

import { del, get, items, patch, post } from "/console/api.js";
import { field, h, notify } from "/console/dom.js";

const names = (text) => text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

export async function agentsView(main) {
  const agents = await items("/v1/agents");
  let catalog = [];
  try {
    catalog = (await get("/v1/tools")).items;
  } catch { /* no tools service in this deployment: names can still be typed */ }
  const table = h("table", {},
    h("caption", {}, "Agents of this tenant"),
    h("thead", {}, h("tr", {}, ["Name", "Model", "Tools", "Memory", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, agents.map((agent) => h("tr", {},
      h("th", { scope: "row" }, agent.name), h("td", {}, agent.model),
      h("td", {}, agent.tools.join(", ")), h("td", {}, agent.memory ? "on" : "off"),
      h("td", {}, h("button", { type: "button", onclick: () => show(agent) }, `Edit ${agent.name}`))))));
  const editor = h("section", { class: "editor", "aria-label": "Agent editor" });
  main.append(h("h2", {}, "Agents"), h("button", { type: "button", onclick: () => show(null) }, "New agent"), table, editor);

  function show(agent) {
    const name = h("input", { name: "name", required: true, value: agent?.name ?? "", maxlength: 64 });
    const instructions = h("textarea", { name: "instructions", rows: 6, value: agent?.instructions ?? "" });
    const model = h("input", { name: "model", value: agent?.model ?? "", placeholder: "the default model" });
    const tools = h("input", { name: "tools", value: (agent?.tools ?? []).join(", "), list: "tool-names" });
    const approval = h("input", { name: "require_approval", value: (agent?.require_approval ?? []).join(", ") });
    const memory = h("input", { type: "checkbox", name: "memory", id: "agent-memory", checked: Boolean(agent?.memory) });
    const known = h("datalist", { id: "tool-names" }, catalog.map((t) => h("option", { value: t.name }, t.description)));
    const save = async (event) => {
      event.preventDefault();
      const body = {
        name: name.value.trim(), instructions: instructions.value, tools: names(tools.value),
        require_approval: names(approval.value), memory: memory.checked,
      };
      if (model.value.trim()) body.model = model.value.trim();
      else if (agent) body.model = null;
      try {
        if (agent) await patch(`/v1/agents/${encodeURIComponent(agent.id)}`, body);
        else await post("/v1/agents", body);
        notify(`Saved agent ${body.name}.`, "info");
        location.hash = "#/agents";
        dispatchEvent(new HashChangeEvent("hashchange"));
      } catch (error) {
        notify(`Could not save: ${error.detail ?? error}`);
      }
    };
    const remove = async () => {
      if (!confirm(`Delete agent ${agent.name}?`)) return;
      try {
        await del(`/v1/agents/${encodeURIComponent(agent.id)}`);
        dispatchEvent(new HashChangeEvent("hashchange"));
      } catch (error) {
        notify(`Could not delete: ${error.detail ?? error}`);
      }
    };
    const available = catalog.length ? `Available: ${catalog.map((t) => t.name).join(", ")}` : "";
    editor.replaceChildren(h("form", { onsubmit: save },
      h("h3", {}, agent ? `Edit ${agent.name}` : "New agent"),
      field("Name", name), field("Instructions", instructions),
      field("Model", model, "A model declared in llm.models; empty for the default."),
      field("Tools", tools, `Names or patterns, comma separated. ${available}`), known,
      field("Tools that need approval", approval),
      h("div", { class: "field inline" }, memory, h("label", { for: "agent-memory" }, "Long-term memory")),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"),
        agent ? h("button", { type: "button", class: "delete", onclick: remove }, "Delete agent") : null)));
    name.focus();
  }
}
