// The lvm-edge dashboard: polls the runtime's JSON API, draws the memory timeline, asks questions,
// draws answers, lists the catalog. No framework, no build step, nothing fetched from elsewhere.
//
// Polling, not Server-Sent Events: EventSource cannot send an Authorization header, and the token
// must not travel in a URL (URLs end up in logs and browser history).

import { initAlerts, pollAlerts } from "./alerts.js";
import { activityBars, boxTrack, clock, eventStrip, intervalStrip, timeline, words } from "./draw.js";
import { bodyWithStream, chooseStream, chosenStream, forgetStream, onStreamChange, showStreams, withStream } from "./streams.js";
import { forgetZones, initZones, pollZones } from "./zones.js";

const TOKEN_KEY = "lvm-edge-token";
const POLL_MS = 1000;
const CATALOG_MS = 15000;
const HAPPENED_MS = 10000;   // what happened is redrawn this often (a few answer-graph calls each)
const HAPPENED_MAX_S = 1800; // at most the last 30 minutes: the longest window its accuracy was measured on
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  timeline: null,
  answer: null,       // the answer drawn on the timeline
  happened: null,     // the last /v1/happened reply, drawn under the timeline
  happenedAt: 0,
  labels: null,
  types: new Map(),   // query type name -> its row of the runtime's table (/v1/labels query_types)
  products: [],       // catalog names
  crops: new Map(),   // crop URL@version -> blob URL (an <img src> cannot carry the token)
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, body = undefined, method = "POST") {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const init = { headers, cache: "no-store" };
  if (body !== undefined) {
    init.method = method;
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "the runtime does not answer (stopped, or the network is down)");
  }
  if (res.status === 401) needToken();
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      msg = (await res.json()).error || msg;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, msg);
  }
  return res;
}

const getJson = async (path) => (await api(path)).json();
initAlerts(api);
initZones(api);

// -- token ------------------------------------------------------------------------------------
function needToken() {
  $("token-form").hidden = false;
  banner(state.token ? "The token was not accepted." : "This runtime needs its API token.");
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token-input").value = "";
  $("token-form").hidden = true;
  banner(null);
  start();
});

let bannerHeldUntil = 0;
function banner(text, holdMs = 0) {  // holdMs: not cleared by the polls for that long
  if (!text && Date.now() < bannerHeldUntil) return;
  bannerHeldUntil = text ? Date.now() + holdMs : 0;
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

// -- status and timeline ----------------------------------------------------------------------
const fmt = {
  num: (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d)),
  bytes: (v) => (v > 1 << 20 ? `${(v / (1 << 20)).toFixed(1)} MiB` : `${(v / 1024).toFixed(0)} KiB`),
  gapSeconds: (gaps) => gaps.reduce((s, [a, b]) => s + (b - a), 0),
};

function showStatus(st) {
  $("source").textContent = st.source || "no source";
  const badge = $("state");
  badge.textContent = st.state;
  badge.className = `badge state-${st.state}`;
  const cov = st.coverage;
  const cards = {
    fps: fmt.num(st.fps),
    rtf: `${fmt.num(st.stream_rate, 2)}×`,
    dropped: st.dropped,
    reconnects: st.reconnects,
    gaps: st.gaps.length ? `${st.gaps.length} (${fmt.num(fmt.gapSeconds(st.gaps), 0)} s)` : "0",
    coverage: cov.start === null ? "empty" : `${clock(cov.start)} – ${clock(cov.end)}`,
    frames: `${st.frames_processed} (${st.pending_frames} pending)`,
    memory: st.sampler && st.sampler.state_bytes
      ? `${fmt.bytes(st.memory_bytes)} (${st.sampler.kind} state ${fmt.bytes(st.sampler.state_bytes)})`
      : fmt.bytes(st.memory_bytes),
    ood: st.ood && st.ood.score !== undefined && st.ood.score !== null
      ? `${fmt.num(st.ood.score, 1)}${st.ood.flag ? " ⚠ unlike training" : ""}` : "–",
    backend: st.backend,
    answers: st.answers === "reader" ? "memory reader" : "query heads",
  };
  for (const [k, v] of Object.entries(cards)) $(`st-${k}`).textContent = v;
  $("st-ood").closest(".card").classList.toggle("warn", Boolean(st.ood && st.ood.flag));
  $("st-gaps").closest(".card").classList.toggle("warn", st.gaps.length > 0);
  // why a camera does not deliver (connecting, reconnecting), and a snapshot that cannot be written
  const trouble = st.source_problem || (st.snapshot_error ? `snapshot failed: ${st.snapshot_error}` : "");
  const why = st.error || st.end_reason || trouble;
  $("stream-note").textContent = why || "";
  $("stream-note").className = st.error || trouble ? "note error" : "note";
}

