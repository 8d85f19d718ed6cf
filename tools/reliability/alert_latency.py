"""Alert latency in wall time: how long after a checkout event ends its alert is raised (stored in the
outbox) and delivered (on the store's broker, and on a webhook).

A real ``lvm-edge run`` (tools/reliability/common.py's RunProcess: the CLI in a subprocess) streams
``--lanes`` demo lanes (``demo://checkout?seed=S&shrink=B,P,L``) paced at real time (``--realtime``), so
stream time follows wall time as a camera's does, with the ``bagged_without_scan`` rule at its defaults,
an MQTT sink to a Mosquitto started here on loopback and a webhook sink to an HTTP server here. This
tool meanwhile:

- polls ``/metrics`` every ``--poll`` seconds for each lane's ``lvm_frames_in_total`` (the intake's
  count of frames received from the source), so it knows, to within one poll, the wall time each frame
  reached the runtime (frame k of a fresh lane is stream time k / fps);
- subscribes to the lanes' alert topic on the broker and records when each alert id first arrives;
- records when each alert id first reaches the webhook.

At the end it reads every alert from the runtime's outbox (``alerts.db``): its ``end`` (the end of the
evidence event the rule read: the bag, for ``bagged_without_scan``; the model's event, right or wrong),
``stream_time`` (coverage end of the commit its evaluation read) and ``raised_at`` (wall clock when it
was stored). Per alert, with E the wall time the first frame at or after the event's end reached the
runtime (the middle of the poll bracket that frame arrived in):

    stream     stream_time - end          (what tools/accuracy/alerts_eval.py reports)
    raised     raised_at - E
    mqtt       first receipt by a subscriber on the broker (loopback) - E
    webhook    first receipt by the webhook - E

and reports median / p95 / max of each next to the target: one clip period (clip_frames / fps of the
bundle) + 2 s. Writes the JSON to ``--json``.

    python -m tools.reliability.alert_latency --json docs/accuracy/alert_latency.json
    python -m tools.reliability.alert_latency --lanes 2 --duration 120      # a short look
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from tools.reliability.common import REPO, RunProcess, ScenarioError, default_bundle, percentile

SITE = "latency"
RULE = "bagged_without_scan"
TARGET_EXTRA_S = 2.0          # the target: p95 at most one clip period + 2 s
DEFAULT_SHRINK = "0.5,0.5,0"  # half the items bagged unscanned, half passed around the scanner
DEFAULT_LANES = 6
DEFAULT_DURATION_S = 900.0
DEFAULT_POLL_S = 0.1
DEFAULT_SEED = 3

_FRAMES_IN = re.compile(r'^lvm_frames_in_total\{([^}]*)\}\s+(\S+)\s*$', re.MULTILINE)
_STREAM_LABEL = re.compile(r'stream="((?:[^"\\]|\\.)*)"')


class LatencyError(RuntimeError):
    """What stops the measurement (one line)."""


# -- pure parts (tests/test_alert_latency.py) --------------------------------------------------------
def parse_frames_in(text: str) -> dict[str, int]:
    """Prometheus text -> {stream: lvm_frames_in_total}."""
    out: dict[str, int] = {}
    for labels, value in _FRAMES_IN.findall(text):
        m = _STREAM_LABEL.search(labels)
        if m is not None:
            out[m.group(1)] = int(float(value))
    return out


def end_frame(end_s: float, fps: float) -> int:
    """The index of the first frame at or after stream time ``end_s`` (frame k is at k / fps)."""
    return max(0, math.ceil(end_s * fps - 1e-6))


def stats(values: list[float]) -> dict[str, Any]:
    """n, median, p95 (nearest rank, as the other reliability tools), max; seconds rounded to 0.01."""
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    return {"n": len(values), "median": round(statistics.median(values), 2), "p95": round(percentile(values, 95), 2),
            "max": round(max(values), 2)}


class FrameClock:
    """When each frame of each lane reached the runtime, from polls of its frame counter: a poll sent at
    ``a`` and answered at ``b`` read the counter at some instant in [a, b]. Frame k (0-based) arrived
    after the last poll that still read ``<= k`` was sent and no later than the first poll that read
    ``> k`` was answered."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float, int]]] = {}
        self._counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def add(self, sent: float, answered: float, counts: dict[str, int]) -> None:
        with self._lock:
            for stream, n in counts.items():
                rows = self.samples.setdefault(stream, [])
                if rows and n < rows[-1][2]:
                    raise LatencyError(f"{stream}: frames_in went back from {rows[-1][2]} to {n} (a restart?)")
                rows.append((sent, answered, n))

    def frames(self, stream: str) -> int:
        rows = self.samples.get(stream) or []
        return rows[-1][2] if rows else 0

    def bounds(self, stream: str, k: int) -> tuple[float | None, float] | None:
        """(earliest, latest) wall time frame ``k`` can have arrived; earliest is None when no poll saw
        the counter below k + 1; None when no poll saw frame k at all."""
        rows = self.samples.get(stream) or []
        counts = self._counts.get(stream)
        if counts is None or len(counts) != len(rows):
            counts = self._counts[stream] = [n for _, _, n in rows]
        i = bisect.bisect_left(counts, k + 1)
        if i >= len(rows):
            return None
        return (rows[i - 1][0] if i > 0 else None), rows[i][1]

    def arrival(self, stream: str, k: int) -> tuple[float, float] | None:
        """(estimate, half-width): the middle of ``bounds`` (its latest end when there is no earliest)."""
        b = self.bounds(stream, k)
        if b is None:
            return None
        lo, hi = b
        if lo is None:
            return hi, 0.0
        return (lo + hi) / 2, (hi - lo) / 2

    def behind_pace(self, stream: str, fps: float) -> float | None:
        """How far the lane's intake fell behind real-time pacing: the most, over its frames, by which a
        frame surely arrived after origin + k / fps (0 or less: it kept up); None without polls."""
        origin = self.pace_origin(stream, fps)
        if origin is None:
            return None
        lags = [b[0] - (origin + k / fps) for k in range(self.frames(stream))
                if (b := self.bounds(stream, k)) is not None and b[0] is not None]
        return max(lags, default=None)

    def pace_origin(self, stream: str, fps: float) -> float | None:
        """The wall time of stream time 0 under real-time pacing: frame k is released no earlier than
        origin + k / fps, so origin <= (latest arrival of k) - k / fps for every k; the tightest of them."""
        rows = self.samples.get(stream) or []
        best, prev = None, 0
        for _, hi, n in rows:  # the frames first seen in this poll: the last of them is the tightest
            if n > prev:
                v = hi - (n - 1) / fps
                best = v if best is None else min(best, v)
                prev = n
        return best


