"""Alert and nudge latency in wall time, and the evidence's bytes, on one live-paced demo lane.

A real ``lvm-edge run`` (tools/reliability/common.py's RunProcess) streams one
``demo://checkout?seed=S&duration=D&shrink=B,P,L`` lane at real time (``--realtime``: stream time follows
wall time, as a camera's does) with the shipped bundle's item tracks, ``bagged_without_scan`` on the
demo's till (``scans: pos``), evidence kept (``keep: item``), an MQTT sink and the nudge to a Mosquitto
on loopback, and the nudge's webhook to an HTTP server here. Meanwhile this tool polls ``/metrics``
every ``--poll`` s for the lane's ``lvm_frames_in_total`` (so it knows, within a poll, the wall time each
frame reached the runtime: ``FrameClock``), and records when each alert and each nudge first arrives on
the broker, and each nudge on the webhook.

At the end it reads the outbox (``alerts.db``: each alert's ``raised_at`` and its images) and matches
each alert to a ground-truth target: an item of the demo's video bagged and never scanned (its
annotations), of the alert's product, overlapping the alert's interval widened by 5 s (as
tools/accuracy/alerts_eval.py matches). Per matched alert, with E the wall time the first frame at or
after the bag's true end reached the runtime:

    outbox   raised_at (the outbox row) - E
    mqtt     the alert's first receipt on the broker - E
    nudge    the nudge's first receipt on the broker (QoS 0) - E; nudge_webhook: on the webhook

and median / p95 / max of each over the first alert of each target found; the same from the end of the
model's own event each alert names (``own``: every alert, right or false); the bytes of evidence per
alert (its JPEGs) and the stream's ring.

    python -m tools.bench.alert_latency --duration 240 --json /tmp/alert_latency.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tools.reliability.alert_latency import Poller, Receipts, Webhook
from tools.reliability.alert_latency_math import FrameClock, LatencyError, end_frame, stats
from tools.reliability.common import REPO, RunProcess, ScenarioError, default_bundle

SITE = "bench"
RULE = "bagged_without_scan"
MATCH_TOL_S = 5.0
DEFAULT_SHRINK = "1,0,0"   # most items bagged unscanned: many targets in a few minutes
DEFAULT_DURATION_S = 240.0
DEFAULT_SEED = 3


class Topics:
    """First arrival of each id on the lane's alerts and nudges topics (a paho subscriber)."""

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt

        self.alerts, self.nudges = Receipts(), Receipts()
        self.qos: set[int] = set()
        self.ready = threading.Event()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-alert-latency")
        c.on_connect = lambda cl, *_: (cl.subscribe([(f"lvm-edge/{SITE}/+/alerts", 1),
                                                     (f"lvm-edge/{SITE}/+/nudges", 1)]), self.ready.set())
        c.on_message = self._message
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        c.connect(host, int(port))
        c.loop_start()

    def _message(self, _c, _u, msg) -> None:
        try:
            alert_id = str(json.loads(msg.payload)["id"])
        except (ValueError, KeyError, TypeError):
            return
        if msg.topic.endswith("/nudges"):
            self.qos.add(msg.qos)
            self.nudges.got(alert_id)
        else:
            self.alerts.got(alert_id)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def read_outbox(state_dir: Path) -> tuple[list[dict], dict[str, int]]:
    """(alert bodies, alert id -> bytes of its stored JPEGs)."""
    db = sqlite3.connect(f"file:{state_dir / 'alerts.db'}?mode=ro", uri=True)
    try:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM alerts ORDER BY seq")]
        sizes = dict(db.execute("SELECT a.id, COALESCE(SUM(LENGTH(e.jpeg)), 0) FROM alerts a "
                                "LEFT JOIN evidence e ON e.seq = a.seq GROUP BY a.id"))
        return bodies, {k: int(v) for k, v in sizes.items()}
    finally:
        db.close()


def truth(seed: int, duration: float, shrink: str) -> list[tuple[str, float, float]]:
    """(product, start, end) of every item bagged and never scanned in the demo lane's video."""
    from edge_runtime.checkout.video import CheckoutVideo

    ann = CheckoutVideo(seed, duration_s=duration, shrink=shrink).annotations()
    inst = {i["instance_id"]: i for i in ann["instances"]}
    return [(inst[e["instance_id"]]["product"], float(e["start"]), float(e["end"])) for e in ann["events"]
            if e["activity"] == "bag" and not inst[e["instance_id"]]["scanned"] and float(e["end"]) <= duration]


