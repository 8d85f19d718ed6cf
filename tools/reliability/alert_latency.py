"""Alert latency in wall time: how long after a checkout event ends its alert is raised (stored in the
outbox) and delivered (on the store's broker, and on a webhook).

A real ``lvm-edge run`` (tools/reliability/common.py's RunProcess: the CLI in a subprocess) streams
``--lanes`` demo lanes (``demo://checkout?seed=S&shrink=B,P,L``) paced at real time (``--realtime``), so
stream time follows wall time as a camera's does, with the ``bagged_without_scan`` rule (``RULE_THRESHOLDS``),
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
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from tools.reliability.alert_latency_math import FrameClock, LatencyError, alert_rows, parse_frames_in, stats, summarise
from tools.reliability.common import REPO, RunProcess, ScenarioError, default_bundle

SITE = "latency"
RULE = "bagged_without_scan"
# only a scan of the bag's own product pays: the shipped model then raises more alerts to time
RULE_THRESHOLDS = {"other_product_scans": 0}
TARGET_EXTRA_S = 2.0          # the target: p95 at most one clip period + 2 s
DEFAULT_SHRINK = "0.5,0.5,0"  # half the items bagged unscanned, half passed around the scanner
DEFAULT_LANES = 6
DEFAULT_DURATION_S = 900.0
DEFAULT_POLL_S = 0.1
DEFAULT_SEED = 3


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
    config.write_text(json.dumps({"alerts": {"site": SITE, "rules": {RULE: RULE_THRESHOLDS}, "mqtt": {"url": broker.url},
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
    for key, what in (("stream", "commit or tick that raised it (stream time)"),
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