def alert_rows(alerts: list[dict[str, Any]], clock: FrameClock, fps: float, mqtt_rx: dict[str, float],
               hook_rx: dict[str, float]) -> list[dict[str, Any]]:
    """One row per alert: its event end, when the frame at that end arrived, and the latencies."""
    origins: dict[str, float | None] = {}
    rows = []
    for a in sorted(alerts, key=lambda x: x["raised_at"]):
        stream = a["stream"]
        ends = [float(e["end"]) for e in a.get("evidence") or [] if isinstance(e, dict) and "end" in e]
        end = max(ends) if ends else float(a["end"])
        k = end_frame(end, fps)
        seen = clock.frames(stream)
        clamped = k >= seen  # the event ends after the lane's last frame: that frame is the latest it can know
        arr = clock.arrival(stream, min(k, seen - 1)) if seen else None
        if stream not in origins:
            origins[stream] = clock.pace_origin(stream, fps)
        origin = origins[stream]
        row: dict[str, Any] = {"id": a["id"], "stream": stream, "product": a.get("product"), "end_s": round(end, 2),
                               "end_frame": k, "end_frame_clamped": clamped,
                               "commit_stream_time": a.get("stream_time"), "raised_at": a["raised_at"],
                               "stream_s": None if a.get("stream_time") is None else round(a["stream_time"] - end, 2)}
        if arr is not None:
            e_wall, half = arr
            row.update(end_wall=round(e_wall, 3), end_wall_pm_s=round(half, 3),
                       raised_s=round(a["raised_at"] - e_wall, 2),
                       mqtt_s=round(mqtt_rx[a["id"]] - e_wall, 2) if a["id"] in mqtt_rx else None,
                       webhook_s=round(hook_rx[a["id"]] - e_wall, 2) if a["id"] in hook_rx else None)
        if origin is not None:
            row["raised_paced_s"] = round(a["raised_at"] - (origin + end), 2)
        commit = a.get("stream_time")
        if commit is not None:  # coverage end = the last frame of the commit + one frame period
            c_arr = clock.arrival(stream, max(0, round(commit * fps) - 1))
            if c_arr is not None:
                row["evaluation_s"] = round(a["raised_at"] - c_arr[0], 2)
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]], target_s: float) -> dict[str, Any]:
    keys = ("stream_s", "raised_s", "mqtt_s", "webhook_s", "raised_paced_s", "evaluation_s")
    lat = {k[:-2]: stats([r[k] for r in rows if r.get(k) is not None]) for k in keys}
    met = {k: (None if lat[k]["p95"] is None else lat[k]["p95"] <= target_s)
           for k in ("stream", "raised", "mqtt", "webhook")}
    return {"latency_s": lat, "target_met": met}


