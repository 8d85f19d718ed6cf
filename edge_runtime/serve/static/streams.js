// The stream selector: shown when the runtime serves more than one stream. The page's status,
// timeline, queries and questions then name the chosen stream; with none chosen the runtime's
// default stream answers, as it does for a client that never heard of streams.

const $ = (id) => document.getElementById(id);
let chosen = "";  // "" = the runtime's default stream

export const withStream = (path) => (chosen ? `${path}?stream=${encodeURIComponent(chosen)}` : path);
export const bodyWithStream = (body) => (chosen ? { ...body, stream: chosen } : body);
export const chosenStream = () => chosen;

// The chosen stream was removed (its status is a 404): back to the default. False if none was chosen.
export function forgetStream() {
  const had = chosen !== "";
  chosen = "";
  return had;
}

// The runtime's default stream was removed (its status is a 409): show ``name`` instead.
export function chooseStream(name) {
  chosen = name;
}

// streams: GET /v1/streams's list (or [] with one stream); shown: the stream whose status is on the page
export function showStreams(streams, shown) {
  $("stream-pick").hidden = streams.length < 2;
  if (streams.length < 2) return;
  const sel = $("stream-select");
  const text = (s) => `${s.name}${s.default ? " (default)" : ""} · ${s.state}`;
  const same = sel.options.length === streams.length
    && streams.every((s, i) => sel.options[i].value === s.name);
  if (same) streams.forEach((s, i) => { sel.options[i].textContent = text(s); });
  else sel.replaceChildren(...streams.map((s) => new Option(text(s), s.name)));
  if (document.activeElement !== sel) sel.value = shown;
}

export function onStreamChange(fn) {
  $("stream-select").addEventListener("change", () => {
    chosen = $("stream-select").value;
    fn(chosen);
  });
}
