// The approval inbox: changes awaiting a decision that the API shows me, with their risk.
import { get } from "../api.js";
import { announce, h, when } from "../dom.js";
import { session } from "../session.js";
import { act, refusal } from "./changes.js";

export async function renderApprovals(main) {
  const page = await get("/api/v1/changes?status=awaiting_approval&limit=100");
  const me = session.user().subject;
  const rows = page.items.filter((c) => c.requester !== me).map((change) => {
    const error = h("span", { class: "alert", role: "alert" });
    const decide = (decision) => async () => {
      try {
        await act(change, decision);
        announce(`${change.number}: ${decision}d`);
        main.replaceChildren();
        await renderApprovals(main);
      } catch (failure) {
        error.textContent = refusal(failure);
      }
    };
    return h("tr", { "data-change": change.id },
      h("td", {}, h("a", { href: `#/change/${change.id}` }, change.number), " ", change.title),
      h("td", {}, change.risk ? `${change.risk.level}: ${change.risk.reasons.map((r) => r.reason || r).join("; ")}` : "–"),
      h("td", {}, when(change.planned_start)),
      h("td", {}, h("button", { type: "button", onclick: decide("approve") }, `Approve ${change.number}`), " ",
        h("button", { type: "button", class: "secondary", onclick: decide("reject") }, `Reject ${change.number}`), error));
  });
  main.append(h("h1", {}, "Approvals"),
    h("table", {}, h("caption", { class: "visually-hidden" }, "Changes awaiting my approval"),
      h("thead", {}, h("tr", {}, ...["Change", "Risk", "Planned start", "Decision"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 4 }, "Nothing awaits your approval."))]))));
}
