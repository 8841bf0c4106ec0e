// Admin keys only: tenants (platform admins) and API keys; a new key's secret is shown once.

import { ApiError, del, items, post } from "/console/api.js";
import { field, h, notify, when } from "/console/dom.js";

export async function adminView(main) {
  let tenants = [];
  try {
    tenants = await items("/v1/admin/tenants");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 403)) throw error;
  }
  const keysBox = h("section", { "aria-label": "API keys" });
  const secretBox = h("div", { class: "secret", role: "region", "aria-label": "New key", hidden: true });
  const tenantSelect = h("select", { name: "tenant", onchange: () => showKeys() },
    h("option", { value: "" }, "my tenant"), tenants.map((t) => h("option", { value: t.id }, t.name)));

  if (tenants.length) {
    const name = h("input", { name: "tenant-name", required: true });
    main.append(h("h2", {}, "Tenants"),
      h("table", {}, h("caption", {}, "Tenants"),
        h("thead", {}, h("tr", {}, ["Name", "Id", "Created"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, tenants.map((t) => h("tr", {}, h("th", { scope: "row" }, t.name), h("td", {}, t.id), h("td", {}, when(t.created_at)))))),
      h("form", { class: "inline-form", onsubmit: async (event) => {
        event.preventDefault();
        try {
          await post("/v1/admin/tenants", { name: name.value.trim() });
          dispatchEvent(new HashChangeEvent("hashchange"));
        } catch (error) { notify(`Could not create the tenant: ${error.detail ?? error}`); }
      } }, field("New tenant", name), h("button", { type: "submit" }, "Create tenant")));
  }
  main.append(h("h2", {}, "API keys"), tenants.length ? field("Tenant", tenantSelect) : null, secretBox, keysBox);

  async function showKeys() {
    const tenant = tenantSelect.value || undefined;
    const keys = await items("/v1/admin/keys", { tenant_id: tenant });
    const name = h("input", { name: "key-name", required: true });
    const chat = h("input", { type: "checkbox", name: "scope-chat", checked: true, id: "scope-chat" });
    const admin = h("input", { type: "checkbox", name: "scope-admin", id: "scope-admin" });
    keysBox.replaceChildren(
      h("table", {}, h("caption", {}, "Keys"),
        h("thead", {}, h("tr", {}, ["Name", "Prefix", "Scopes", "Created", "Revoked", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, keys.map((key) => h("tr", {},
          h("th", { scope: "row" }, key.name), h("td", {}, key.prefix), h("td", {}, key.scopes.join(", ")),
          h("td", {}, when(key.created_at)), h("td", {}, when(key.revoked_at)),
          h("td", {}, key.revoked_at ? "" : h("button", { type: "button", class: "delete", onclick: async () => {
            if (!confirm(`Revoke key ${key.name}?`)) return;
            try {
              await del(`/v1/admin/keys/${encodeURIComponent(key.id)}`, { tenant_id: tenant });
              await showKeys();
            } catch (error) { notify(`Could not revoke: ${error.detail ?? error}`); }
          } }, `Revoke ${key.name}`)))))),
      h("form", { class: "inline-form", onsubmit: async (event) => {
        event.preventDefault();
        const scopes = [chat.checked && "chat", admin.checked && "admin"].filter(Boolean);
        try {
          const created = await post("/v1/admin/keys", { name: name.value.trim(), scopes, tenant_id: tenant });
          showSecret(created);
          await showKeys();
        } catch (error) { notify(`Could not create the key: ${error.detail ?? error}`); }
      } }, field("New key name", name),
      h("fieldset", {}, h("legend", {}, "Scopes"),
        chat, h("label", { for: "scope-chat" }, "chat"), admin, h("label", { for: "scope-admin" }, "admin")),
      h("button", { type: "submit" }, "Create key")));
  }

  function showSecret(created) {
    const secret = h("input", { readonly: true, value: created.key, class: "secret-value", "aria-label": "New API key" });
    const copied = h("span", { role: "status" });
    secretBox.hidden = false;
    secretBox.replaceChildren(
      h("p", {}, `Key "${created.name}" created. Copy it now: it is shown this once.`), secret,
      h("button", { type: "button", onclick: async () => {
        try {
          await navigator.clipboard.writeText(created.key);
          copied.textContent = "Copied.";
        } catch {
          secret.select();
          copied.textContent = "Select and copy it by hand.";
        }
      } }, "Copy"),
      h("button", { type: "button", class: "link", onclick: () => { secretBox.hidden = true; secretBox.replaceChildren(); } }, "Done"),
      copied);
    secret.focus();
    secret.select();
  }

  await showKeys();
}
