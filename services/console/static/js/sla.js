// Live SLA countdowns: the current timers read once, then kept up to date by the SLA service's
// stream of facts (started, warning, breached, paused, met, …). Between facts the countdown is
// just the deadline minus the clock, so nothing is polled.
import { duration, h } from "./dom.js";

const RUNNING = new Set(["running", "breached"]);
const SHOWN_METRICS = ["first_response", "resolution"];
let skewMs = 0; // server clock minus browser clock, from the last reading

function timerFrom(record) {
  return {
    metric: record.metric,
    status: record.status,
    deadline: record.deadline ? Date.parse(record.deadline) : null,
    breached: Boolean(record.breached) || record.status === "breached",
    warning: record.warning_threshold ?? null,
    paused: record.status === "paused",
    left: record.remaining_seconds ?? Math.max(0, record.target_seconds - record.elapsed_seconds),
  };
}

export class TimerBook {
  constructor() { this.tickets = new Map(); }

  has(ticket) { return this.tickets.has(ticket); }

  load(ticketSla) {
    skewMs = Date.parse(ticketSla.as_of) - Date.now();
    const timers = new Map(ticketSla.timers.map((t) => [t.metric, timerFrom(t)]));
    this.tickets.set(ticketSla.ticket_id, timers);
  }

  // One SLA fact from the stream (its CloudEvents type says which).
  apply(event) {
    const data = event.data.data;
    const timers = this.tickets.get(event.data.subject) || new Map();
    const previous = timers.get(data.metric);
    const kind = event.event.split(".")[2];
    const timer = timerFrom({ ...data, remaining_seconds: null });
    timer.breached = kind === "breached" || kind === "missed" || Boolean(previous?.breached && kind !== "met");
    timer.warning = kind === "warning" ? data.threshold : previous?.warning ?? null;
    timers.set(data.metric, timer);
    this.tickets.set(event.data.subject, timers);
  }

  // The timer a queue row shows: the first response while it runs, then the resolution.
  headline(ticket) {
    const timers = this.tickets.get(ticket);
    if (!timers) return null;
    const shown = SHOWN_METRICS.map((m) => timers.get(m)).filter(Boolean);
    return shown.find((t) => RUNNING.has(t.status)) || shown.find((t) => t.paused) || shown.at(-1) || null;
  }

  timers(ticket) { return [...(this.tickets.get(ticket)?.values() || [])]; }
}

export function slaState(timer, now = Date.now() + skewMs) {
  if (!timer) return { state: "none", text: "–" };
  const label = timer.metric === "first_response" ? "response" : timer.metric.replace("_", " ");
  if (RUNNING.has(timer.status) && timer.deadline !== null) {
    const left = (timer.deadline - now) / 1000;
    if (timer.breached || left <= 0) return { state: "breached", text: `${label} overdue ${duration(left)}` };
    return { state: timer.warning ? "warning" : "ok", text: `${label} ${duration(left)} left` };
  }
  if (timer.paused) return { state: "paused", text: `${label} paused, ${duration(timer.left)} left` };
  const missed = timer.breached || timer.status === "breached";
  return { state: missed ? "breached" : "stopped", text: `${label} ${missed ? "missed" : timer.status}` };
}

export function countdown(timer) {
  const node = h("span", { class: "sla", role: "timer" });
  paint(node, timer);
  return node;
}

export function paint(node, timer) {
  const { state, text } = slaState(timer);
  node.dataset.state = state;
  node.textContent = text;
}
