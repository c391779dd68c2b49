// The console's shell: hash routes, the navigation the signed-in role may use, sign-out.
import { h } from "./dom.js";
import { session } from "./session.js";
import { completeOidcSignIn, renderLogin } from "./views/login.js";
import { renderQueue } from "./views/queue.js";
import { renderIncident } from "./views/incident.js";
import { renderMine } from "./views/mine.js";
import { renderChanges, renderChange } from "./views/changes.js";
import { renderApprovals } from "./views/approvals.js";
import { renderKpis } from "./views/kpis.js";
import { renderEscalations } from "./views/escalations.js";

const NAV = [
  ["queue", "Queue"],
  ["mine", "My tickets"],
  ["escalations", "Escalations"],
  ["changes", "Changes"],
  ["approvals", "Approvals"],
  ["kpis", "KPIs"],
];

const ROUTES = {
  login: renderLogin,
  queue: renderQueue,
  incident: renderIncident,
  mine: renderMine,
  escalations: renderEscalations,
  changes: renderChanges,
  change: renderChange,
  approvals: renderApprovals,
  kpis: renderKpis,
};

let current = new AbortController();

function homeOf() {
  return NAV.map(([view]) => view).find((view) => session.mayView(view)) || "login";
}

// Detail views follow their list's rule (agents open a change from an incident it is linked
// to); an unknown or forbidden view falls back to home.
function allowed(view) {
  const rule = { incident: ["queue", "mine"], change: ["changes", "approvals", "queue"] }[view] || [view];
  return Boolean(ROUTES[view]) && view !== "login" && rule.some((v) => session.mayView(v));
}

function renderNav(view) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const user = session.user();
  nav.replaceChildren(
    ...NAV.filter(([name]) => user && session.mayView(name)).map(([name, label]) =>
      h("a", { href: `#/${name}`, "aria-current": name === view ? "page" : null }, label)),
  );
  who.replaceChildren(
    ...(user
      ? [h("span", {}, `${user.name || user.subject} (${user.roles.join(", ")})`),
        h("button", { type: "button", onclick: signOut }, "Sign out")]
      : []),
  );
}

function signOut() {
  session.end();
  location.hash = "#/login";
}

// Focus moves to the new content on navigation (not on the first load: the skip link leads).
async function route(event) {
  current.abort();
  current = new AbortController();
  const [view, ...params] = (location.hash.replace(/^#\/?/, "") || "").split("/");
  const signedIn = Boolean(session.user());
  const name = !signedIn ? "login" : allowed(view) ? view : homeOf();
  if (signedIn && name === "login") { location.hash = `#/${homeOf()}`; return; }
  renderNav(name);
  const main = document.getElementById("view");
  main.replaceChildren();
  try {
    await ROUTES[name](main, params.map(decodeURIComponent), current.signal);
  } catch (error) {
    main.append(h("p", { class: "alert", role: "alert" }, `Could not load this page: ${error.message}`));
  }
  if (event) main.focus();
}

async function start() {
  await completeOidcSignIn();
  window.addEventListener("hashchange", route);
  await route(null);
}

start();
