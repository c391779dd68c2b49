// The KPI dashboard: figures over a chosen range and team, a chart per window, updated live
// from the SLA service's KPI stream.
import { follow, get } from "../api.js";
import { duration, field, h } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";
const TILES = [
  ["first_response_mean", "First response (mean)", duration],
  ["mttr_mean", "MTTR (mean)", duration],
  ["sla_compliance_percent", "SLA compliance", (v) => `${v}%`],
  ["backlog", "Backlog", String],
  ["csat_average", "CSAT", (v) => `${v} / 5`],
  ["fcr_percent", "First-contact resolution", (v) => `${v}%`],
  ["change_success_percent", "Change success rate", (v) => `${v}%`],
  ["opened", "Opened", String],
  ["resolved", "Resolved", String],
];
const CHARTED = TILES.map(([key, label]) => [key, label]);

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

// One slot per window of the range (empty windows too), so a bar keeps its width and place.
function windows(report) {
  const step = report.granularity === "hour" ? 3600000 : 86400000;
  const byWindow = new Map();
  for (const entry of report.series) byWindow.set(Date.parse(entry.window_start), entry.summary);
  const slots = [];
  for (let at = Date.parse(report.from); at < Date.parse(report.to); at += step) {
    slots.push([new Date(at).toISOString(), byWindow.get(at) || {}]);
  }
  return slots;
}

function chart(report, metric, label) {
  const points = windows(report).map(([start, summary]) => [start, summary[metric] ?? 0]);
  const max = Math.max(1, ...points.map(([, v]) => v));
  const width = 900, height = 220, gap = 2;
  const bar = points.length ? width / points.length : width;
  const bars = points.map(([start, value], i) => {
    const tall = Math.round((value / max) * (height - 30));
    return svg("rect", { class: "bar", x: i * bar + gap, y: height - 20 - tall, width: Math.max(1, bar - 2 * gap), height: tall, "data-value": value },
      svg("title", {}, `${new Date(start).toLocaleString()}: ${value}`));
  });
  const total = points.reduce((sum, [, v]) => sum + v, 0);
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${label} per window: ${points.length} windows, highest ${max}`, "data-total": total },
    ...bars, svg("text", { x: 4, y: 12 }, `max ${max}`), svg("text", { x: 4, y: height - 4 }, points.length ? new Date(points[0][0]).toLocaleString() : "no data yet"));
}

function tiles(total) {
  return h("div", { class: "tiles" }, ...TILES.map(([key, label, format]) => h("div", { class: "tile", "data-kpi": key },
    h("div", { class: "meta" }, label), h("div", { class: "value" }, total[key] === null || total[key] === undefined ? "–" : format(total[key])))));
}

export async function renderKpis(main, _params, signal) {
  const range = h("select", {}, h("option", { value: "hour" }, "last 24 hours, hourly"), h("option", { value: "day" }, "last 30 days, daily"));
  const team = h("input", { list: "kpi-teams", placeholder: "all teams" });
  const metric = h("select", {}, ...CHARTED.map(([key, label]) => h("option", { value: key, selected: key === "resolved" }, label)));
  const groups = await get("/api/v1/groups?limit=100").catch(() => ({ items: [] }));
  const body = h("div", { "aria-live": "off" });
  const updated = h("p", { class: "meta", id: "kpi-updated" });
  let version = 0;
  const draw = async () => {
    const query = new URLSearchParams({ granularity: range.value });
    if (team.value.trim()) query.set("team", team.value.trim());
    const report = await get(`/api/v1/kpis?${query}`);
    const label = metric.selectedOptions[0].textContent;
    body.replaceChildren(tiles(report.total), h("h2", {}, label), h("div", { class: "chart" }, chart(report, metric.value, label)));
    version += 1;
    body.dataset.version = String(version);
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  };
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(draw, 300); };
  for (const control of [range, team, metric]) control.addEventListener("change", draw);
  main.append(h("h1", {}, "KPIs"),
    h("div", { class: "filters" }, field("Range", range, "kpi-range"), field("Team", team, "kpi-team"),
      h("datalist", { id: "kpi-teams" }, ...groups.items.map((g) => h("option", { value: g.name }))),
      field("Chart", metric, "kpi-metric")),
    updated, body);
  await draw();
  follow("/api/v1/kpis/stream", soon, signal);
}
