// A run's server-sent events over fetch (EventSource cannot send the Authorization header),
// resumed with Last-Event-ID after a network drop.

import { ApiError, stream } from "/console/api.js";

export const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled"]);
const MAX_RETRIES = 30;

async function* parse(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") event.data.push(text);
        else if (name === "id") event.id = Number(text);
        else if (name === "event") event.event = text;
      }
      if (event.data.length) yield { ...event, data: JSON.parse(event.data.join("\n")) };
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Feeds events to `onEvent` until the run's terminal event and returns its type. `first` is
// an already open response (the POST with ?stream=true); later ones resume after the last id.
export async function followRun(runId, first, onEvent, { signal, onReconnect } = {}) {
  let response = first;
  let lastId = null;
  let failures = 0;
  for (;;) {
    try {
      response ??= await stream("GET", `/v1/runs/${encodeURIComponent(runId)}/events`, undefined, lastId, signal);
      for await (const event of parse(response.body)) {
        failures = 0;
        if (event.id !== null) lastId = event.id;
        onEvent(event);
        if (TERMINAL.has(event.event)) return event.event;
      }
    } catch (error) {
      if (signal?.aborted || (error instanceof ApiError && error.status < 500)) throw error;
    }
    response = null;
    failures += 1;
    if (failures > MAX_RETRIES) throw new Error("the run's event stream could not be resumed");
    onReconnect?.(lastId);
    await sleep(Math.min(500 * failures, 5000));
  }
}
