// My pending acknowledgements: the escalations waiting for acknowledgement that paged me
// (managers: everyone's), read in one call, with an acknowledge button that stops further levels.
import { follow, get, post } from "../api.js";
import { announce, h, problemText, when } from "../dom.js";

const PENDING = new Set(["triggered", "notified", "exhausted"]);
const LIMIT = 100;

function ticketOf(escalation) {
  const ticket = escalation.ticket || {};
  return { id: escalation.ticket_id, number: ticket.number || escalation.ticket_id, title: ticket.title || "" };
}

function card(escalation) {
  const incident = ticketOf(escalation);
  const error = h("p", { class: "alert", role: "alert" });
  const pending = PENDING.has(escalation.status);
  const ack = h("button", { type: "button", onclick: async () => {
    ack.disabled = true;
    try {
      const taken = await post(`/api/v1/notify/escalations/${encodeURIComponent(escalation.id)}/acknowledgement`);
      announce(`Acknowledged the escalation of ${incident.number}`);
      // It leaves the pending list at the next re-read; until then the row says who took it.
      row.replaceWith(card({ ...taken, ticket: escalation.ticket }));
    } catch (failure) {
      error.textContent = problemText(failure);
      ack.disabled = false;
    }
  } }, `Acknowledge ${incident.number}`);
  const row = h("tr", { "data-escalation": escalation.id },
    h("td", {}, h("a", { href: `#/incident/${encodeURIComponent(incident.id)}` }, incident.number), " ", incident.title),
    h("td", {}, escalation.policy_id),
    h("td", { "data-field": "status" }, escalation.status),
    h("td", {}, `${escalation.level} of ${escalation.levels}`),
    h("td", {}, escalation.next_level_at ? when(escalation.next_level_at) : "–"),
    h("td", {}, pending ? ack : `by ${escalation.acknowledged_by || "–"}`, error));
  return row;
}

export async function renderEscalations(main, _params, signal) {
  const body = h("tbody");
  const more = h("p", { "data-field": "more" });
  const draw = async () => {
    const page = await get(`/api/v1/notify/escalations/pending?limit=${LIMIT}`);
    body.replaceChildren(...(page.items.length ? page.items.map((e) => card(e))
      : [h("tr", {}, h("td", { colspan: 6 }, "Nothing waits for your acknowledgement."))]));
    more.textContent = page.total > page.items.length
      ? `Showing the ${page.items.length} longest waiting of ${page.total}.` : "";
  };
  main.append(h("h1", {}, "Escalations"),
    h("table", {}, h("caption", { class: "visually-hidden" }, "Escalations waiting for acknowledgement"),
      h("thead", {}, h("tr", {}, ...["Incident", "Policy", "Status", "Level", "Next level", "Action"].map((c) => h("th", { scope: "col" }, c)))),
      body),
    more);
  await draw();
  // Escalations start on new tickets, SLA warnings and breaches: re-read when one is reported.
  follow("/api/v1/sla/stream", (event) => {
    if (/\.(started|warning|breached)\./.test(event.event)) draw();
  }, signal);
}
