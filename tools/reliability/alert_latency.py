"""Alert latency in wall time: how long after a checkout event ends its alert is raised (stored in the
outbox) and delivered (on the store's broker, and on a webhook); with ``--items``, the item tracks'
alerts from the ground truth's bag end, their nudges, and the evidence's bytes.

A real ``lvm-edge run`` (tools/reliability/common.py's RunProcess: the CLI in a subprocess) streams
``--lanes`` demo lanes (``demo://checkout?seed=S&duration=D&shrink=B,P,L``) paced at real time
(``--realtime``), so stream time follows wall time as a camera's does, with the ``bagged_without_scan``
rule and an MQTT sink to a Mosquitto started here on loopback. This tool meanwhile polls ``/metrics``
every ``--poll`` seconds for each lane's ``lvm_frames_in_total`` (the intake's count of frames received
from the source), so it knows, to within one poll, the wall time each frame reached the runtime (frame k
of a fresh lane is stream time k / fps: ``FrameClock``), and records when each alert id first arrives
on the broker, and on an HTTP server here. At the end it reads every alert from the runtime's outbox
(``alerts.db``: its ``raised_at``, the wall clock when it was stored, and its images). E below is the
wall time the first frame at or after an event's end reached the runtime (the middle of the poll
bracket that frame arrived in).

The memory path (default: 6 lanes x 900 s, shrink 0.5,0.5,0): ``events: false`` (no item tracks even
with the bundle's event head), ``other_product_scans`` 0
(``RULE_THRESHOLDS``: more alerts to time), a webhook sink to the HTTP server. Per alert, from the end of
the evidence event it names (the bag the rule read from what_happened, right or wrong), with its
``stream_time`` (coverage end of the commit its evaluation read):

    stream     stream_time - end          (what tools/accuracy/alerts_eval.py reports)
    raised     raised_at - E
    mqtt       first receipt by a subscriber on the broker (loopback) - E
    webhook    first receipt by the webhook - E

and median / p95 / max of each next to the target: one clip period (clip_frames / fps of the bundle) + 2 s.

``--items`` (default: 1 lane x 240 s, shrink 1,0,0: many targets in a few minutes): the bundle's item
tracks (frames at its event_fps), ``bagged_without_scan`` on the demo's till (``scans: pos``), evidence
kept (``keep: item``), the nudge on the broker and to the HTTP server. Each alert is matched to a
ground-truth target: an item of the lane's video bagged and never scanned (its annotations), of the
alert's product, overlapping the alert's interval widened by 5 s (as tools/accuracy/alerts_eval.py
matches). Per matched alert, with E at the bag's true end:

    outbox   raised_at - E
    mqtt     the alert's first receipt on the broker - E
    nudge    the nudge's first receipt on the broker (QoS 0) - E; nudge_webhook: on the webhook

and median / p95 / max of each over the first alert of each target found; the same from the end of the
model's own event each alert names (``own``: every alert, right or false); the bytes of evidence per
alert (its JPEGs) and each stream's ring. Writes the JSON to ``--json``.

    python -m tools.reliability.alert_latency --json docs/accuracy/alert_latency.json
    python -m tools.reliability.alert_latency --lanes 2 --duration 120      # a short look
    python -m tools.reliability.alert_latency --items --duration 300 --seed 5 --json /tmp/items.json
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
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from tools.reliability.alert_latency_math import (FrameClock, LatencyError, Target, alert_rows, item_latency, stats,
                                                  summarise)
from tools.reliability.alert_latency_receivers import Poller, Topics, Webhook
from tools.reliability.common import REPO, RunProcess, ScenarioError, default_bundle

SITE = "latency"
RULE = "bagged_without_scan"
# only a scan of the bag's own product pays: the shipped model then raises more alerts to time
RULE_THRESHOLDS = {"other_product_scans": 0}
TARGET_EXTRA_S = 2.0          # the target: p95 at most one clip period + 2 s
DEFAULT_POLL_S = 0.1
DEFAULT_SEED = 3
# per mode: (lanes, stream seconds, shrink, the fewest stream seconds)
MEMORY_DEFAULTS = (6, 900.0, "0.5,0.5,0", 60.0)  # half the items bagged unscanned, half passed around the scanner
ITEMS_DEFAULTS = (1, 240.0, "1,0,0", 30.0)       # most items bagged unscanned: many targets in a few minutes
ITEMS_SETTLE_S = 8.0  # after the lanes end, the rule's waiting decisions on the last bags (its settle_s)


# -- the run ---------------------------------------------------------------------------------------
def read_outbox(state_dir: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(alert bodies, alert id -> bytes of its stored JPEGs)."""
    db = sqlite3.connect(f"file:{state_dir / 'alerts.db'}?mode=ro", uri=True)
    try:
        bodies = [json.loads(body) for (body,) in db.execute("SELECT body FROM alerts ORDER BY seq")]
        sizes = dict(db.execute("SELECT a.id, COALESCE(SUM(LENGTH(e.jpeg)), 0) FROM alerts a "
                                "LEFT JOIN evidence e ON e.seq = a.seq GROUP BY a.id"))
        return bodies, {k: int(v) for k, v in sizes.items()}
    finally:
        db.close()


