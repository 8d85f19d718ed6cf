// The zones panel: the shown stream's checkout zones (GET /v1/streams/{name}/zones), drawn as labelled
// outlines in a frame-shaped plot, and a small editor: "edit zones" puts a handle on every corner to
// drag, "save" PUTs them, "propose again" PUTs null (the event head proposes them anew). Hidden for a
// stream without an event path (409), where zones apply to nothing.

import { ZONE_NAMES, zoneMap } from "./draw.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 5000;  // zones change when proposed (once, ~10 s in) or set: no need to ask every second
let api = null;
let stream = null;     // the stream whose zones are shown
let shown = null;      // its last GET reply
let draft = null;      // {name: [[x, y], ...]} while editing, else null
let dragging = null;   // {zone, index} while a corner is dragged
let frame = null;      // where zoneMap drew the frame
let askedAt = 0;

// where to start editing a stream that has no zones yet: a square per zone, to be dragged into place
// The scanner's light is a small square, added only on "mark the scanner light": its colour is read from
// the pixels inside, so one left where it starts would read the wrong pixels.
const START = { basket: [0.05, 0.55], scanner: [0.4, 0.4], counter: [0.4, 0.7], bag: [0.75, 0.55], light: [0.62, 0.28] };
const START_SIDE = { light: 0.04 };
const square = (n) => {
  const [x, y] = START[n];
  const d = START_SIDE[n] || 0.2;
  return [[x, y], [x + d, y], [x + d, y + d], [x, y + d]];
};

const url = () => `/v1/streams/${encodeURIComponent(stream)}/zones`;

function redraw() {
  if (!shown) return;
  frame = zoneMap($("zones"), draft || shown.zones, draft !== null);
}

function show(reply) {
  shown = reply;
  const editing = draft !== null;
  $("zones-origin").textContent = reply.origin ? `(${reply.origin})` : "";
  $("zones-note").textContent = (reply.origin === "proposed"
    ? "Proposed from the event head's zone map; edit and save them to set them."
    : reply.origin === "configured" ? "" : reply.status) + (reply.origin ? ` Scanner light: ${reply.light}.` : "");
  $("zones-edit").hidden = editing;
  $("zones-save").hidden = !editing;
  $("zones-cancel").hidden = !editing;
  $("zones-light").hidden = !editing || Boolean(draft && draft.light);
  $("zones-propose").hidden = editing || reply.origin !== "configured";
  redraw();
}

function failed(err) {
  $("zones-note").textContent = err.message;
  $("zones-note").className = "note error";
}

// With the status poll: the stream shown (`name`), asked again every POLL_MS or when it changes.
export async function pollZones(name) {
  if (!api || !name || draft !== null) return;
  if (name === stream && Date.now() - askedAt < POLL_MS) return;
  if (name !== stream) shown = null;
  stream = name;
  askedAt = Date.now();
  try {
    const reply = await (await api(url())).json();
    if (name !== stream || draft !== null) return;  // another stream was picked, or editing began, meanwhile
    $("zones-panel").hidden = false;
    $("zones-note").className = "note";
    show(reply);
  } catch (err) {
    if (err.status === 409 || err.status === 404) $("zones-panel").hidden = true;  // no event path, or gone
    else failed(err);
  }
}

async function put(zones) {
  try {
    const reply = await (await api(url(), { zones }, "PUT")).json();
    draft = null;
    $("zones-note").className = "note";
    show(reply);
    askedAt = Date.now();
  } catch (err) {
    failed(err);  // still editing: the draft stays to be fixed
  }
}

function pointIn(ev) {
  const svg = $("zones");
  const pt = svg.createSVGPoint();
  pt.x = ev.clientX;
  pt.y = ev.clientY;
  const p = pt.matrixTransform(svg.getScreenCTM().inverse());
  const clamp = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000;
  return [clamp((p.x - frame.x) / frame.w), clamp((p.y - frame.y) / frame.h)];
}

export function initZones(apiFn) {
  api = apiFn;
  $("zones-edit").addEventListener("click", () => {
    const zones = shown && shown.zones ? shown.zones : {};
    draft = Object.keys(zones).length
      ? Object.fromEntries(Object.entries(zones).map(([n, pts]) => [n, pts.map((p) => [...p])]))
      : Object.fromEntries(ZONE_NAMES.filter((n) => n !== "light").map((n) => [n, square(n)]));
    show(shown);
  });
  $("zones-light").addEventListener("click", () => {
    if (draft === null) return;
    draft.light = square("light");
    show(shown);
  });
  $("zones-cancel").addEventListener("click", () => {
    draft = null;
    $("zones-note").className = "note";
    show(shown);
  });
  $("zones-save").addEventListener("click", () => put(draft));
  $("zones-propose").addEventListener("click", () => put(null));
  const svg = $("zones");
  svg.addEventListener("pointerdown", (ev) => {
    const h = ev.target.closest(".zone-handle");
    if (!h || draft === null) return;
    dragging = { zone: h.dataset.zone, index: Number(h.dataset.index) };
    svg.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!dragging) return;
    draft[dragging.zone][dragging.index] = pointIn(ev);
    redraw();
  });
  const drop = () => { dragging = null; };
  svg.addEventListener("pointerup", drop);
  svg.addEventListener("pointercancel", drop);
}

// another stream on the page: an edit of the old one's zones is dropped
export function forgetZones() {
  draft = null;
  dragging = null;
  shown = null;
  stream = null;
}