function redrawTimeline() {
  if (!state.timeline) return;
  timeline($("timeline"), state.timeline, state.answer);
  eventStrip($("events"), state.timeline, state.answer, state.happened);
}

// What happened over the memory (its last HAPPENED_MAX_S), every HAPPENED_MS; not awaited by the
// status poll. A runtime answering with the query heads has no events (409): the strip says so.
let happenedBusy = false;
async function pollHappened(tl) {
  const cov = tl.coverage;
  if (happenedBusy || cov.end === null || Date.now() - state.happenedAt < HAPPENED_MS) return;
  happenedBusy = true;
  state.happenedAt = Date.now();
  try {
    const body = bodyWithStream({ start: Math.max(cov.start, cov.end - HAPPENED_MAX_S), end: cov.end });
    state.happened = await (await api("/v1/happened", body)).json();
  } catch (err) {
    state.happened = { error: err.message };
  } finally {
    happenedBusy = false;
    redrawTimeline();
  }
}

let polling = false;  // a slow runtime must not pile requests up

// A stream left to show when the default one is gone: one streaming if any, else the first; null if none.
async function anotherStream() {
  try {
    const { streams } = await getJson("/v1/streams");
    if (streams.some((s) => s.default)) return null;  // the default is there: its 409 is about something else
    const next = streams.find((s) => s.state === "streaming") || streams[0];
    return next ? next.name : null;
  } catch {
    return null;
  }
}

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [st, tl] = await Promise.all([getJson(withStream("/v1/status")), getJson(withStream("/v1/timeline"))]);
    showStatus(st);
    pollAlerts(st.alerts);  // not awaited: a slow alert list must not hold the status up
    pollZones(st.stream);   // nor the zones
    showStreams((st.streams || []).length > 1 ? (await getJson("/v1/streams")).streams : [], st.stream);
    state.timeline = tl;
    redrawTimeline();
    pollHappened(tl);
    if (!$("token-form").hidden) return;
    banner(null);
    if ($("answer-error").dataset.unreachable === "1") {  // "does not answer" is over: ask again
      $("answer-error").textContent = "";
      $("answer-error").dataset.unreachable = "";
      $("answer").dataset.state = "idle";
    }
    fillWindowDefaults(tl);
  } catch (err) {
    const other = err.status === 409 && !chosenStream() ? await anotherStream() : null;
    if (err.status === 404 && forgetStream()) {
      forgetAnswer();
      banner("That stream was removed; showing the default stream.", 10000);
    } else if (other) {  // the default stream was removed: the page goes on with one that is left
      chooseStream(other);
      forgetAnswer();
      banner(`The default stream was removed; showing “${other}”.`, 10000);
    } else if (err.status !== 401) {
      banner(err.message);
      if (!err.status) {  // no answer at all: what the cards show is from before
        $("state").textContent = "unreachable";
        $("state").className = "badge state-unreachable";
      }
    }
  } finally {
    polling = false;
  }
}

// -- the structured query form ----------------------------------------------------------------
function fillWindowDefaults(tl) {
  const form = $("query-form");
  if (form.dataset.touched || tl.coverage.start === null) return;
  form.start.value = Math.max(tl.coverage.start, tl.coverage.end - 300).toFixed(0);
  form.end.value = Math.ceil(tl.coverage.end).toFixed(0);
}

// A field shows when the chosen type is given it (data-given) or takes it as an option (data-option).
function syncFormFields() {
  const form = $("query-form");
  const row = state.types.get(form.type.value);
  for (const el of form.querySelectorAll("[data-given], [data-option]")) {
    el.hidden = !row || !(el.dataset.given ? row.given.includes(el.dataset.given) : row.options.includes(el.dataset.option));
    // a hidden field is not sent, and its value (a top of 1000 left from another question) must not block Query
    for (const input of el.querySelectorAll("input, select")) input.disabled = el.hidden;
  }
}

// "when did {activity} happen to {object}" with the blanks filled
const reads = (row, activity, object) => row.reads.replace("{activity}", activity).replace("{object}", object);

