// Calls to the platform's APIs with the signed-in user's bearer token, and the live streams.
import { session } from "./session.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  const token = session.token();
  return token ? { Authorization: `Bearer ${token}`, ...extra } : extra;
}

export async function api(method, path, body) {
  const init = { method, headers: headers({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) session.expired();
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data || {});
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

// One server-sent-events block ("event: …\nid: …\ndata: …") as {event, id, data}.
function parseEvent(block) {
  const event = { event: "message", id: null, data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "event" || field === "id") event[field] = value;
  }
  return event.data ? { ...event, data: JSON.parse(event.data) } : null;
}

// EventSource cannot send an Authorization header, and a token in the URL would end up in
// access logs: read the stream with fetch() instead, and reconnect after a drop.
async function readStream(path, onEvent, signal, onOpen) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw new ApiError(response.status, {});
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (parsed) onEvent(parsed);
    }
  }
}

// Follows a stream until `signal` aborts; `onOpen` runs once each (re)connection is open, so
// the caller can re-read the current state (the streams do not replay what was missed).
export function follow(path, onEvent, signal, onOpen = () => {}) {
  (async () => {
    while (!signal.aborted) {
      try {
        await readStream(path, onEvent, signal, onOpen);
      } catch (error) {
        if (signal.aborted || (error instanceof ApiError && error.status < 500)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  })();
}
