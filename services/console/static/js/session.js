// The signed-in user: a bearer token kept for this browser tab only (sessionStorage), and what
// each role may see. The APIs enforce the roles anyway; this only hides what would be refused.
const KEY = "itsm.session";

const VIEWS = {
  queue: ["agent", "manager", "admin"],
  mine: ["requester"],
  escalations: ["agent", "manager", "admin"],
  changes: ["requester", "change-manager", "manager", "admin"],
  approvals: ["change-manager", "manager", "admin"],
  kpis: ["agent", "manager", "admin"],
};

function claimsOf(token) {
  const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload));
}

export const session = {
  load() {
    const raw = sessionStorage.getItem(KEY);
    if (!raw) return null;
    const saved = JSON.parse(raw);
    return saved.exp * 1000 > Date.now() ? saved : null;
  },
  start(token) {
    const claims = claimsOf(token);
    const roles = claims.roles || claims.realm_access?.roles || [];
    const saved = { token, subject: claims.sub, name: claims.name, roles, exp: claims.exp };
    sessionStorage.setItem(KEY, JSON.stringify(saved));
    return saved;
  },
  end() { sessionStorage.removeItem(KEY); },
  expired() { this.end(); location.hash = "#/login"; },
  token() { return this.load()?.token; },
  user() { return this.load(); },
  has(...roles) { return (this.load()?.roles || []).some((r) => roles.includes(r)); },
  mayView(view) { return this.has(...(VIEWS[view] || [])); },
  isStaff() { return this.has("agent", "manager", "admin"); },
  supervises() { return this.has("manager", "admin"); },
};