def match(alert: dict, targets: list[tuple[str, float, float]]) -> tuple[str, float, float] | None:
    near = [t for t in targets if t[0] == alert["product"] and alert["start"] < t[2] + MATCH_TOL_S
            and alert["end"] > t[1] - MATCH_TOL_S]
    return min(near, key=lambda t: abs(t[2] - alert["end"])) if near else None


def measure(bundle: Path, duration: float, shrink: str, seed: int, threads: int, poll: float, workdir: Path,
            log=print) -> dict[str, Any]:
    from tools.reliability.mosquitto import Mosquitto

    fps = 5.0  # the event path's rate: frame k of the lane is at stream time k / fps
    broker = Mosquitto(workdir / "broker").start()
    screen = Webhook().start()
    topics = Topics(broker.url)
    if not topics.ready.wait(20):
        raise LatencyError("the subscriber could not connect to the broker")
    config = workdir / "bench.yaml"
    config.write_text(json.dumps({"alerts": {
        "site": SITE, "scans": "pos", "rules": {RULE: {}}, "mqtt": {"url": broker.url},
        "evidence": {"keep": "item"}, "nudge": {"webhook": screen.url}}}, indent=1) + "\n")
    source = f"lane1=demo://checkout?seed={seed}&duration={duration:g}&shrink={shrink}"
    rt = RunProcess(["--config", str(config), "--realtime", "--threads", str(threads), "--duration", f"{duration:g}",
                     "--keep-serving", "--source", source], workdir / "run", bundle=bundle, name="lvm-edge-run")
    clock = FrameClock()
    poller = Poller(rt, clock, poll)
    load_start = os.getloadavg()
    t0 = time.time()
    try:
        rt.start()
        poller.thread.start()
        rt.wait_ready(timeout=180)
        log(f"alert latency: 1 lane x {duration:g} s at real time, {source}")
        while True:
            if poller.error:
                raise LatencyError(poller.error)
            streams = rt.get("/v1/streams").json()["streams"]
            if all(s["state"] in ("ended", "failed", "stopped") for s in streams):
                break
            if not rt.alive():
                raise LatencyError(f"lvm-edge run exited: {rt.last_line()}")
            time.sleep(1.0)
        t_end = time.monotonic() + 30  # the last evaluations (a bag's settle_s) and deliveries
        while time.monotonic() < t_end and (rt.status()["alerts"].get("pending") or 0) > 0:
            time.sleep(0.5)
        time.sleep(8.0)
        status = rt.status()
        lane = rt.get("/v1/streams/lane1").json()
        poller.stop.set()
        poller.thread.join(5)
        code = rt.stop()
        alerts, sizes = read_outbox(rt.state_dir)
        wall = time.time() - t0
    finally:
        poller.stop.set()
        rt.close()
        topics.close()
        screen.close()
        broker.stop()
    targets = truth(seed, duration, shrink)
    got_alert, got_nudge, got_hook = topics.alerts.snapshot(), topics.nudges.snapshot(), screen.receipts.snapshot()
    rows, found = [], set()
    first_of: dict[tuple, str] = {}  # target -> the id of the first alert raised for it
    for a in sorted(alerts, key=lambda a: a["raised_at"]):
        t = match(a, targets)
        if t is not None:
            first_of.setdefault(t, a["id"])
    for a in alerts:
        t = match(a, targets)
        row: dict[str, Any] = {"id": a["id"], "product": a["product"], "start": a["start"], "end": a["end"],
                               "images": len(a.get("images") or []), "evidence_bytes": sizes.get(a["id"], 0),
                               "target": None if t is None else list(t), "first_for_target": first_of.get(t) == a["id"]}
        own = max([float(e["end"]) for e in a.get("evidence") or [] if "end" in e], default=float(a["end"]))
        arr = clock.arrival("lane1", min(end_frame(own, fps), max(0, clock.frames("lane1") - 1)))
        if arr is not None:  # from the end of the model's own event the rule read (every alert, right or not)
            row.update(own_end_s=round(own, 2), own_outbox_s=round(a["raised_at"] - arr[0], 3),
                       own_nudge_s=round(got_nudge[a["id"]] - arr[0], 3) if a["id"] in got_nudge else None)
        if t is not None:
            found.add(t)
            arr = clock.arrival("lane1", min(end_frame(t[2], fps), max(0, clock.frames("lane1") - 1)))
            if arr is not None:
                e = arr[0]
                row.update(bag_end_wall=round(e, 3), outbox_s=round(a["raised_at"] - e, 3),
                           mqtt_s=round(got_alert[a["id"]] - e, 3) if a["id"] in got_alert else None,
                           nudge_s=round(got_nudge[a["id"]] - e, 3) if a["id"] in got_nudge else None,
                           nudge_webhook_s=round(got_hook[a["id"]] - e, 3) if a["id"] in got_hook else None)
        rows.append(row)
    firsts = [r for r in rows if r["first_for_target"]]
    lat = {k[:-2]: stats([r[k] for r in firsts if r.get(k) is not None])
           for k in ("outbox_s", "mqtt_s", "nudge_s", "nudge_webhook_s")}
    own = {k[4:-2]: stats([r[k] for r in rows if r.get(k) is not None]) for k in ("own_outbox_s", "own_nudge_s")}
    after_row = stats([got_nudge[a["id"]] - a["raised_at"] for a in alerts if a["id"] in got_nudge])
    per_alert = [r["evidence_bytes"] for r in rows]
    ring = (lane.get("evidence") or (lane.get("memory") or {}).get("evidence")
            or _find(lane, "evidence"))
    return {
        "tool": "tools/bench/alert_latency.py", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "load_avg_at_start": round(load_start[0], 2),
                    "load_avg_at_end": round(os.getloadavg()[0], 2)}, "bundle": str(bundle), "source": source, "threads": threads, "poll_s": poll,
        "duration_s": duration, "wall_s": round(wall, 1), "runtime_exit": code,
        "targets": len(targets), "alerts": len(alerts), "matched_alerts": sum(r["target"] is not None for r in rows),
        "targets_found": len(found),
        "latency_from_true_bag_end_s": lat, "latency_from_own_event_end_s": own,
        "nudge_after_outbox_row_s": after_row,
        "nudge_qos_seen": sorted(topics.qos), "nudges_on_broker": len(got_nudge), "nudges_on_webhook": len(got_hook),
        "evidence_bytes_per_alert": stats([float(b) for b in per_alert]),
        "evidence_bytes_stored": sum(per_alert), "ring": ring,
        "nudge_status": (status.get("alerts") or {}).get("nudge"), "rows": rows,
    }


