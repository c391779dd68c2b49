// Changes: a list, a week/month calendar with freeze windows shaded and conflicts marked, and
// one change with its risk explanation, approvals and the actions the role may take.
import { get, post } from "../api.js";
import { announce, field, h, problemText, when } from "../dom.js";
import { session } from "../session.js";

const DAY = 86400000;
const ACTIVE = new Set(["assessment", "awaiting_approval", "scheduled", "implementing"]);

function overlaps(a, b) {
  return Date.parse(a.start) < Date.parse(b.end) && Date.parse(b.start) < Date.parse(a.end);
}

// Changes on a shared configuration item whose windows overlap (what scheduling refuses).
export function conflictsOf(changes) {
  const clashing = new Set();
  const live = changes.filter((c) => ACTIVE.has(c.status));
  for (const a of live) {
    for (const b of live) {
      if (a.id < b.id && overlaps(a, b) && a.configuration_items.some((ci) => b.configuration_items.includes(ci))) {
        clashing.add(a.id); clashing.add(b.id);
      }
    }
  }
  return clashing;
}

function frozenBy(change, freezes) {
  if (change.change_type === "emergency" || !change.planned_start) return [];
  const window = { start: change.planned_start, end: change.planned_end };
  return freezes.filter((f) => overlaps(window, f) && (!f.services.length || f.services.some((s) => change.services.includes(s))));
}

function startOfWeek(date) {
  const d = new Date(date.getFullYear(), date.getMonth(), date.getDate());
  return new Date(d - ((d.getDay() + 6) % 7) * DAY);
}

function range(mode, anchor) {
  if (mode === "week") { const start = startOfWeek(anchor); return [start, new Date(+start + 7 * DAY)]; }
  const first = new Date(anchor.getFullYear(), anchor.getMonth(), 1);
  const start = startOfWeek(first);
  const last = new Date(anchor.getFullYear(), anchor.getMonth() + 1, 1);
  return [start, new Date(+startOfWeek(new Date(+last - 1)) + 7 * DAY)];
}

function calendarGrid(data, mode, anchor, [start, end]) {
  const clashing = conflictsOf(data.changes);
  const cells = [];
  for (let day = start; day < end; day = new Date(+day + DAY)) {
    const span = { start: day.toISOString(), end: new Date(+day + DAY).toISOString() };
    const freezes = data.freezes.filter((f) => overlaps(span, f));
    const changes = data.changes.filter((c) => overlaps(span, c));
    const label = day.toLocaleDateString(undefined, { weekday: "long", day: "numeric", month: "long" });
    cells.push(h("div", {
      class: `day${freezes.length ? " freeze" : ""}${mode === "month" && day.getMonth() !== anchor.getMonth() ? " other" : ""}`,
      role: "gridcell", "aria-label": label + (freezes.length ? `, freeze: ${freezes.map((f) => f.name).join(", ")}` : ""),
    },
    h("div", { class: "date" }, day.getDate()),
    ...freezes.map((f) => h("span", { class: "pill freeze" }, `Freeze: ${f.name}`)),
    ...data.maintenance.filter((m) => overlaps(span, m)).map((m) => h("span", { class: "entry" }, `Maintenance: ${m.name}`)),
    ...changes.map((c) => h("a", { class: `entry${clashing.has(c.id) ? " conflict" : ""}`, href: `#/change/${c.id}` },
      `${clashing.has(c.id) ? "Conflict: " : ""}${c.number} ${c.title} (${c.status.replace("_", " ")})`))));
  }
  const weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].map((d) => h("div", { class: "weekday", role: "columnheader" }, d));
  return h("div", { class: "calendar", role: "grid", "aria-label": `Change calendar (${mode})` }, ...weekdays, ...cells);
}

function calendar(section) {
  let mode = "week";
  let anchor = new Date();
  const holder = h("div");
  const title = h("h2", { id: "cal-h", "aria-live": "polite" });
  const draw = async () => {
    const span = range(mode, anchor);
    const data = await get(`/api/v1/changes/calendar?start=${span[0].toISOString()}&end=${span[1].toISOString()}`);
    title.textContent = `${mode === "week" ? "Week of" : "Month of"} ${(mode === "week" ? span[0] : anchor).toLocaleDateString(undefined, { day: mode === "week" ? "numeric" : undefined, month: "long", year: "numeric" })}`;
    holder.replaceChildren(calendarGrid(data, mode, anchor, span));
  };
  const move = (step) => () => {
    anchor = mode === "week" ? new Date(+anchor + step * 7 * DAY) : new Date(anchor.getFullYear(), anchor.getMonth() + step, 1);
    draw();
  };
  const view = h("select", { onchange: (e) => { mode = e.target.value; draw(); } },
    h("option", { value: "week" }, "week"), h("option", { value: "month" }, "month"));
  section.append(title, h("div", { class: "filters" }, field("Calendar view", view, "cal-mode"),
    h("button", { type: "button", class: "secondary", onclick: move(-1) }, "Previous"),
    h("button", { type: "button", class: "secondary", onclick: move(1) }, "Next")), holder);
  return draw();
}

