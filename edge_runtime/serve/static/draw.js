// Drawing for the dashboard: the memory timeline, activity bars, an object's box track. Plain SVG.
// Every function takes an <svg> element and redraws it from scratch: the page redraws on each poll,
// and a full redraw of a few hundred elements is cheaper than tracking what changed.

const SVG_NS = "http://www.w3.org/2000/svg";

// a label as staff read it: "pick_up" -> "pick up"
export const words = (name) => String(name).replaceAll("_", " ");

export function el(tag, attrs = {}, parent = null, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
}

// Stream seconds as h:mm:ss / m:ss (sub-second only for short spans).
export function clock(t, fine = false) {
  if (t === null || t === undefined || !isFinite(t)) return "–";
  const neg = t < 0;
  let s = Math.abs(t);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const sec = fine ? s.toFixed(1).padStart(4, "0") : String(Math.floor(s)).padStart(2, "0");
  const body = h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  return (neg ? "-" : "") + body;
}

// A tick step (seconds) giving about `n` ticks over `span`.
function tickStep(span, n) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600];
  for (const s of steps) if (span / s <= n) return s;
  return steps[steps.length - 1];
}

function wallClock(origin, t) {
  const d = new Date((origin + t) * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

// The timeline's time axis for a width: [lo, hi] (the memory, the stream's now, the asked window)
// and x(t). The events strip under it uses the same, so an event sits under its time.
export function timelineScale(W, tl, answer) {
  const pad = { l: 26, r: 26 };  // room for the first and last tick labels
  const now = tl.stream_time ?? 0;
  let lo = tl.coverage.start ?? 0;
  let hi = Math.max(now, tl.coverage.end ?? 0);
  if (answer && answer.window) {
    lo = Math.min(lo, answer.window[0]);
    hi = Math.max(hi, answer.window[1]);
  }
  if (!(hi > lo)) hi = lo + 60;
  return { lo, hi, now, pad, x: (t) => pad.l + ((t - lo) / (hi - lo)) * (W - pad.l - pad.r) };
}

// The memory timeline. `tl`: /v1/timeline; `answer`: the last answer (window, intervals, extent) or null.
export function timeline(svg, tl, answer) {
  clear(svg);
  const W = svg.clientWidth || 900;
  const H = tl.wall_origin ? 130 : 116;  // live sources: a second tick row with the local clock
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("height", H);
  const { lo, hi, now, pad, x } = timelineScale(W, tl, answer);
  const span = (a, b, y, h, cls, title) => {
    const r = el("rect", { x: x(a), y, width: Math.max(1.5, x(b) - x(a)), height: h, class: cls }, svg);
    if (title) el("title", {}, r, title);
    return r;
  };

  el("text", { x: 2, y: 12, class: "row-label" }, svg, "memory");
  el("rect", { x: pad.l, y: 18, width: W - pad.l - pad.r, height: 26, class: "tl-empty" }, svg);
  for (const [a, b] of tl.covered) span(a, b, 18, 26, "tl-covered", `covered ${clock(a)}–${clock(b)}`);
  for (const [a, b] of tl.gaps) {
    if (b < lo || a > hi) continue;
    span(Math.max(a, lo), Math.min(b, hi), 18, 26, "tl-gap", `gap ${clock(a)}–${clock(b)}: no frames`);
  }
  if (tl.pending) {
    span(tl.pending[0], tl.pending[1], 18, 26, "tl-pending", `${tl.pending_frames} frames not yet committed`);
  }
  if (tl.outage_since !== null && tl.outage_since !== undefined) {
    span(tl.outage_since, hi, 18, 26, "tl-outage", `source out since ${clock(tl.outage_since)}`);
  }

  el("text", { x: 2, y: 60, class: "row-label" }, svg, "answer");
  if (answer && answer.window) {
    const [a, b] = answer.window;
    span(a, b, 66, 22, "tl-window", `asked window ${clock(a)}–${clock(b)}`);
    for (const [sa, sb] of answer.answered_spans || []) span(sa, sb, 66, 3, "tl-answered", "answered from memory");
    // worst first, so the best interval is drawn on top; a label only where it fits
    const ivs = answer.intervals || [];
    const pMax = Math.max(...ivs.map((iv) => iv[2]), 1e-9);
    ivs.map((iv, i) => [iv, i]).reverse().forEach(([[s, e, p], i]) => {
      const r = span(s, e, 66, 22, "tl-interval", `#${i + 1} ${clock(s)}–${clock(e)} p=${p.toFixed(2)}`);
      r.setAttribute("fill-opacity", (0.3 + 0.7 * (p / pMax)).toFixed(2));
      if (x(e) - x(s) > 22) el("text", { x: x(s) + 3, y: 82, class: "tl-interval-label" }, svg, `#${i + 1}`);
    });
    if (answer.extent) {
      const [s, e] = answer.extent;
      span(s, e, 66, 22, "tl-extent", `object seen ${clock(s)}–${clock(e)}`);
    }
  }

  const step = tickStep(hi - lo, Math.max(2, Math.floor(W / 90)));
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) {
    el("line", { x1: x(t), x2: x(t), y1: 92, y2: 97, class: "tick" }, svg);
    el("text", { x: x(t), y: 110, class: "tick-label", "text-anchor": "middle" }, svg, clock(t));
    if (tl.wall_origin) {
      el("text", { x: x(t), y: 124, class: "tick-label wall", "text-anchor": "middle" }, svg,
         wallClock(tl.wall_origin, t));
    }
  }
  el("line", { x1: x(now), x2: x(now), y1: 14, y2: 92, class: "tl-now" }, svg);
}

// What happened (POST /v1/happened): one row per activity, each event a bar under its time on the
// timeline's axis, shaded by its confidence; its product, times and confidence on hover.
export function eventStrip(svg, tl, answer, happened) {
  clear(svg);
  const events = (happened && happened.events) || [];
  const failed = happened && happened.error;
  const acts = [...new Set(events.map((e) => e.activity))].sort();
  const W = svg.clientWidth || 900;
  const row = 16;
  const H = 16 + Math.max(1, acts.length) * row + 4;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("height", H);
  const { lo, hi, x } = timelineScale(W, tl, answer);
  const label = failed ? `what happened: ${happened.error}`
    : happened ? `what happened ${clock(happened.window[0])}–${clock(happened.window[1])}: ${events.length} event(s)`
      : "what happened: not asked yet";
  el("text", { x: 2, y: 11, class: "row-label" }, svg, label);
  if (happened && !failed) {
    const [a, b] = happened.window;
    el("rect", { x: x(Math.max(a, lo)), y: 15, width: Math.max(1, x(Math.min(b, hi)) - x(Math.max(a, lo))),
                 height: Math.max(1, acts.length) * row, class: "ev-window" }, svg);
  }
  events.forEach((e) => {
    const y = 16 + acts.indexOf(e.activity) * row;
    const r = el("rect", { x: x(e.start), y: y + 1, width: Math.max(3, x(e.end) - x(e.start)), height: row - 3,
                           class: "ev", "fill-opacity": (0.35 + 0.65 * e.confidence).toFixed(2) }, svg);
    r.dataset.activity = e.activity;
    r.dataset.product = e.product;
    el("title", {}, r, `${e.activity} ${e.product} ${clock(e.start)}–${clock(e.end)} `
                       + `confidence ${e.confidence.toFixed(2)}`);
  });
  acts.forEach((name, i) => el("text", { x: 2, y: 16 + i * row + 11, class: "ev-label" }, svg, name));
}

// Activity scores as horizontal bars, best first.
export function activityBars(svg, scores) {
  clear(svg);
  const items = Object.entries(scores).sort((a, b) => b[1] - a[1]);
  const W = svg.clientWidth || 520;
  const row = 22;
  const H = items.length * row + 6;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("height", H);
  const left = 96;
  const barW = W - left - 52;
  // a reader's scores add the class prior on long windows and can pass 1: the track is the larger
  const full = Math.max(1, ...items.map(([, s]) => s));
  items.forEach(([name, s], i) => {
    const y = 3 + i * row;
    el("text", { x: left - 6, y: y + 14, "text-anchor": "end", class: "bar-label" }, svg, words(name));
    el("rect", { x: left, y: y + 2, width: barW, height: row - 6, class: "bar-track" }, svg);
    const bar = el("rect", { x: left, y: y + 2, width: Math.max(1, barW * s / full), height: row - 6,
                             class: i === 0 ? "bar bar-top" : "bar" }, svg);
    bar.dataset.label = name;
    el("text", { x: left + barW + 6, y: y + 14, class: "bar-value" }, svg, s.toFixed(2));
  });
}

// An object's boxes over the window: the boxes in a frame-shaped plot (older ones fainter), and the
// box centre's x and y against time. Boxes are [x1, y1, x2, y2] in 0..1 of the frame.
export function boxTrack(svg, times, boxes, window) {
  clear(svg);
  const W = svg.clientWidth || 520;
  const fw = 160;
  const fh = 120;
  // a phone's width: the time plot goes under the frame, full width, its legend on a line of its own
  const narrow = W < fw + 40 + 240;
  const H = narrow ? 14 + fh + 36 + fh + 32 : 150;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("height", H);
  const f = el("g", { transform: "translate(4,14)" }, svg);
  el("text", { x: 0, y: -4, class: "row-label" }, f, "where (frame)");
  el("rect", { x: 0, y: 0, width: fw, height: fh, class: "frame" }, f);
  const n = boxes.length;
  const every = Math.max(1, Math.ceil(n / 60));  // at most ~60 outlines stay readable
  boxes.forEach(([x1, y1, x2, y2], i) => {
    if (i % every && i !== n - 1) return;
    const age = n > 1 ? i / (n - 1) : 1;
    const r = el("rect", { x: x1 * fw, y: y1 * fh, width: Math.max(1, (x2 - x1) * fw),
                           height: Math.max(1, (y2 - y1) * fh), class: "box",
                           "stroke-opacity": (0.15 + 0.85 * age).toFixed(2) }, f);
    el("title", {}, r, `${clock(times[i], true)}`);
  });
  const pts = boxes.map(([x1, y1, x2, y2]) => `${((x1 + x2) / 2) * fw},${((y1 + y2) / 2) * fh}`);
  if (pts.length > 1) el("polyline", { points: pts.join(" "), class: "box-path" }, f);

  const gx = narrow ? 4 : fw + 40;
  const gw = W - gx - 10;
  const g = el("g", { transform: `translate(${gx},${narrow ? 14 + fh + 36 : 14})` }, svg);
  el("text", { x: 0, y: -4, class: "row-label" }, g, "box centre over the window");
  el("rect", { x: 0, y: 0, width: gw, height: fh, class: "plot" }, g);
  const [a, b] = window;
  const tx = (t) => ((t - a) / Math.max(1e-9, b - a)) * gw;
  const line = (pick, cls) => {
    const p = boxes.map((bx, i) => `${tx(times[i])},${pick(bx) * fh}`).join(" ");
    if (boxes.length === 1) el("circle", { cx: tx(times[0]), cy: pick(boxes[0]) * fh, r: 3, class: cls }, g);
    else el("polyline", { points: p, class: cls }, g);
  };
  line(([x1, , x2]) => (x1 + x2) / 2, "trace-x");
  line(([, y1, , y2]) => (y1 + y2) / 2, "trace-y");
  el("text", { x: 0, y: fh + 13, class: "tick-label" }, g, clock(a));
  el("text", { x: gw, y: fh + 13, "text-anchor": "end", class: "tick-label" }, g, clock(b));
  const ly = narrow ? fh + 27 : fh + 13;
  el("text", { x: narrow ? 0 : gw / 2, y: ly, "text-anchor": narrow ? "start" : "middle", class: "legend-x" }, g,
     "x (left→right)");
  el("text", { x: narrow ? gw : gw / 2 + 90, y: ly, "text-anchor": narrow ? "end" : "middle", class: "legend-y" }, g,
     "y (top→bottom)");
}

// Time answers zoomed to the asked window: one row per interval, best first, shaded by probability.
export function intervalStrip(svg, window, intervals, answeredSpans) {
  clear(svg);
  const W = svg.clientWidth || 520;
  const row = 20;
  const H = 22 + intervals.length * row + 18;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("height", H);
  const left = 36;
  const right = 60;
  const [a, b] = window;
  const x = (t) => left + ((t - a) / Math.max(1e-9, b - a)) * (W - left - right);
  el("text", { x: left, y: 11, class: "row-label" }, svg, "when, within the asked window");
  el("rect", { x: left, y: 16, width: W - left - right, height: intervals.length * row + 2, class: "plot" }, svg);
  for (const [sa, sb] of answeredSpans || []) {
    el("rect", { x: x(sa), y: 16, width: Math.max(1, x(sb) - x(sa)), height: 3, class: "tl-answered" }, svg);
  }
  const pMax = Math.max(...intervals.map((iv) => iv[2]), 1e-9);
  intervals.forEach(([s, e, p], i) => {
    const y = 20 + i * row;
    el("text", { x: left - 6, y: y + 12, "text-anchor": "end", class: "bar-label" }, svg, `#${i + 1}`);
    const r = el("rect", { x: x(s), y: y + 1, width: Math.max(2, x(e) - x(s)), height: row - 6, class: "tl-interval",
                           "fill-opacity": (0.3 + 0.7 * (p / pMax)).toFixed(2) }, svg);
    el("title", {}, r, `${clock(s)}–${clock(e)} p=${p.toFixed(3)}`);
    el("text", { x: W - right + 6, y: y + 12, class: "bar-value" }, svg, p.toFixed(2));
  });
  const yb = 20 + intervals.length * row + 14;
  el("text", { x: left, y: yb, class: "tick-label" }, svg, clock(a));
  el("text", { x: W - right, y: yb, "text-anchor": "end", class: "tick-label" }, svg, clock(b));
}

// A stream's checkout zones in a frame-shaped plot: each polygon outlined and labelled, in image
// coordinates 0..1 (x right, y down). `zones`: {name: [[x, y], ...]}; `editing`: each corner gets a
// handle to drag (data-zone, data-index). Returns the frame's place in the svg, for the editor to
// turn a pointer back into image coordinates.
export const ZONE_NAMES = ["basket", "scanner", "counter", "bag", "light"];

export function zoneMap(svg, zones, editing = false) {
  clear(svg);
  const W = Math.min(svg.clientWidth || 480, 640);
  const fw = W - 8;
  const fh = Math.round(fw * 3 / 4);
  const H = fh + 8;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("height", H);
  const frame = { x: 4, y: 4, w: fw, h: fh };
  const g = el("g", { transform: `translate(${frame.x},${frame.y})` }, svg);
  el("rect", { x: 0, y: 0, width: fw, height: fh, class: "frame" }, g);
  const named = ZONE_NAMES.filter((name) => zones && zones[name]);
  if (!named.length) el("text", { x: fw / 2, y: fh / 2, "text-anchor": "middle", class: "row-label" }, g, "no zones yet");
  for (const name of named) {
    const pts = zones[name];
    const poly = el("polygon", { points: pts.map(([x, y]) => `${x * fw},${y * fh}`).join(" "),
                                 class: `zone zone-${name}` }, g);
    poly.dataset.zone = name;
    const cx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
    const cy = pts.reduce((s, p) => s + p[1], 0) / pts.length;
    el("text", { x: cx * fw, y: cy * fh + 4, "text-anchor": "middle", class: `zone-label zone-${name}` }, g, name);
  }
  if (editing) {
    for (const name of named) {
      zones[name].forEach(([x, y], i) => {
        const h = el("circle", { cx: x * fw, cy: y * fh, r: 6, class: `zone-handle zone-${name}` }, g);
        Object.assign(h.dataset, { zone: name, index: String(i) });
      });
    }
  }
  return frame;
}
