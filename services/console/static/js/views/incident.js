// One incident: its fields, the changes linked to it, the whole timeline (the incident's own
// entries, SLA timers, escalations and notifications), and the actions the signed-in role may
// take in its status.
import { follow, get, post } from "../api.js";
import { announce, field, formValues, h, problemText, when } from "../dom.js";
import { session } from "../session.js";
import { TimerBook, countdown, paint } from "../sla.js";
import { loadSla } from "./queue.js";

const OPEN = ["new", "assigned", "in_progress", "pending"];
const text = (name, label, required = true) => ({ name, label, required });
const STAFF = (incident) => session.isStaff() && incident;
const OWNER = (incident) => session.has("requester") && incident.requester === session.user().subject;

// name, label, endpoint, fields, in which statuses, and who may.
const ACTIONS = [
  ["assign", "Assign", "assignment", [text("group", "Group"), text("assignee", "Assignee", false)], OPEN, STAFF],
  ["start", "Start work", "start", [], ["assigned"], STAFF],
  ["hold", "Put on hold", "hold", [{ name: "reason", label: "Waiting for", options: ["awaiting_requester", "awaiting_vendor", "awaiting_change"] }, text("note", "Note", false)], ["assigned", "in_progress"], STAFF],
  ["resume", "Resume", "resume", [], ["pending"], STAFF],
  ["escalate", "Escalate to next tier", "escalation", [text("to_group", "To group"), text("reason", "Reason")], OPEN, STAFF],
  ["reply", "Reply", "replies", [{ ...text("body", "Public reply"), area: true }], [...OPEN, "resolved"], (i) => STAFF(i) || OWNER(i)],
  ["note", "Add work note", "work-notes", [{ ...text("body", "Work note"), area: true }], [...OPEN, "resolved", "closed"], STAFF],
  ["major", "Promote to major incident", "major", [text("reason", "Reason")], OPEN, (i) => STAFF(i) && !i.major],
  ["resolve", "Resolve", "resolve", [text("code", "Resolution code"), { ...text("notes", "Resolution notes"), area: true }], OPEN, STAFF],
  ["close", "Confirm resolution and close", "close", [], ["resolved"], (i) => OWNER(i) || session.supervises()],
  ["reopen", "Reopen", "reopen", [text("reason", "Reason")], ["resolved"], (i) => STAFF(i) || OWNER(i)],
  ["rate", "Rate this ticket", "rating", [{ name: "score", label: "Score (1–5)", options: ["5", "4", "3", "2", "1"] }, text("comment", "Comment", false)], ["resolved", "closed"], (i) => OWNER(i) && i.csat_score === null],
  ["cancel", "Cancel", "cancel", [text("reason", "Reason")], OPEN, (i) => STAFF(i) || (OWNER(i) && i.status === "new")],
];

function control(spec, id) {
  if (spec.options) return field(spec.label, h("select", { name: spec.name }, ...spec.options.map((o) => h("option", { value: o }, o.replace("_", " ")))), id);
  const input = spec.area ? h("textarea", { name: spec.name, required: spec.required }) : h("input", { name: spec.name, required: spec.required });
  return field(spec.label, input, id);
}

function bodyOf(form, specs) {
  if (!specs.length) return undefined;
  const values = formValues(form);
  for (const spec of specs) if (!spec.required && !values[spec.name]) delete values[spec.name];
  if (values.score) values.score = Number(values.score);
  return values;
}

function actionForm(incident, [name, label, endpoint, specs], onDone) {
  const error = h("p", { class: "alert", role: "alert" });
  const form = h("form", { "aria-label": label },
    ...specs.map((spec) => control(spec, `act-${name}-${spec.name}`)),
    h("p", {}, h("button", { type: "submit" }, label)), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await post(`/api/v1/incidents/${incident.id}/${endpoint}`, bodyOf(form, specs));
      announce(`${label}: done`);
      onDone();
    } catch (failure) {
      error.textContent = problemText(failure);
    }
  });
  return specs.length ? h("details", {}, h("summary", {}, label), form) : form;
}

function entryText(entry) {
  const events = entry.events.map((e) => e.replace(/_/g, " ")).join(", ");
  const changes = Object.entries(entry.changes || {}).map(([key, change]) =>
    `${key}: ${change.before ?? "–"} → ${change.after ?? "–"}`).join("; ");
  return [events, changes].filter(Boolean).join(" · ");
}

