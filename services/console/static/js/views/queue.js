// The agent queue: the incidents of my groups with a live SLA countdown per row. Rows appear
// and change as the SLA stream reports facts; the countdown itself runs on the deadline.
import { follow, get } from "../api.js";
import { announce, field, h } from "../dom.js";
import { TimerBook, countdown, paint } from "../sla.js";

const OPEN = new Set(["new", "assigned", "in_progress", "pending"]);
const PRIORITIES = ["P1", "P2", "P3", "P4", "P5"];
const COLUMNS = [
  ["number", "Number"], ["title", "Title"], ["priority", "Priority"], ["status", "Status"],
  ["assignee", "Assignee"], ["assignment_group", "Group"], ["sla", "SLA"],
];

export async function loadSla(book, id) {
  try {
    book.load(await get(`/api/v1/sla/tickets/${encodeURIComponent(id)}`));
  } catch (error) {
    if (error.status !== 404) throw error; // 404: no timer yet
  }
}

class Queue {
  constructor(signal) {
    this.signal = signal;
    this.incidents = new Map();
    this.book = new TimerBook();
    this.sort = { key: "sla", dir: 1 };
    this.clocks = new Map();
    this.fresh = new Set();
    this.body = h("tbody");
  }

  async reload() {
    const page = await get("/api/v1/incidents?limit=100");
    this.incidents = new Map(page.items.map((i) => [i.id, i]));
    await Promise.all(page.items.filter((i) => OPEN.has(i.status)).map((i) => loadSla(this.book, i.id)));
    this.render();
  }

  async onFact(event) {
    const id = event.data.subject;
    this.book.apply(event);
    const known = this.incidents.has(id);
    try {
      this.incidents.set(id, await get(`/api/v1/incidents/${encodeURIComponent(id)}`));
    } catch (error) {
      if (error.status === 404) return; // not one of mine
      throw error;
    }
    if (!known) {
      this.fresh.add(id);
      announce(`New incident ${this.incidents.get(id).number}: ${this.incidents.get(id).title}`);
    }
    this.render();
  }

  sortValue(incident) {
    if (this.sort.key === "sla") return this.book.headline(incident.id)?.deadline ?? Infinity;
    return incident[this.sort.key] ?? "";
  }

  visible() {
    const status = this.filters.status.value;
    const priority = this.filters.priority.value;
    const text = this.filters.q.value.trim().toLowerCase();
    return [...this.incidents.values()]
      .filter((i) => (status === "open" ? OPEN.has(i.status) : !status || i.status === status))
      .filter((i) => !priority || i.priority === priority)
      .filter((i) => !text || `${i.number} ${i.title}`.toLowerCase().includes(text))
      .sort((a, b) => {
        const [x, y] = [this.sortValue(a), this.sortValue(b)];
        return (x < y ? -1 : x > y ? 1 : 0) * this.sort.dir;
      });
  }

  row(incident) {
    const clock = countdown(this.book.headline(incident.id));
    this.clocks.set(incident.id, clock);
    return h("tr", { "data-ticket": incident.id, class: this.fresh.has(incident.id) ? "fresh" : null },
      h("td", {}, h("a", { href: `#/incident/${incident.id}` }, incident.number)),
      h("td", {}, incident.title),
      h("td", {}, h("span", { class: `pill ${incident.priority}` }, incident.priority)),
      h("td", {}, incident.status.replace("_", " ")),
      h("td", {}, incident.assignee || "–"),
      h("td", {}, incident.assignment_group || "–"),
      h("td", {}, clock));
  }

  render() {
    this.clocks.clear();
    const rows = this.visible().map((i) => this.row(i));
    this.body.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 7 }, "No incidents."))]));
    for (const th of this.head.querySelectorAll("th")) {
      th.setAttribute("aria-sort", th.dataset.key === this.sort.key ? (this.sort.dir > 0 ? "ascending" : "descending") : "none");
    }
  }

  tick() {
    for (const [id, node] of this.clocks) paint(node, this.book.headline(id));
  }

  header() {
    this.head = h("thead", {}, h("tr", {}, ...COLUMNS.map(([key, label]) =>
      h("th", { scope: "col", "data-key": key },
        h("button", { type: "button", onclick: () => this.sortBy(key) }, label)))));
    return this.head;
  }

  sortBy(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    this.render();
  }

  filterBar() {
    const rerender = () => this.render();
    this.filters = {
      status: h("select", { onchange: rerender },
        h("option", { value: "open" }, "open"), h("option", { value: "" }, "any"),
        ...["new", "assigned", "in_progress", "pending", "resolved", "closed", "cancelled"].map((s) => h("option", { value: s }, s))),
      priority: h("select", { onchange: rerender }, h("option", { value: "" }, "any"),
        ...PRIORITIES.map((p) => h("option", { value: p }, p))),
      q: h("input", { type: "search", oninput: rerender }),
    };
    return h("div", { class: "filters", role: "search" },
      field("Status", this.filters.status, "queue-status"),
      field("Priority", this.filters.priority, "queue-priority"),
      field("Search", this.filters.q, "queue-q"));
  }
}

export async function renderQueue(main, _params, signal) {
  const queue = new Queue(signal);
  const table = h("table", { "aria-describedby": "queue-live" }, h("caption", { class: "visually-hidden" }, "Incidents of my groups"), queue.header(), queue.body);
  const live = h("p", { id: "queue-live", class: "meta" }, "Connecting to the live SLA stream…");
  main.append(h("h1", {}, "Queue"), queue.filterBar(), live, table);
  const timer = setInterval(() => queue.tick(), 1000);
  signal.addEventListener("abort", () => clearInterval(timer));
  follow("/api/v1/sla/stream", (event) => queue.onFact(event).catch(() => {}), signal, () => {
    queue.reload().then(() => {
      live.textContent = "Live: SLA countdowns update as the SLA service reports.";
      table.dataset.live = "connected";
    });
  });
}