async function loadLabels() {
  const labels = await getJson("/v1/labels");
  state.labels = labels;
  state.types = new Map(labels.query_types.map((t) => [t.name, t]));
  const form = $("query-form");
  const chosen = form.type.value;
  form.type.replaceChildren(...labels.query_types.map((t) => new Option(reads(t, "…", "…"), t.name)));
  if (state.types.has(chosen)) form.type.value = chosen;
  form.activity.replaceChildren(...labels.activities.map((a) => new Option(words(a), a)));
  syncFormFields();
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(new Error(`could not read ${file.name}`));
    r.readAsDataURL(file);
  });
}

async function formQuery() {
  const form = $("query-form");
  const type = form.type.value;
  const row = state.types.get(type);
  if (!row) throw new ApiError(0, "the query types have not loaded yet");
  const body = { start: Number(form.start.value), end: Number(form.end.value) };
  if (row.given.includes("activity")) body.activity = form.activity.value;
  for (const opt of row.options) if (form[opt] && form[opt].value !== "") body[opt] = Number(form[opt].value);
  if (row.given.includes("object")) {
    const file = form.image.files[0];
    if (file) body.object_image = await readFile(file);
    else if (form.product.value) body.product = form.product.value;
    else throw new ApiError(0, "choose a catalog product or a picture of the object");
  }
  return { read_as: { type, ...body }, answer: await (await api(`/v1/query/${type}`, bodyWithStream(body))).json() };
}

$("query-form").addEventListener("input", () => { $("query-form").dataset.touched = "1"; });
$("query-form").type.addEventListener("change", syncFormFields);
$("query-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  run(formQuery, "query-form");
});

// -- asking in words --------------------------------------------------------------------------
async function askQuery() {
  const text = $("ask-text").value.trim();
  if (!text) throw new ApiError(0, "type a question first");
  try {
    return await (await api("/v1/ask", bodyWithStream({ text }))).json();
  } catch (err) {
    if (err.status === 404 && err.message === "Not Found") {
      throw new ApiError(404, "this runtime does not take questions in words; use the form below");
    }
    throw err;
  }
}

// The reading goes into the form too, so a near miss can be fixed by hand.
function fillForm(q) {
  const form = $("query-form");
  form.dataset.touched = "1";
  form.type.value = q.type;
  if (typeof q.activity === "number" && state.labels) form.activity.value = state.labels.activities[q.activity];
  else if (q.activity) form.activity.value = q.activity;
  if (q.product && state.products.includes(q.product)) form.product.value = q.product;
  form.start.value = q.start;
  form.end.value = q.end;
  if (q.k) form.k.value = q.k;
  syncFormFields();
}

$("ask-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  run(async () => {
    const result = await askQuery();
    if (result.read_as && result.read_as.type !== "happened") fillForm(result.read_as);
    return result;
  }, "ask-form");
});

async function run(fn, formId) {
  const button = $(formId).querySelector("button[type=submit]");
  button.disabled = true;
  $("answer").dataset.state = "busy";
  $("answer-error").textContent = "";
  try {
    const result = await fn();
    showAnswer(result);
  } catch (err) {
    $("answer-error").textContent = err.message;
    $("answer-error").dataset.unreachable = err.status ? "" : "1";  // cleared when the runtime answers again
    $("answer").dataset.state = "error";  // the answer before it is hidden (style.css), and off the timeline
    state.answer = null;
    redrawTimeline();
  } finally {
    button.disabled = false;
  }
}

// -- answers ----------------------------------------------------------------------------------
function describeQuery(q) {
  const row = state.types.get(q.type);
  const what = q.product ? `“${q.product}”` : q.object_image ? "the pictured object" : "…";
  const said = row ? reads(row, `“${words(q.activity)}”`, what) : `${q.type} query`;
  const top = row && row.options.includes("k") ? ` (top ${q.k ?? 3})` : "";
  return `${said.charAt(0).toUpperCase()}${said.slice(1)} in ${clock(q.start)}–${clock(q.end)}?${top}`;
}

