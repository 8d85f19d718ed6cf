// The alerts panel: this runtime's alerts (every stream's), newest first, polled with the status;
// an alert raised while the page is open is marked new for 30 s. An alert without an outcome has
// three buttons, staff's verdict (POST /v1/alerts/{id}/ack {"outcome"}): confirmed, false alert,
// customer fixed (real, and the customer paid once told); one with an outcome shows it.
// The delivery line under the title says where alerts go and what still waits for the broker.
// An alert with evidence shows its item's pictures beside it (before, at and after its event),
// fetched once each with the page's token (GET /v1/alerts/{id}/evidence/{k}.jpg). An alert the runtime
// cleared (its item scanned or put back soon after) says so and is dimmed: nobody needs to walk over.

import { clock, words } from "./draw.js";

const $ = (id) => document.getElementById(id);
const SHOWN = 20;
const NEW_MS = 30000;         // an alert stays marked new this long after it first appeared
const firstSeen = new Map();  // id -> when this page first listed it (0: it was there at load)
let first = true;
let api = null;
const pictures = new Map();   // an image's path -> its object URL: fetched once, not at every poll
// the outcomes, as the API names them and as the buttons say them
const OUTCOMES = [["confirmed", "Confirmed"], ["false_alert", "False alert"], ["customer_fixed", "Customer fixed"]];

export function initAlerts(apiFn) {
  api = apiFn;
}

function deliveryLine(st) {
  if (!st) return "";
  if (!st.enabled && !st.sinks) return st.note || "";
  const parts = [];
  if (st.note) parts.push(st.note);
  if (st.broker) parts.push(`broker ${st.broker.connected ? "connected" : "not connected"}`);
  if (st.scans === "pos") {  // the till's feed: if it stops, every bag looks unscanned
    const ago = st.pos_scans_last_at ? Math.round(Date.now() / 1000 - st.pos_scans_last_at) : null;
    parts.push(ago === null ? "no scans from the till yet"
      : `${st.pos_scans_received} scans from the till, the last ${ago < 120 ? ago + " s" : Math.round(ago / 60) + " min"} ago`);
  }
  if (st.pending) parts.push(`${st.pending} waiting for delivery`);
  const err = st.last_error || (st.broker && !st.broker.connected && st.broker.last_error);
  if (err) parts.push(err);
  return parts.join(" · ");
}

function row(a) {
  const li = document.createElement("li");
  li.className = "alert";
  li.dataset.id = a.id;
  li.dataset.status = a.status;
  if (Date.now() - firstSeen.get(a.id) < NEW_MS) li.classList.add("new");
  const when = new Date(a.raised_at * 1000).toLocaleTimeString();
  const text = document.createElement("span");
  text.textContent = `${when}  ${a.stream} · ${words(a.rule)} · ${words(a.product)} · `
    + `${clock(a.start)}–${clock(a.end)} · ${Math.round(100 * a.confidence)} %`;
  text.title = `id ${a.id}`;
  li.append(text);
  if (a.held) {  // the verifier learnt from staff's verdicts holds it: stored, not sent; a verdict still teaches it
    li.classList.add("held");
    const tag = document.createElement("span");
    tag.className = "held-tag";
    tag.textContent = `held · ${Math.round(100 * a.p_right)} % likely right`;
    li.append(tag);
  }
  if (a.cleared) {  // the item was scanned or put back after the alert: no verdict, staff may still give one
    li.classList.add("cleared");
    const tag = document.createElement("span");
    tag.className = "cleared-tag";
    tag.textContent = `cleared · ${a.cleared.why === "put_back" ? "put back" : "scanned"} ${Math.round(a.cleared.after_s)} s later`;
    li.append(tag);
  }
  if (a.images && a.images.length) li.append(evidence(a));
  const outcome = a.verdicts && a.verdicts.length ? a.verdicts[a.verdicts.length - 1].outcome : null;
  if (outcome) {
    li.append(said(li, outcome));
  } else {
    const buttons = document.createElement("span");
    buttons.className = "verdict";
    for (const [value, label] of OUTCOMES) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "ack";
      b.dataset.outcome = value;
      b.textContent = label;
      b.addEventListener("click", () => judge(a, li, buttons, value));
      buttons.append(b);
    }
    li.append(buttons);
  }
  return li;
}

// the alert's pictures of its item, small, in time order
function evidence(a) {
  const strip = document.createElement("span");
  strip.className = "evidence";
  for (const i of a.images) {
    const img = document.createElement("img");
    img.alt = img.title = `${i.label} · ${clock(i.t)}`;
    picture(img, new URL(i.url, location.href).pathname).catch(() => { img.alt = `${i.label}: not loaded`; });
    strip.append(img);
  }
  return strip;
}

async function picture(img, path) {
  let src = pictures.get(path);
  if (!src) {
    src = URL.createObjectURL(await (await api(path)).blob());
    pictures.set(path, src);
    if (pictures.size > 6 * SHOWN) {  // the oldest go: only the listed alerts' pictures are needed
      const [old, url] = pictures.entries().next().value;
      URL.revokeObjectURL(url);
      pictures.delete(old);
    }
  }
  img.src = src;
}

// the outcome an alert was given, as a label in its row
function said(li, outcome) {
  li.dataset.outcome = outcome;
  const span = document.createElement("span");
  span.className = "outcome";
  span.textContent = (OUTCOMES.find(([v]) => v === outcome) || [outcome, outcome])[1];
  return span;
}

async function judge(a, li, buttons, outcome) {
  for (const b of buttons.children) b.disabled = true;
  try {
    await api(`/v1/alerts/${encodeURIComponent(a.id)}/ack`, { outcome });
    li.dataset.status = "acked";
    li.querySelector(".ack-error")?.remove();
    buttons.replaceWith(said(li, outcome));
  } catch (err) {  // said beside the buttons: a tooltip alone goes unseen on a kiosk's touch screen
    for (const b of buttons.children) b.disabled = false;
    let note = li.querySelector(".ack-error");
    if (!note) {
      note = document.createElement("span");
      note.className = "ack-error";
      li.append(note);
    }
    note.textContent = ` not acknowledged: ${err.message}`;
  }
}

// status: /v1/status's "alerts" section (or undefined from a runtime that has none)
export async function pollAlerts(status) {
  if (!api) return;
  // a runtime without alert rules or sinks: no panel (a runtime from before alerts has no section)
  $("alerts-panel").hidden = !status || (status.enabled === false && !status.sinks);
  if ($("alerts-panel").hidden) return;
  $("alerts-delivery").textContent = deliveryLine(status);
  let body;
  try {
    body = await (await api(`/v1/alerts?limit=${SHOWN}`)).json();
  } catch (err) {
    $("alerts-delivery").textContent = err.status === 404 ? "This runtime raises no alerts." : err.message;
    return;
  }
  for (const a of body.alerts) if (!firstSeen.has(a.id)) firstSeen.set(a.id, first ? 0 : Date.now());
  first = false;
  $("alerts").replaceChildren(...body.alerts.map(row));
  $("alerts-empty").hidden = body.alerts.length > 0;
  $("alerts-empty").textContent = body.enabled ? "No alerts." : (body.note || "Alerts are not configured.");
  // what still needs someone: open and not cleared by the item itself (scanned or put back after)
  const open = body.alerts.filter((a) => a.status === "open" && !a.cleared).length;
  $("alerts-count").textContent = open ? `${open} open` : "";
}