# -- the receivers ---------------------------------------------------------------------------------
class Receipts:
    """First arrival (wall clock) of each alert id, and how many copies came."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.copies = 0
        self._lock = threading.Lock()

    def got(self, alert_id: str) -> None:
        now = time.time()
        with self._lock:
            self.copies += 1
            self.first.setdefault(alert_id, now)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.first)


class Webhook:
    """A local HTTP server that answers every POST 200 and records when each alert's body came in."""

    def __init__(self) -> None:
        self.receipts = Receipts()
        receipts = self.receipts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    alert_id = str(json.loads(body)["id"])
                except (ValueError, KeyError, TypeError):
                    alert_id = self.headers.get("Idempotency-Key") or "?"
                receipts.got(alert_id)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def start(self) -> "Webhook":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Poller:
    """Reads /metrics every ``every`` seconds into a FrameClock, on its own thread."""

    def __init__(self, rt: RunProcess, clock: FrameClock, every: float) -> None:
        self.rt, self.clock, self.every = rt, clock, every
        self.stop = threading.Event()
        self.polls = 0
        self.poll_s: list[float] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="metrics-poller", daemon=True)

    def _run(self) -> None:
        import httpx

        nxt = time.monotonic()
        while not self.stop.is_set():
            sent = time.time()
            try:
                r = self.rt.client.get(self.rt.url + "/metrics", timeout=5)
                answered = time.time()
                if r.status_code == 200:
                    self.clock.add(sent, answered, parse_frames_in(r.text))
                    self.polls += 1
                    self.poll_s.append(answered - sent)
            except httpx.TransportError:
                pass  # not listening yet
            except LatencyError as err:
                self.error = str(err)
                return
            nxt += self.every
            self.stop.wait(max(0.0, nxt - time.monotonic()))