// How each type's answer is shown: a line, and a drawing (returns its kind, "" for none). A type
// without an entry here still gets its status and coverage.
const SHOWN = {
  activity: {
    // scores rank the activities (a reader's add the class prior, so they can pass 1): how likely the
    // answer is right is its confidence, said apart
    summary: (a, part) => `Most likely: ${words(a.labels[0])} (score ${a.scores[a.labels[0]].toFixed(2)})${part}.`,
    draw: (plot, a) => { activityBars(plot, a.scores); return "bars"; },
  },
  object: {
    summary: (a, part) => {
      if (!a.times.length) return `No boxes in the covered part of the window${part}.`;
      const ext = a.extent ? ` seen ${clock(a.extent[0])}–${clock(a.extent[1])}` : "";
      return `${words(a.activity)}: ${a.times.length} boxes${ext}${part}.`;
    },
    draw: (plot, a) => {
      if (!a.times.length) return "";
      boxTrack(plot, a.times, a.boxes, a.window);
      return "track";
    },
  },
  time: {
    summary: (a, part) => {
      if (!a.intervals.length) return `No interval in the covered part of the window${part}.`;
      const [s, e] = a.intervals[0];
      return `${words(a.activity)}: best at ${clock(s)}–${clock(e)} of ${a.intervals.length}${part}.`;
    },
    draw: (plot, a) => {
      if (!a.intervals.length) return "";
      intervalStrip(plot, a.window, a.intervals, a.answered_spans);
      return "intervals";
    },
  },
};

function summary(a) {
  if (a.status === "no_memory") return `Nothing in memory for ${clock(a.window[0])}–${clock(a.window[1])}.`;
  if (a.status === "not_seen") return `Not seen: ${a.message || "no evidence of this in memory for the window"}.`;
  const part = a.status === "partial"
    ? ` (memory covers ${Math.round(100 * a.coverage.covered_fraction)} % of the window)` : "";
  return SHOWN[a.type] ? SHOWN[a.type].summary(a, part) : `Answered${part}.`;
}

// The memory reader's judgement of its answer: how likely it is right, or, when not seen, how
// likely it was seen at all; its best guess is still drawn below. Heads answers carry none.
function judgement(a) {
  if (a.confidence == null) return "";
  if (a.status === "not_seen") {
    const guess = SHOWN[a.type] ? SHOWN[a.type].summary(a, "") : "";
    return `p(seen) ${a.p_seen.toFixed(2)}. Best guess all the same: ${guess}`;
  }
  return `Confidence ${a.confidence.toFixed(2)} (p(seen) ${a.p_seen.toFixed(2)}, answered by the ${a.answered_by}).`;
}

// A question naming no product ("what happened in the last 5 minutes?"): its events, listed and
// drawn in the strip under the timeline (which the next poll of /v1/happened redraws).
function showHappened({ question, understood, answer: h }) {
  state.answer = { window: h.window };
  state.happened = h;
  state.happenedAt = Date.now();
  Object.assign($("answer").dataset, { state: "done", type: "happened", status: "answered" });
  $("answer-question").textContent = question ? `“${question}”` : "";
  $("answer-read-as").textContent = `Read as: ${understood}`;
  const ev = h.events;
  const shown = ev.slice(0, 8).map((e) => `${words(e.activity)} ${words(e.product)} at ${clock(e.start)} `
    + `(${e.confidence.toFixed(2)})`);
  $("answer-text").textContent = ev.length
    ? `${ev.length} event(s): ${shown.join(", ")}${ev.length > shown.length ? ", …" : ""}.`
    : "Nothing the memory has evidence of.";
  if (h.ood && h.ood.flag) $("answer-text").textContent += " The recent frames look unlike the training footage: "
    + "these events may be wrong.";
  $("answer-judgement").textContent = `${h.products.asked} products asked (${h.products.from}); `
    + "the events are drawn under the memory timeline.";
  $("answer-plot").toggleAttribute("hidden", true);
  $("answer-intervals").replaceChildren();
  redrawTimeline();
}

