// The web interface: sign in with an API key, list the tenant's tickets, read one (why its
// reports joined, its recommendation, its recent reports), and correct it (split, merge),
// vote on its recommendation, comment, resolve. Plain DOM, no framework: every value from
// the API is set as text, never parsed as HTML.
"use strict";

const KEY = "incident-responder.api-key";
const $ = (id) => document.getElementById(id);
let cursor = null;
let current = null; // the ticket shown

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) {
    if (r.status === 401) signOut("That key was refused.");
    throw new ApiError(r.status, data?.error?.message || `${r.status} ${r.statusText}`);
  }
  return data;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function show(section) {
  for (const id of ["sign-in", "tickets", "ticket"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  $("who").textContent = "";
  $("sign-in-error").textContent = message || "";
  show("sign-in");
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("api-key").value = "";
  try {
    await api("GET", "/v1/tickets?limit=1");
  } catch (err) {
    if (err.status !== 401) signOut(err.message);
    return;
  }
  $("sign-in-error").textContent = "";
  $("who").textContent = "signed in";
  await listTickets();
}

async function listTickets(more = false) {
  if (!more) {
    cursor = null;
    $("ticket-rows").replaceChildren();
  }
  const query = new URLSearchParams({ limit: "50" });
  if ($("status").value) query.set("status", $("status").value);
  if ($("service").value.trim()) query.set("service", $("service").value.trim());
  if (cursor) query.set("cursor", cursor);
  const page = await api("GET", `/v1/tickets?${query}`);
  for (const t of page.tickets) {
    const row = el("tr");
    row.dataset.ticketId = t.ticket_id;
    row.append(el("td", t.title), el("td", t.service), el("td", t.status, `status-${t.status}`),
      el("td", t.occurrences), el("td", new Date(t.updated_at).toLocaleString()));
    row.addEventListener("click", () => openTicket(t.ticket_id));
    $("ticket-rows").append(row);
  }
  cursor = page.next_cursor;
  $("more").hidden = !cursor;
  show("tickets");
}

async function openTicket(ticketId) {
  current = await api("GET", `/v1/tickets/${encodeURIComponent(ticketId)}`);
  renderTicket();
  show("ticket");
}

function renderTicket() {
  const t = current;
  $("t-error").textContent = "";
  $("t-title").textContent = t.title;
  const merged = t.merged_into ? ` · merged into ${t.merged_into}` : "";
  const split = t.split_from ? ` · split from ${t.split_from}` : "";
  $("t-meta").textContent = `${t.ticket_id} · ${t.service} · ${t.status}${merged}${split} · ` +
    `${t.occurrences} reports · ${t.regressions} regressions` + (t.severity ? ` · ${t.severity}` : "");
  $("t-why").replaceChildren(...(t.why || []).map((line) => el("li", line)));
  const rec = t.recommendation;
  $("t-summary").textContent = rec ? rec.summary : "No recommendation.";
  $("t-steps").replaceChildren(...(rec ? rec.steps : []).map((step) => el("li", step)));
  $("t-votes").textContent = `${t.helpful_votes} helpful, ${t.unhelpful_votes} not`;
  $("t-runbooks").replaceChildren(...t.runbooks.map((r) => el("li", `${r.title} (${r.id})`)));
  const reports = t.comments.filter((c) => c.incident_id && (c.kind === "occurrence" || c.kind === "regression"));
  $("t-reports").replaceChildren(...reports.map((c) => {
    const item = el("li");
    const box = el("input");
    box.type = "checkbox";
    box.value = c.incident_id;
    box.id = `pick-${c.incident_id}`;
    const label = el("label", ` ${c.incident_id}: ${c.body}`);
    label.htmlFor = box.id;
    item.append(box, label);
    return item;
  }));
}

async function act(work) {
  try {
    await work();
  } catch (err) {
    $("t-error").textContent = err.message;
  }
}

function wire() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); listTickets(); });
  $("more").addEventListener("click", () => listTickets(true));
  $("back").addEventListener("click", () => listTickets());
  const id = () => encodeURIComponent(current.ticket_id);
  $("split-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const picked = [...$("t-reports").querySelectorAll("input:checked")].map((b) => b.value);
    act(async () => {
      if (!picked.length) throw new Error("Select the reports to split off.");
      current = await api("POST", `/v1/tickets/${id()}/split`, { incident_ids: picked });
      renderTicket();
    });
  });
  $("merge-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const into = $("merge-into").value.trim();
    act(async () => {
      current = await api("POST", `/v1/tickets/${id()}/merge`, { into });
      $("merge-into").value = "";
      renderTicket();
    });
  });
  $("comment-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(async () => {
      current = await api("POST", `/v1/tickets/${id()}/comments`, { author: "web", body: $("comment-body").value });
      $("comment-body").value = "";
      renderTicket();
    });
  });
  $("resolve").addEventListener("click", () => act(async () => {
    current = await api("POST", `/v1/tickets/${id()}/resolve`, {});
    renderTicket();
  }));
  for (const [button, helpful] of [["vote-up", true], ["vote-down", false]]) {
    $(button).addEventListener("click", () => act(async () => {
      await api("POST", `/v1/tickets/${id()}/feedback`, { helpful });
      current = await api("GET", `/v1/tickets/${id()}`);
      renderTicket();
    }));
  }
  if (sessionStorage.getItem(KEY)) {
    $("who").textContent = "signed in";
    listTickets().catch((err) => signOut(err.message));
  } else {
    show("sign-in");
  }
}

document.addEventListener("DOMContentLoaded", wire);
