// Sign-in: the development login (dev auth mode only) or the organisation's OIDC provider
// (authorization code flow with PKCE; the console is a public client and keeps no secret).
import { field, h, problemText } from "../dom.js";
import { session } from "../session.js";

const OIDC_STATE = "itsm.oidc";

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function discovery(authority) {
  const response = await fetch(`${authority.replace(/\/$/, "")}/.well-known/openid-configuration`);
  return response.json();
}

async function startOidc(oidc) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const config = await discovery(oidc.authority);
  const redirect = `${location.origin}/console/`;
  sessionStorage.setItem(OIDC_STATE, JSON.stringify({ verifier, state, redirect, token: config.token_endpoint, client: oidc.client_id }));
  const query = new URLSearchParams({
    response_type: "code", client_id: oidc.client_id, redirect_uri: redirect, scope: oidc.scope,
    state, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(`${config.authorization_endpoint}?${query}`);
}

// Back from the provider with ?code=…&state=…: trade the code for an access token.
export async function completeOidcSignIn() {
  const params = new URLSearchParams(location.search);
  const saved = JSON.parse(sessionStorage.getItem(OIDC_STATE) || "null");
  if (!params.get("code") || !saved) return;
  sessionStorage.removeItem(OIDC_STATE);
  history.replaceState(null, "", location.pathname);
  if (params.get("state") !== saved.state) return;
  const response = await fetch(saved.token, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: saved.redirect,
      client_id: saved.client, code_verifier: saved.verifier,
    }),
  });
  if (response.ok) session.start((await response.json()).access_token);
}

function devLoginForm(options) {
  const error = h("p", { class: "alert", role: "alert" });
  const subject = h("input", { name: "subject", required: true, autocomplete: "username", value: "ann" });
  const role = h("select", { name: "role" },
    ...options.roles.map((r) => h("option", { value: r, selected: r === "agent" }, r)));
  const form = h("form", { class: "login", "aria-describedby": "dev-note" },
    h("p", { id: "dev-note" }, "Development login: mints a token for the chosen role with the platform's dev signing key. It exists only in dev auth mode."),
    field("User name", subject, "login-subject"),
    field("Role", role, "login-role"),
    h("p", {}, h("button", { type: "submit" }, "Sign in")),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/console/dev-login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ subject: subject.value.trim(), role: role.value }),
    });
    const data = await response.json();
    if (!response.ok) { error.textContent = problemText({ problem: data }); return; }
    session.start(data.access_token);
    location.hash = "#/";
  });
  return form;
}

export async function renderLogin(main) {
  const options = await (await fetch("/console/config.json")).json();
  main.append(h("h1", {}, "Sign in"));
  if (options.dev_login) main.append(devLoginForm(options));
  else if (options.oidc) {
    main.append(h("button", { type: "button", onclick: () => startOidc(options.oidc) },
      "Sign in with your organisation"));
  } else main.append(h("p", { class: "alert", role: "alert" }, "No sign-in is configured (set ITSM_CONSOLE_OIDC_AUTHORITY and ITSM_CONSOLE_OIDC_CLIENT_ID)."));
}