function timelineItems(timeline, escalations, deliveries) {
  const items = timeline.map((e) => ({
    at: e.at, kind: e.visibility === "internal" ? "internal" : "",
    title: `${entryText(e)}`, who: e.actor, body: e.body || e.reason,
  }));
  for (const esc of escalations) {
    items.push({ at: esc.started_at, kind: "notify", title: `escalation started (${esc.policy_id}, ${esc.trigger_event_type.split(".")[2]})`, who: "notify", body: `paged: ${esc.notified.join(", ") || "nobody yet"}` });
    if (esc.acknowledged_at) items.push({ at: esc.acknowledged_at, kind: "notify", title: "escalation acknowledged", who: esc.acknowledged_by });
  }
  for (const d of deliveries) {
    items.push({ at: d.created_at, kind: "notify", title: `notification ${d.reason.replace(/_/g, " ")} to ${d.recipient} by ${d.channel}: ${d.status}`, who: "notify", body: d.error });
  }
  return items.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

async function staffExtras(id) {
  if (!session.isStaff()) return [[], []];
  const q = `ticket_id=${encodeURIComponent(id)}`;
  const [escalations, deliveries] = await Promise.all([
    get(`/api/v1/notify/escalations?${q}`).catch(() => []),
    get(`/api/v1/notify/deliveries?${q}&limit=100`).then((p) => p.items).catch(() => []),
  ]);
  return [escalations, deliveries];
}

// Changes linked to the incident by the changes service's correlation (named in it, or a
// recent change on its item), as far as the changes API lets the signed-in user see them.
async function linkedChanges(id) {
  try {
    const page = await get(`/api/v1/changes?incident=${encodeURIComponent(id)}&limit=100`);
    return { changes: page.items };
  } catch (failure) {
    return { changes: [], error: problemText(failure) };
  }
}

function changesPanel(id, { changes, error }) {
  const how = (c) => (c.caused_incidents.includes(id) ? "named in this incident" : "suggested: recent change on its item");
  const content = error ? h("p", { class: "alert", role: "alert" }, `Linked changes could not be loaded: ${error}`)
    : !changes.length ? h("p", {}, "No linked changes that you may see.")
      : h("table", { "data-field": "linked-changes" },
        h("caption", { class: "visually-hidden" }, "Changes linked to this incident"),
        h("thead", {}, h("tr", {}, ...["Change", "Title", "Status", "Link"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ...changes.map((c) => h("tr", { "data-change": c.id },
          h("td", {}, h("a", { href: `#/change/${encodeURIComponent(c.id)}` }, c.number)), h("td", {}, c.title),
          h("td", { "data-field": "status" }, c.status.replace(/_/g, " ")), h("td", {}, how(c))))));
  return h("section", { "aria-labelledby": "changes-h" }, h("h2", { id: "changes-h" }, "Linked changes"), content);
}

function fields(incident) {
  const rows = [
    ["Status", incident.status.replace("_", " ") + (incident.pending_reason ? ` (${incident.pending_reason})` : "")],
    ["Priority", `${incident.priority} (impact ${incident.impact}, urgency ${incident.urgency})`],
    ["Type", incident.ticket_type.replace("_", " ")], ["Requester", incident.requester],
    ["Group", incident.assignment_group || "–"], ["Assignee", incident.assignee || "–"],
    ["Service", incident.service || "–"], ["Major", incident.major ? "yes" : "no"],
    ["Opened", when(incident.opened_at)], ["First response", when(incident.first_response_at)],
    ["Resolved", when(incident.resolved_at)],
    ["CSAT", incident.csat_score === null ? "–" : `${incident.csat_score}/5`],
  ];
  if (incident.alert) rows.push(["Linked alert", `${incident.alert.fingerprint} (${incident.alert.occurrences}×, last ${when(incident.alert.last_seen)})`]);
  return h("dl", { class: "fields" }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function slaPanel(book, id, signal) {
  const list = h("ul", { "aria-label": "SLA timers" });
  const draw = () => list.replaceChildren(...book.timers(id).map((t) => h("li", {}, countdown(t))));
  draw();
  const timer = setInterval(() => list.querySelectorAll(".sla").forEach((node, i) => paint(node, book.timers(id)[i])), 1000);
  signal.addEventListener("abort", () => clearInterval(timer));
  return { node: h("section", { "aria-labelledby": "sla-h" }, h("h2", { id: "sla-h" }, "SLA"), list), draw };
}

export async function renderIncident(main, [id], signal) {
  const book = new TimerBook();
  let sla = null;
  if (session.isStaff()) {
    await loadSla(book, id);
    sla = slaPanel(book, id, signal);
    follow(`/api/v1/sla/stream?ticket=${encodeURIComponent(id)}`, (event) => {
      book.apply(event);
      sla.draw();
    }, signal);
  }
  await renderIncidentInto(main, id, sla?.node);
}

async function renderIncidentInto(main, id, sla) {
  const path = `/api/v1/incidents/${encodeURIComponent(id)}`;
  const [incident, timeline, [escalations, deliveries], linked] = await Promise.all([
    get(path), get(`${path}/timeline`), staffExtras(id), linkedChanges(id),
  ]);
  const redraw = () => renderIncidentInto(main, id, sla);
  const actions = ACTIONS.filter(([, , , , statuses, who]) => statuses.includes(incident.status) && who(incident));
  const items = timelineItems(timeline, escalations, deliveries);
  main.replaceChildren(
    h("h1", {}, `${incident.number} ${incident.title}`),
    h("div", { class: "grid2" },
      h("div", {},
        fields(incident),
        incident.description ? h("p", {}, incident.description) : null,
        changesPanel(incident.id, linked),
        h("h2", { id: "timeline-h" }, "Timeline"),
        h("ol", { class: "timeline", "aria-labelledby": "timeline-h" }, ...items.map((item) =>
          h("li", { class: item.kind }, h("div", { class: "meta" }, `${when(item.at)} · ${item.who}`),
            h("div", {}, item.title), item.body ? h("div", {}, item.body) : null)))),
      h("div", {},
        sla,
        h("section", { "aria-labelledby": "actions-h" }, h("h2", { id: "actions-h" }, "Actions"),
          actions.length ? h("div", { class: "actions" }, ...actions.map((a) => actionForm(incident, a, redraw)))
            : h("p", {}, "Nothing you may do in this status.")))));
}
