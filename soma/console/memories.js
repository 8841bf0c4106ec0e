// The memory browser: search by meaning (or list the newest), delete.

import { del, get } from "/console/api.js";
import { field, h, notify, when } from "/console/dom.js";

export async function memoriesView(main) {
  const query = h("input", { type: "search", name: "query", placeholder: "what to look for" });
  const agent = h("input", { name: "agent", placeholder: "any agent" });
  const list = h("ul", { class: "memory-list", "aria-label": "Memories" });
  const search = async (event) => {
    event?.preventDefault();
    const found = await get("/v1/memories", { query: query.value.trim(), agent: agent.value.trim(), limit: 50 });
    if (!found.items.length) {
      list.replaceChildren(h("li", {}, "No memories found."));
      return;
    }
    list.replaceChildren(...found.items.map((memory) => h("li", { class: "memory" },
      h("p", {}, memory.content),
      h("small", {}, [memory.kind, memory.user && `user ${memory.user}`, (memory.tags ?? []).join(", "),
        when(memory.created_at), memory.score != null && `score ${memory.score.toFixed(2)}`]
        .filter(Boolean).join(" · ")),
      h("button", { type: "button", class: "delete", "aria-label": `Delete memory: ${memory.content.slice(0, 40)}`,
        onclick: async () => {
          try {
            await del(`/v1/memories/${encodeURIComponent(memory.id)}`);
            await search();
          } catch (error) {
            notify(`Could not delete: ${error.detail ?? error}`);
          }
        } }, "Delete"))));
  };
  main.append(h("h2", {}, "Memories"),
    h("form", { class: "search", role: "search", onsubmit: search },
      field("Search", query), field("Agent", agent), h("button", { type: "submit" }, "Search")),
    list);
  await search();
}
