// A small Markdown renderer that builds DOM nodes: text only ever becomes text nodes, links
// only http(s) and mailto, so a model's reply cannot inject markup or script (sanitized by
// construction; the page's Trusted Types policy forbids HTML string sinks anyway).

import { h } from "/console/dom.js";

const SAFE_URL = /^(https?:|mailto:)/i;
const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_|\[([^\]]+)\]\(([^)\s]+)\)/;

export function inline(text) {
  const nodes = [];
  let rest = text;
  while (rest) {
    const match = INLINE.exec(rest);
    if (!match) {
      nodes.push(rest);
      break;
    }
    if (match.index) nodes.push(rest.slice(0, match.index));
    const [whole, , code, strong, strong2, em, em2, label, url] = match;
    if (code !== undefined) nodes.push(h("code", {}, code.trim()));
    else if (strong !== undefined || strong2 !== undefined) nodes.push(h("strong", {}, inline(strong ?? strong2)));
    else if (em !== undefined || em2 !== undefined) nodes.push(h("em", {}, inline(em ?? em2)));
    else if (SAFE_URL.test(url)) nodes.push(h("a", { href: url, rel: "noopener noreferrer nofollow", target: "_blank" }, inline(label)));
    else nodes.push(whole);
    rest = rest.slice(match.index + whole.length);
  }
  return nodes;
}

function list(lines, ordered) {
  const items = lines.map((line) => h("li", {}, inline(line.replace(/^\s*([-*+]|\d+[.)])\s+/, ""))));
  return h(ordered ? "ol" : "ul", {}, items);
}

export function render(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```|~~~)\s*([\w+-]*)/.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      const code = h("code", fence[2] ? { "data-lang": fence[2] } : {}, body.join("\n"));
      fragment.append(h("pre", {}, code));
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      fragment.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
      i += 1;
      continue;
    }
    const kinds = [[/^\s*[-*+]\s+/, false], [/^\s*\d+[.)]\s+/, true]];
    const kind = kinds.find(([pattern]) => pattern.test(line));
    if (kind) {
      const items = [];
      while (i < lines.length && kind[0].test(lines[i])) items.push(lines[i++]);
      fragment.append(list(items, kind[1]));
      continue;
    }
    if (/^\s*>/.test(line)) {
      const quoted = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
      fragment.append(h("blockquote", {}, render(quoted.join("\n"))));
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const paragraph = [lines[i++]];
    while (i < lines.length && lines[i].trim() && !/^(\s*(```|~~~|>)|#{1,6}\s|\s*([-*+]|\d+[.)])\s+)/.test(lines[i])) {
      paragraph.push(lines[i++]);
    }
    const parts = [];
    paragraph.forEach((part, index) => parts.push(...(index ? [h("br")] : []), ...inline(part)));
    fragment.append(h("p", {}, parts));
  }
  return fragment;
}
