// The requester's view: my tickets, and a form to record a new one.
import { get, post } from "../api.js";
import { announce, field, formValues, h, problemText, when } from "../dom.js";

const LEVELS = [["1", "high"], ["2", "medium"], ["3", "low"]];

function createForm(onCreated) {
  const error = h("p", { class: "alert", role: "alert" });
  const level = (name) => h("select", { name }, ...LEVELS.map(([v, l]) => h("option", { value: v, selected: v === "3" }, l)));
  const form = h("form", { "aria-labelledby": "new-h" },
    h("h2", { id: "new-h" }, "Report a problem or ask for something"),
    field("Title", h("input", { name: "title", required: true, maxlength: 200 }), "new-title"),
    field("Description", h("textarea", { name: "description" }), "new-description"),
    field("How many people are affected (impact)", level("impact"), "new-impact"),
    field("How urgent is it (urgency)", level("urgency"), "new-urgency"),
    h("p", {}, h("button", { type: "submit" }, "Create ticket")), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    try {
      const created = await post("/api/v1/incidents", { ...values, impact: Number(values.impact), urgency: Number(values.urgency) });
      announce(`Created ${created.number}`);
      onCreated(created);
    } catch (failure) {
      error.textContent = problemText(failure);
    }
  });
  return form;
}

export async function renderMine(main) {
  const page = await get("/api/v1/incidents?limit=100");
  const rows = page.items.map((i) => h("tr", {},
    h("td", {}, h("a", { href: `#/incident/${i.id}` }, i.number)), h("td", {}, i.title),
    h("td", {}, i.status.replace("_", " ")), h("td", {}, when(i.updated_at))));
  main.append(
    h("h1", {}, "My tickets"),
    h("table", {}, h("caption", { class: "visually-hidden" }, "My tickets"),
      h("thead", {}, h("tr", {}, ...["Number", "Title", "Status", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 4 }, "You have no tickets."))]))),
    createForm((created) => { location.hash = `#/incident/${created.id}`; }));
}
