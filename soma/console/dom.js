// Building DOM nodes from data: text is always a text node, never parsed as HTML.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "multiple"]);

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (PROPERTIES.has(name)) el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// A labelled form field: every input has a visible label.
let fieldCount = 0;
export function field(label, input, hint) {
  fieldCount += 1;
  input.id ||= `f${fieldCount}`;
  const parts = [h("label", { for: input.id }, label), input];
  if (hint) {
    const hintId = `${input.id}-hint`;
    input.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function notify(message, kind = "error") {
  const box = document.getElementById("notice");
  clear(box);
  if (!message) return;
  box.append(h("p", { class: kind }, message, " ",
    h("button", { type: "button", class: "link", onclick: () => clear(box) }, "Dismiss")));
}

export function when(date) {
  return date ? new Date(date).toLocaleString() : "";
}