# -- the run ---------------------------------------------------------------------------------------
def read_outbox(state_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{state_dir / 'alerts.db'}?mode=ro", uri=True)
    try:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM alerts ORDER BY seq")]
    finally:
        db.close()


def bundle_clip(bundle: Path) -> tuple[int, float]:
    """(clip_frames, fps) from the bundle's manifest."""
    try:
        stream = json.loads((bundle / "manifest.json").read_text())["config"]["stream"]
        return int(stream["clip_frames"]), float(stream["fps"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LatencyError(f"--bundle {bundle}: no readable manifest.json with config.stream "
                           f"(clip_frames, fps): {err}") from None


def measure(bundle: Path, lanes: int, duration: float, shrink: str, seed: int, threads: int, poll: float,
            workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    from edge_runtime.alerts.subscriber import SubscribeError, subscribe
    from tools.reliability.mosquitto import Mosquitto

    clip_frames, fps = bundle_clip(bundle)
    clip_s = clip_frames / fps
    target = clip_s + TARGET_EXTRA_S
    broker = Mosquitto(workdir / "broker").start()
    hook = Webhook().start()
    mqtt = Receipts()
    try:
        sub = subscribe(broker.url, lambda _topic, alert: mqtt.got(str(alert.get("id"))), site=SITE, timeout=20)
    except SubscribeError as err:
        broker.stop()
        hook.close()
        raise LatencyError(f"subscriber: {err}") from None
    config = workdir / "alerts.json.yaml"  # JSON is YAML
    config.write_text(json.dumps({"alerts": {"site": SITE, "rules": {RULE: {}}, "mqtt": {"url": broker.url},
                                             "webhooks": [hook.url]}}, indent=1) + "\n")
    names = [f"lane{i + 1}" for i in range(lanes)]
    seeds = [seed + i for i in range(lanes)]
    sources = [f"{n}=demo://checkout?seed={s}&duration={duration:g}&shrink={shrink}" for n, s in zip(names, seeds)]
    args = ["--config", str(config), "--realtime", "--threads", str(threads), "--duration", f"{duration:g}",
            "--keep-serving"]
    for src in sources:
        args += ["--source", src]
    rt = RunProcess(args, workdir / "run", bundle=bundle, name="lvm-edge-run")
    clock = FrameClock()
    poller = Poller(rt, clock, poll)
    load_start = os.getloadavg()
    t0 = time.time()
    try:
        rt.start()
        poller.thread.start()
        rt.wait_ready(timeout=180)
        log(f"alert latency: {lanes} lanes x {duration:g} s at real time, shrink {shrink}; "
            f"clip period {clip_s:g} s, target p95 <= {target:g} s")
        next_note = time.monotonic() + 60
        while True:
            if poller.error:
                raise LatencyError(poller.error)
            streams = rt.get("/v1/streams").json()["streams"]
            if all(s["state"] in ("ended", "failed", "stopped") for s in streams):
                failed = [f"{s['name']}: {s['error']}" for s in streams if s["state"] != "ended"]
                if failed:
                    raise LatencyError(f"a lane did not end normally: {failed[0]}")
                break
            if time.monotonic() >= next_note:
                st = rt.status()["alerts"]
                log(f"alert latency: {time.time() - t0:.0f} s: stream time "
                    f"{min((s['coverage'] or {}).get('end') or 0 for s in streams):.0f} s, alerts stored "
                    f"{st.get('stored')}, received mqtt {len(mqtt.first)} webhook {len(hook.receipts.first)}")
                next_note += 60
            if not rt.alive():
                raise LatencyError(f"lvm-edge run exited: {rt.last_line()}")
            time.sleep(1.0)
        t_end = time.monotonic() + 60  # the last evaluations and deliveries
        while time.monotonic() < t_end and (rt.status()["alerts"].get("pending") or 0) > 0:
            time.sleep(0.5)
        st = rt.status()["alerts"]
        stored = read_outbox(rt.state_dir)
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:  # the subscriber may get the last ones a little after the PUBACK
            ids = {a["id"] for a in stored}
            if ids <= set(mqtt.snapshot()) and ids <= set(hook.receipts.snapshot()):
                break
            time.sleep(0.2)
        poller.stop.set()
        poller.thread.join(5)
        code = rt.stop()
        alerts = read_outbox(rt.state_dir)
        wall = time.time() - t0
    finally:
        poller.stop.set()
        rt.close()
        sub.disconnect()
        sub.loop_stop()
        hook.close()
        broker.stop()
    mqtt_rx, hook_rx = mqtt.snapshot(), hook.receipts.snapshot()
    rows = alert_rows(alerts, clock, fps, mqtt_rx, hook_rx)
    brackets = [r["end_wall_pm_s"] for r in rows if "end_wall_pm_s" in r]
    lags = [x for x in (clock.behind_pace(n, fps) for n in names) if x is not None]
    per_lane = {n: sum(a["stream"] == n for a in alerts) for n in names}
    return {
        "tool": "tools/reliability/alert_latency.py", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(load_start),
        "bundle": os.path.relpath(bundle, REPO) if bundle.is_relative_to(REPO) else str(bundle),
        "clip_frames": clip_frames, "fps": fps, "clip_period_s": clip_s, "target_p95_s": target,
        "rule": RULE, "lanes": lanes, "sources": sources, "duration_s": duration, "shrink": shrink, "threads": threads,
        "poll_s": poll, "polls": poller.polls,
        "metrics_poll_s": stats(poller.poll_s),
        "event_end": "the end of the evidence event each alert names (for bagged_without_scan the bag event the "
                     "rule read from what_happened on the model's memory, right or wrong); E = wall time the first "
                     "frame at or after that end reached the runtime's intake (lvm_frames_in_total polled from "
                     "/metrics; the middle of the poll bracket)",
        "end_frame_bracket_half_width_s": stats(brackets),
        "intake_behind_pace_s": {"max": round(max(lags), 3) if lags else None},  # <= 0: the intake kept pace
        "alerts": len(alerts), "alerts_per_lane": per_lane,
        "received": {"mqtt": len(set(mqtt_rx) & {a["id"] for a in alerts}),
                     "webhook": len(set(hook_rx) & {a["id"] for a in alerts})},
        "copies_received": {"mqtt": mqtt.copies, "webhook": hook.receipts.copies},
        "pending_at_end": st.get("pending"), "runtime_exit": code, "wall_s": round(wall, 1),
        **summarise(rows, target), "rows": rows,
    }


def _machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    return {"cpu": cpu, "cores": os.cpu_count(), "commit": commit, "load_avg_at_start": round(load_start[0], 2),
            "load_avg_at_end": round(os.getloadavg()[0], 2)}


def table(res: dict[str, Any]) -> str:
    lat, met = res["latency_s"], res["target_met"]
    lines = [(f"{res['alerts']} alerts on {res['lanes']} lanes x {res['duration_s']:g} s (target p95 <= "
              f"{res['target_p95_s']:g} s)"), "| latency from the event's end | n | median | p95 | max | target met |",
             "|---|---|---|---|---|---|"]
    for key, what in (("stream", "commit that raised it (stream time)"),
                      ("raised", "raised, stored in the outbox (wall)"),
                      ("mqtt", "received from the broker (wall)"), ("webhook", "received by the webhook (wall)")):
        s = lat[key]
        verdict = "n/a" if met.get(key) is None else ("yes" if met[key] else "no")
        lines.append(f"| {what} | {s['n']} | {s['median']} | {s['p95']} | {s['max']} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.reliability.alert_latency", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--bundle", type=Path,
                    help="the bundle (default: $LVM_RELIABILITY_BUNDLE, else engines/lvm-tiny-fp32)")
    ap.add_argument("--lanes", type=int, default=DEFAULT_LANES,
                    help=f"demo lanes in the one runtime (default {DEFAULT_LANES})")
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                    help=f"stream seconds per lane, played at real time (default {DEFAULT_DURATION_S:g})")
    ap.add_argument("--shrink", default=DEFAULT_SHRINK,
                    help=f"the demo's scan avoidance B,P,L (default {DEFAULT_SHRINK}: more alerts than the "
                         "default rates)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help=f"lane i plays seed SEED + i (default {DEFAULT_SEED})")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--poll", type=float, default=DEFAULT_POLL_S,
                    help=f"seconds between /metrics polls (default {DEFAULT_POLL_S:g})")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--workdir", type=Path,
                    help="where the runtime's state, the broker and the logs go (default: a temp folder)")
    args = ap.parse_args(argv)

    def bad(msg: str) -> int:
        print(f"alert latency: {msg}", file=sys.stderr)
        return 2

    if args.lanes < 1:
        return bad("--lanes must be at least 1")
    if not (math.isfinite(args.duration) and args.duration >= 60):
        return bad("--duration must be at least 60 stream seconds")
    if args.threads < 1:
        return bad("--threads must be at least 1")
    if not (math.isfinite(args.poll) and 0.01 <= args.poll <= 5):
        return bad("--poll must be 0.01-5 seconds")
    if args.seed < 0:
        return bad("--seed must be >= 0")
    from edge_runtime.checkout.shrink import ShrinkRates

    try:
        rates = ShrinkRates.parse(args.shrink)
    except ValueError as err:
        return bad(f"--shrink: {err}")
    if not rates.on:
        return bad("--shrink: rates of 0 leave the rule little to alert on; give B,P,L")
    from tools.reliability.mosquitto import mosquitto_path

    if mosquitto_path() is None:
        return bad("mosquitto is not installed (Debian: apt-get install mosquitto)")
    bundle = (args.bundle or default_bundle()).expanduser().absolute()
    if not (bundle / "manifest.json").is_file():
        return bad(f"--bundle {bundle}: no manifest.json (an exported bundle folder; `lvm-edge demo` exports one)")
    if args.json is not None and not args.json.parent.is_dir():
        return bad(f"--json {args.json}: no folder {args.json.parent}")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="alert-latency-", dir=args.workdir))  # always a fresh state dir
    try:
        res = measure(bundle, args.lanes, args.duration, rates.tag(), args.seed, args.threads, args.poll, workdir,
                      log=lambda m: print(m, flush=True))
    except (LatencyError, ScenarioError, RuntimeError) as err:
        return bad(f"{' '.join(str(err).split())[:300]} (logs: {workdir})")
    res["command"] = "python -m tools.reliability.alert_latency " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