def bundle_rates(bundle: Path) -> tuple[int, float, float | None]:
    """(clip_frames, fps, the event head's event_fps or None without one) from the bundle's manifest."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        stream = manifest["config"]["stream"]
        events = manifest.get("events")
        return (int(stream["clip_frames"]), float(stream["fps"]),
                None if not events else float(events.get("event_fps", 5.0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise LatencyError(f"--bundle {bundle}: no readable manifest.json with config.stream "
                           f"(clip_frames, fps): {err}") from None


def truth(seed: int, duration: float, shrink: str) -> list[Target]:
    """(product, start, end) of every item bagged and never scanned in a demo lane's video."""
    from edge_runtime.checkout.video import CheckoutVideo

    ann = CheckoutVideo(seed, duration_s=duration, shrink=shrink).annotations()
    inst = {i["instance_id"]: i for i in ann["instances"]}
    return [(inst[e["instance_id"]]["product"], float(e["start"]), float(e["end"])) for e in ann["events"]
            if e["activity"] == "bag" and not inst[e["instance_id"]]["scanned"] and float(e["end"]) <= duration]


def alerts_config(items: bool, broker_url: str, hook_url: str) -> dict[str, Any]:
    """The runtime config's alerts: the memory path's alerts to the broker and the webhook; with ``items``
    the item tracks on the demo's till, their evidence kept, the alerts to the broker and the nudge to
    the broker and the webhook."""
    if items:
        return {"site": SITE, "scans": "pos", "rules": {RULE: {}}, "mqtt": {"url": broker_url},
                "evidence": {"keep": "item"}, "nudge": {"webhook": hook_url}}
    return {"site": SITE, "rules": {RULE: RULE_THRESHOLDS}, "mqtt": {"url": broker_url}, "webhooks": [hook_url]}