function showAnswer(result) {
  if (result.read_as && result.read_as.type === "happened") return showHappened(result);
  const { question, read_as: readAs, understood, answer: a } = result;
  state.answer = a;
  $("answer").dataset.state = "done";
  $("answer").dataset.type = a.type;
  $("answer-question").textContent = question ? `“${question}”` : "";
  $("answer-read-as").textContent = readAs ? `Read as: ${understood || describeQuery(readAs)}` : "";
  $("answer").dataset.status = a.status;  // not_seen answers are drawn apart (style.css)
  $("answer-text").textContent = summary(a);
  $("answer-judgement").textContent = judgement(a);
  if (result.events) {  // an object question: which products underwent its activity
    const products = [...new Set(result.events.map((e) => e.product))];
    $("answer-judgement").textContent += ` Products: ${products.join(", ") || "none found"}.`;
  }
  const plot = $("answer-plot");
  plot.replaceChildren();
  plot.dataset.kind = "";
  plot.removeAttribute("hidden");  // drawn at its laid-out width, so visible while drawing
  if (a.status !== "no_memory" && SHOWN[a.type]) plot.dataset.kind = SHOWN[a.type].draw(plot, a);
  plot.toggleAttribute("hidden", !plot.dataset.kind);  // an SVG element has no .hidden property
  const list = $("answer-intervals");
  list.replaceChildren(...(a.intervals || []).map(([s, e, p], i) => {
    const li = document.createElement("li");
    li.textContent = `${clock(s)} – ${clock(e)}   p = ${p.toFixed(2)}`;  // the <ol> numbers them
    return li;
  }));
  redrawTimeline();
}

// -- catalog ----------------------------------------------------------------------------------
// Crops as blob URLs, kept while the product's version ("added") is unchanged.
async function cropUrl(url, added, keep) {
  const key = `${url}@${added}`;
  if (!state.crops.has(key)) {
    const res = await api(url);
    state.crops.set(key, URL.createObjectURL(await res.blob()));
  }
  keep.add(key);
  return state.crops.get(key);
}

function dropUnused(keep) {
  for (const [key, blobUrl] of state.crops) {
    if (!keep.has(key)) {
      URL.revokeObjectURL(blobUrl);
      state.crops.delete(key);
    }
  }
}

function pickProduct(name) {
  const form = $("query-form");
  form.product.value = name;
  form.image.value = "";
  const takesObject = (name) => state.types.get(name)?.given.includes("object");
  if (!takesObject(form.type.value)) form.type.value = [...state.types.keys()].find(takesObject) ?? form.type.value;
  syncFormFields();
  $("query-details").open = true;
}

async function loadCatalog() {
  let products;
  try {
    products = (await getJson("/v1/catalog")).products;
  } catch (err) {
    $("catalog").textContent = err.status === 404 ? "This runtime has no product catalog." : err.message;
    return;
  }
  state.products = products.map((p) => p.name);
  const sel = $("query-form").product;
  const chosen = sel.value;
  sel.replaceChildren(new Option("—", ""), ...state.products.map((n) => new Option(n, n)));
  sel.value = state.products.includes(chosen) ? chosen : "";
  if (!products.length) {
    $("catalog").textContent = "The catalog is empty (lvm-edge catalog add NAME PICTURE…).";
    return;
  }
  const keep = new Set();
  const cards = await Promise.all(products.map(async (p) => {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "product";
    card.title = `ask about ${p.name}`;
    card.addEventListener("click", () => pickProduct(p.name));
    const imgs = document.createElement("div");
    imgs.className = "crops";
    for (const [i, url] of p.crop_urls.entries()) {
      const img = document.createElement("img");
      img.alt = `${p.name} #${i + 1}`;
      try {
        img.src = await cropUrl(url, p.added, keep);
      } catch (_) { img.alt += " (missing)"; }
      imgs.appendChild(img);
    }
    const label = document.createElement("span");
    label.textContent = `${p.name} · ${p.crops} crop${p.crops === 1 ? "" : "s"}`;
    card.append(imgs, label);
    return card;
  }));
  $("catalog").replaceChildren(...cards);
  dropUnused(keep);
}

// -- start ------------------------------------------------------------------------------------
let timers = [];

async function start() {
  timers.forEach(clearInterval);
  timers = [];
  await poll();
  if (!$("token-form").hidden) return;  // wait for the token before anything else
  try {
    await loadLabels();
  } catch (err) {
    banner(err.message);
  }
  loadCatalog();
  timers.push(setInterval(() => { if (!document.hidden) poll(); }, POLL_MS));
  timers.push(setInterval(() => { if (!document.hidden) loadCatalog(); }, CATALOG_MS));
}

// another stream on the page (picked, or the shown one removed): the last answer was about the old one
function forgetAnswer() {
  forgetZones();
  state.answer = null;
  state.happened = null;
  state.happenedAt = 0;
  delete $("query-form").dataset.touched;
  $("answer").dataset.state = "idle";  // hides the answer (style.css)
}

onStreamChange(() => {  // its own status, timeline and window
  forgetAnswer();
  poll();
});
window.addEventListener("resize", redrawTimeline);
syncFormFields();
start();
