// The public HTTP API, same origin only; the key lives in sessionStorage and in the
// Authorization header, never in a URL, a cookie or a log.

const KEY = "soma.apiKey";
let onUnauthorized = () => {};

export const credentials = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
  onUnauthorized(handler) { onUnauthorized = handler; },
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

function init(method, body, headers = {}, signal = undefined) {
  const all = { Authorization: `Bearer ${credentials.key}`, ...headers };
  const request = { method, headers: all, signal, cache: "no-store" };
  if (body instanceof FormData) request.body = body;
  else if (body !== undefined) {
    request.body = JSON.stringify(body);
    all["Content-Type"] = "application/json";
  }
  return request;
}

async function checked(response) {
  if (response.ok) return response;
  let detail = response.statusText;
  try {
    const problem = await response.json();
    detail = problem.detail || problem.title || detail;
  } catch { /* not problem+json: keep the status text */ }
  if (response.status === 401) onUnauthorized(detail);
  throw new ApiError(response.status, detail);
}

export async function call(method, path, body, options = {}) {
  const response = await checked(await fetch(path, init(method, body, options.headers, options.signal)));
  return response.status === 204 ? null : response.json();
}

export const get = (path, params = {}) => call("GET", withQuery(path, params));
export const post = (path, body) => call("POST", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path, params = {}) => call("DELETE", withQuery(path, params));

// An SSE response: the answer of `POST ...?stream=true` or of `GET /v1/runs/{id}/events`.
export async function stream(method, path, body, lastEventId, signal) {
  const headers = lastEventId == null ? {} : { "Last-Event-ID": String(lastEventId) };
  return checked(await fetch(path, init(method, body, headers, signal)));
}

export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// Every item of a paginated list, up to `limit`.
export async function items(path, params = {}, limit = 500) {
  const found = [];
  let cursor;
  do {
    const page = await get(path, { ...params, limit: Math.min(200, limit - found.length), cursor });
    found.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && found.length < limit);
  return found;
}