def _find(d: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested status (the stream's evidence ring)."""
    if isinstance(d, dict):
        if key in d and isinstance(d[key], dict) and "max_bytes" in d[key]:
            return d[key]
        for v in d.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.alert_latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="the bundle (default: engines/lvm-tiny-fp32)")
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="stream seconds, played at real time")
    ap.add_argument("--shrink", default=DEFAULT_SHRINK, help=f"the demo's scan avoidance B,P,L (default {DEFAULT_SHRINK})")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between /metrics polls")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)

    def bad(msg: str) -> int:
        print(f"alert latency: {msg}", file=sys.stderr)
        return 2

    if not (math.isfinite(args.duration) and args.duration >= 30):
        return bad("--duration must be at least 30 stream seconds")
    if args.threads < 1 or not (0.01 <= args.poll <= 5) or args.seed < 0:
        return bad("--threads >= 1, --poll 0.01-5 s and --seed >= 0, please")
    from edge_runtime.checkout.shrink import ShrinkRates
    from tools.reliability.mosquitto import mosquitto_path

    try:
        shrink = ShrinkRates.parse(args.shrink).tag()
    except ValueError as err:
        return bad(f"--shrink: {err}")
    if mosquitto_path() is None:
        return bad("mosquitto is not installed (Debian: apt-get install mosquitto)")
    bundle = (args.bundle or default_bundle()).expanduser().absolute()
    if not (bundle / "manifest.json").is_file():
        return bad(f"--bundle {bundle}: no manifest.json")
    workdir = Path(tempfile.mkdtemp(prefix="bench-alert-latency-"))
    try:
        res = measure(bundle, args.duration, shrink, args.seed, args.threads, args.poll, workdir,
                      log=lambda m: print(m, flush=True))
    except (LatencyError, ScenarioError, RuntimeError, OSError) as err:
        return bad(f"{' '.join(str(err).split())[:300]} (logs: {workdir})")
    res["command"] = "python -m tools.bench.alert_latency " + " ".join(argv if argv is not None else sys.argv[1:])
    show = {k: v for k, v in res.items() if k != "rows"}
    print(json.dumps(show, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
