// The console's entry: sign in with an API key (kept in sessionStorage only), then a view per
// location hash: #/chat[/SESSION], #/agents, #/memories, #/admin.

import { adminView } from "/console/admin.js";
import { agentsView } from "/console/agents.js";
import { ApiError, credentials, get } from "/console/api.js";
import { chatView } from "/console/chat.js";
import { field, h, notify } from "/console/dom.js";
import { memoriesView } from "/console/memories.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const adminLink = nav.querySelector('[data-view="admin"]');
let leave = null;

function signInView(reason) {
  nav.hidden = true;
  const key = h("input", { type: "password", name: "api-key", autocomplete: "off", required: true, spellcheck: "false" });
  const submit = async (event) => {
    event.preventDefault();
    credentials.set(key.value.trim());
    key.value = "";
    try {
      await get("/v1/agents", { limit: 1 });
    } catch (error) {
      credentials.clear();
      notify(error instanceof ApiError ? `Sign-in failed: ${error.detail}` : String(error));
      return;
    }
    notify("");
    await route();
  };
  main.replaceChildren(h("form", { class: "sign-in", onsubmit: submit },
    h("h2", {}, "Sign in"),
    h("p", {}, "Paste an API key. It stays in this tab's session storage and is sent only to this server."),
    reason ? h("p", { class: "error" }, reason) : null,
    field("API key", key), h("button", { type: "submit" }, "Sign in")));
  key.focus();
}

async function isAdmin() {
  try {
    await get("/v1/admin/keys", { limit: 1 });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}

async function route() {
  leave?.();
  leave = null;
  if (!credentials.key) {
    signInView();
    return;
  }
  nav.hidden = false;
  const [view, id] = location.hash.replace(/^#\/?/, "").split("/");
  for (const link of nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", link.dataset.view === (view || "chat"));
  }
  // Each visit renders into its own box: a slower earlier visit ends up in a detached one.
  const box = h("div", { class: "view" });
  main.replaceChildren(box);
  try {
    adminLink.hidden = !(await isAdmin());
    if (view === "agents") await agentsView(box);
    else if (view === "memories") await memoriesView(box);
    else if (view === "admin") await adminView(box);
    else {
      const left = await chatView(box, id);
      if (box.isConnected) leave = left;
      else left();
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    notify(error instanceof ApiError ? error.detail : String(error));
  }
  main.focus({ preventScroll: true });
}

credentials.onUnauthorized((detail) => {
  credentials.clear();
  signInView(`Signed out: ${detail}`);
});
document.getElementById("sign-out").addEventListener("click", () => {
  credentials.clear();
  leave?.();
  location.hash = "";
  signInView();
});
// The skip link moves focus only: the location hash is the router's.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
addEventListener("hashchange", route);
route();