def measure(bundle: Path, lanes: int, duration: float, shrink: str, seed: int, threads: int, poll: float,
            workdir: Path, *, items: bool = False, batch_frames: int | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    from tools.reliability.mosquitto import Mosquitto

    clip_frames, clip_fps, event_fps = bundle_rates(bundle)
    if items and event_fps is None:
        raise LatencyError(f"--items: the bundle {bundle} has no event head (manifest events): no item tracks")
    fps = event_fps if items else clip_fps  # frame k of a lane is at stream time k / fps
    clip_s = clip_frames / clip_fps
    target = clip_s + TARGET_EXTRA_S
    broker = Mosquitto(workdir / "broker").start()
    hook = Webhook().start()
    try:
        topics = Topics(broker.url, SITE, nudges=items)
    except LatencyError:
        broker.stop()
        hook.close()
        raise
    config = workdir / "alerts.json.yaml"  # JSON is YAML
    # the memory path alone (events: false): else a bundle's event head takes the frames at its event_fps, not
    # the clip's fps this mode counts them by, and the rule reads item tracks, not what_happened
    run_config = {"alerts": alerts_config(items, broker.url, hook.url), **({} if items else {"events": False}),
                  **({} if batch_frames is None else {"batch_frames": batch_frames})}
    config.write_text(json.dumps(run_config, indent=1) + "\n")
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
        what = f"item tracks at {fps:g} fps" if items else f"clip period {clip_s:g} s, target p95 <= {target:g} s"
        log(f"alert latency: {lanes} lane(s) x {duration:g} s at real time, shrink {shrink}; {what}")
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
                    f"{st.get('stored')}, received mqtt {len(topics.alerts.first)} webhook {len(hook.receipts.first)}")
                next_note += 60
            if not rt.alive():
                raise LatencyError(f"lvm-edge run exited: {rt.last_line()}")
            time.sleep(1.0)
        t_end = time.monotonic() + 60  # the last evaluations and deliveries
        while time.monotonic() < t_end and (rt.status()["alerts"].get("pending") or 0) > 0:
            time.sleep(0.5)
        if items:
            time.sleep(ITEMS_SETTLE_S)
        status = rt.status()
        rings = {n: rt.get(f"/v1/streams/{n}").json().get("evidence") for n in names} if items else {}
        stored, _ = read_outbox(rt.state_dir)
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:  # the subscriber may get the last ones a little after the PUBACK
            ids = {a["id"] for a in stored}  # (the nudge is QoS 0 and may never come: not waited for)
            if ids <= set(topics.alerts.snapshot()) and (items or ids <= set(hook.receipts.snapshot())):
                break
            time.sleep(0.2)
        poller.stop.set()
        poller.thread.join(5)
        code = rt.stop()
        alerts, sizes = read_outbox(rt.state_dir)
        wall = time.time() - t0
    finally:
        poller.stop.set()
        rt.close()
        topics.close()
        hook.close()
        broker.stop()
    res: dict[str, Any] = {
        "tool": "tools/reliability/alert_latency.py", "items": items,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": _machine(load_start),
        "bundle": os.path.relpath(bundle, REPO) if bundle.is_relative_to(REPO) else str(bundle),
        "clip_frames": clip_frames, "fps": fps, "rule": RULE, "lanes": lanes, "sources": sources,
        "duration_s": duration, "shrink": shrink, "threads": threads, "batch_frames": batch_frames,
        "poll_s": poll, "polls": poller.polls,
        "metrics_poll_s": stats(poller.poll_s), "runtime_exit": code, "wall_s": round(wall, 1),
        "pending_at_end": status["alerts"].get("pending"),
        "copies_received": {"mqtt": topics.alerts.copies, "webhook": hook.receipts.copies},
    }
    mqtt_rx, hook_rx = topics.alerts.snapshot(), hook.receipts.snapshot()
    if items:
        targets = {n: truth(s, duration, shrink) for n, s in zip(names, seeds)}
        got = item_latency(alerts, clock, fps, targets, mqtt_rx, topics.nudges.snapshot(), hook_rx, sizes,
                           topics.nudges.early_snapshot())
        rows = got.pop("rows")
        return {**res, **got, "nudge_qos_seen": sorted(topics.qos), "rings": rings,
                "nudge_status": (status.get("alerts") or {}).get("nudge"), "rows": rows}
    rows = alert_rows(alerts, clock, fps, mqtt_rx, hook_rx)
    brackets = [r["end_wall_pm_s"] for r in rows if "end_wall_pm_s" in r]
    lags = [x for x in (clock.behind_pace(n, fps) for n in names) if x is not None]
    ids = {a["id"] for a in alerts}
    return {
        **res, "clip_period_s": clip_s, "target_p95_s": target,
        "event_end": "the end of the evidence event each alert names (for bagged_without_scan the bag event the "
                     "rule read from what_happened on the model's memory, right or wrong); E = wall time the first "
                     "frame at or after that end reached the runtime's intake (lvm_frames_in_total polled from "
                     "/metrics; the middle of the poll bracket)",
        "end_frame_bracket_half_width_s": stats(brackets),
        "intake_behind_pace_s": {"max": round(max(lags), 3) if lags else None},  # <= 0: the intake kept pace
        "alerts": len(alerts), "alerts_per_lane": {n: sum(a["stream"] == n for a in alerts) for n in names},
        "received": {"mqtt": len(set(mqtt_rx) & ids), "webhook": len(set(hook_rx) & ids)},
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
    if res.get("items"):
        return items_table(res)
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


def items_table(res: dict[str, Any]) -> str:
    lat, own = res["latency_from_true_bag_end_s"], res["latency_from_own_event_end_s"]
    ev, after = res["evidence_bytes_per_alert"], res["nudge_after_outbox_row_s"]
    lines = [(f"{res['targets']} unscanned bags on {res['lanes']} lane(s) x {res['duration_s']:g} s: "
              f"{res['targets_found']} found; {res['alerts']} alerts, {res['matched_alerts']} matched"),
             "| seconds after the bag's true end (first alert of each) | n | median | p95 | max |",
             "|---|---|---|---|---|"]
    for key, what in (("outbox", "the alert's outbox row (raised_at)"), ("mqtt", "the alert received from the broker"),
                      ("nudge", "the nudge received from the broker"),
                      ("nudge_webhook", "the nudge received by the webhook")):
        s = lat[key]
        lines.append(f"| {what} | {s['n']} | {s['median']} | {s['p95']} | {s['max']} |")
    s = res["first_nudge_from_true_bag_end_s"]
    lines.append(f"| the screen's first nudge from the broker, early or the alert's ({res['targets_nudged']} bags) | "
                 f"{s['n']} | {s['median']} | {s['p95']} | {s['max']} |")
    lines += [f"early nudges (bags under way): {res['early_nudges']}, {res['early_nudges_matching_no_target']} "
              f"matching no unscanned bag",
              f"from the model's own event end: outbox median {own['outbox']['median']} p95 {own['outbox']['p95']} s, "
              f"nudge median {own['nudge']['median']} p95 {own['nudge']['p95']} s; the nudge after the outbox row: "
              f"median {after['median']} s (QoS seen {res['nudge_qos_seen']})",
              f"evidence: {ev['median']} bytes per alert at the median (max {ev['max']}), "
              f"{res['evidence_bytes_stored']} stored; rings: {json.dumps(res['rings'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.reliability.alert_latency", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--items", action="store_true",
                    help="the item tracks' alerts from the ground truth's bag end, their nudges and evidence bytes "
                         "(the bundle's event head, the demo's till)")
    ap.add_argument("--bundle", type=Path,
                    help="the bundle (default: $LVM_RELIABILITY_BUNDLE, else engines/lvm-tiny-fp32)")
    ap.add_argument("--lanes", type=int,
                    help=f"demo lanes in the one runtime (default {MEMORY_DEFAULTS[0]}; --items {ITEMS_DEFAULTS[0]})")
    ap.add_argument("--duration", type=float,
                    help=f"stream seconds per lane, played at real time (default {MEMORY_DEFAULTS[1]:g}; --items "
                         f"{ITEMS_DEFAULTS[1]:g})")
    ap.add_argument("--shrink",
                    help=f"the demo's scan avoidance B,P,L (default {MEMORY_DEFAULTS[2]}; --items {ITEMS_DEFAULTS[2]}: "
                         "more alerts than the default rates)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help=f"lane i plays seed SEED + i (default {DEFAULT_SEED})")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--poll", type=float, default=DEFAULT_POLL_S,
                    help=f"seconds between /metrics polls (default {DEFAULT_POLL_S:g})")
    ap.add_argument("--batch-frames", type=int, metavar="N",
                    help="frames a lane hands over at a time (the runtime config's batch_frames; default: the "
                         "runtime's own, 0.4 s of frames with an event path)")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--workdir", type=Path,
                    help="where the runtime's state, the broker and the logs go (default: a temp folder)")
    args = ap.parse_args(argv)
    lanes, duration, shrink, least_s = ITEMS_DEFAULTS if args.items else MEMORY_DEFAULTS
    lanes = lanes if args.lanes is None else args.lanes
    duration = duration if args.duration is None else args.duration
    shrink = shrink if args.shrink is None else args.shrink

    def bad(msg: str) -> int:
        print(f"alert latency: {msg}", file=sys.stderr)
        return 2

    if lanes < 1:
        return bad("--lanes must be at least 1")
    if not (math.isfinite(duration) and duration >= least_s):
        return bad(f"--duration must be at least {least_s:g} stream seconds")
    if args.threads < 1:
        return bad("--threads must be at least 1")
    if not (math.isfinite(args.poll) and 0.01 <= args.poll <= 5):
        return bad("--poll must be 0.01-5 seconds")
    if args.seed < 0:
        return bad("--seed must be >= 0")
    from edge_runtime.checkout.shrink import ShrinkRates

    try:
        rates = ShrinkRates.parse(shrink)
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
        res = measure(bundle, lanes, duration, rates.tag(), args.seed, args.threads, args.poll, workdir,
                      batch_frames=args.batch_frames,
                      items=args.items, log=lambda m: print(m, flush=True))
    except (LatencyError, ScenarioError, RuntimeError, OSError, httpx.HTTPError) as err:
        # httpx: the runtime went away between two requests (its log says why)
        return bad(f"{' '.join(str(err).split())[:300]} (logs: {workdir})")
    res["command"] = "python -m tools.reliability.alert_latency " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