export async function renderChanges(main) {
  const now = Date.now();
  const [page, upcoming] = await Promise.all([
    get("/api/v1/changes?limit=100"),
    get(`/api/v1/changes/calendar?start=${new Date(now - 30 * DAY).toISOString()}&end=${new Date(now + 60 * DAY).toISOString()}`),
  ]);
  const rows = page.items.map((c) => {
    const frozen = frozenBy(c, upcoming.freezes);
    return h("tr", { "data-change": c.id },
      h("td", {}, h("a", { href: `#/change/${c.id}` }, c.number)), h("td", {}, c.title),
      h("td", {}, c.change_type), h("td", {}, c.status.replace("_", " ")),
      h("td", {}, c.risk ? c.risk.level : "–"), h("td", {}, when(c.planned_start)),
      h("td", {}, frozen.length ? h("span", { class: "pill freeze" }, `in freeze: ${frozen.map((f) => f.name).join(", ")}`) : ""));
  });
  const section = h("section", { "aria-labelledby": "cal-h" });
  main.append(h("h1", {}, "Changes"),
    h("table", {}, h("caption", { class: "visually-hidden" }, "Changes"),
      h("thead", {}, h("tr", {}, ...["Number", "Title", "Type", "Status", "Risk", "Planned start", "Schedule"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 7 }, "No changes."))]))),
    section);
  await calendar(section);
}

// What the scheduling rules refused, in words: a freeze or a conflict.
export function refusal(error) {
  const problem = error.problem || {};
  if (problem.freezes) return `Refused: the planned window falls in the freeze ${problem.freezes.join(", ")}.`;
  if (problem.conflicting_changes) return `Refused: conflicts with ${problem.conflicting_changes.join(", ")} on the same configuration item.`;
  return problemText(error);
}

function changeActions(change) {
  const mine = change.requester === session.user().subject;
  const manager = session.has("change-manager", "admin");
  const list = [];
  if (change.status === "draft" && (mine || manager)) list.push(["submit", "Submit for scheduling"]);
  if (change.status === "assessment" && manager) list.push(["assessment", "Assess risk"]);
  if (change.status === "awaiting_approval" && !mine && session.has("change-manager", "manager", "admin")) {
    list.push(["approve", "Approve"], ["reject", "Reject"]);
  }
  if (["draft", "assessment", "awaiting_approval", "scheduled"].includes(change.status) && (mine || manager)) list.push(["cancel", "Cancel change"]);
  return list;
}

export async function act(change, action) {
  if (action === "approve" || action === "reject") {
    return post(`/api/v1/changes/${change.id}/approvals`, { decision: action, comment: "" });
  }
  if (action === "cancel") return post(`/api/v1/changes/${change.id}/cancel`, { reason: "cancelled in the console" });
  return post(`/api/v1/changes/${change.id}/${action}`);
}

export async function renderChange(main, [id]) {
  const change = await get(`/api/v1/changes/${encodeURIComponent(id)}`);
  const risk = change.risk || await get(`/api/v1/changes/${change.id}/risk`).catch(() => null);
  const error = h("p", { class: "alert", role: "alert", id: "change-error" });
  const buttons = changeActions(change).map(([action, label]) => h("button", { type: "button", onclick: async () => {
    try {
      await act(change, action);
      announce(`${label}: done`);
      await renderChange(main.replaceChildren() || main, [id]);
    } catch (failure) {
      error.textContent = refusal(failure);
    }
  } }, label));
  const rows = [
    ["Status", change.status.replace("_", " ")], ["Type", change.change_type], ["Requester", change.requester],
    ["Implementer", change.implementer || "–"], ["Configuration items", change.configuration_items.join(", ") || "–"],
    ["Services", change.services.join(", ") || "–"],
    ["Planned", `${when(change.planned_start)} – ${when(change.planned_end)}`],
    ["Approvals", change.approvals.map((a) => `${a.approver} (${a.group}): ${a.decision}`).join("; ") || "–"],
    ["Linked incidents", [...change.caused_incidents, ...change.suggested_incidents].join(", ") || "–"],
  ];
  main.append(h("h1", {}, `${change.number} ${change.title}`),
    h("dl", { class: "fields" }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", { id: "risk-h" }, "Risk"),
    risk ? h("div", { "aria-labelledby": "risk-h" }, h("p", {}, `${risk.level} (score ${risk.score})`),
      h("ul", {}, ...risk.reasons.map((r) => h("li", {}, typeof r === "string" ? r : `${r.reason || r.rule} (+${r.points})`))))
      : h("p", {}, "Not assessed yet."),
    h("h2", {}, "Actions"), buttons.length ? h("p", { class: "filters" }, ...buttons) : h("p", {}, "Nothing you may do in this status."),
    error);
}
