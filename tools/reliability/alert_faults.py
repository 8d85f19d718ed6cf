"""Alert delivery under faults: does every alert a runtime raised reach a store's subscriber, and how
many copies does it get?

A driver process (``--drive``: the runtime's AlertService with an MQTT sink, alerts raised at a steady
rate, each with its own id) publishes to a real Mosquitto on loopback; a subscriber with a persistent
session counts every alert message by id. Then:

  broker   the broker is SIGKILLed and restarted ``--kills`` times while the driver raises alerts
           (the broker keeps sessions and queued messages on disk, saved after every change)
  runtime  the driver is SIGKILLed ``--kills`` times at random instants and started again on the same
           state directory (its outbox), the broker up throughout
  items    (``--items KILLS``, not run by default) a real ``lvm-edge run`` of the shipped bundle on a demo
           lane with raised shrink: the event head's own alerts about tracked items with their crops;
           SIGKILLed KILLS times once it stored an alert, started again on the same state dir

Each alert is about a tracked item, as the event path's are, and carries its evidence (the default
``alerts.evidence.keep: item``): before raising it the driver puts three crops of that item's track
(OpenCV JPEGs of a drawn frame, the runtime's own EvidenceRing) in its stream's ring, so the service
picks them and the outbox stores the JPEGs in the alert's own transaction (edge_runtime/alerts/evidence.py).
``--no-evidence`` raises alerts of no item, as before evidence was kept.

After each scenario the driver runs until its outbox is empty, and the subscriber gets a grace period.
raised = the alerts in the driver's outbox (alerts.db: every alert it stored, whether or not its process
lived to say so); lost = raised but never received; duplicates = messages beyond the first per id (the
copy an alert gets once it is cleared is not counted).
with_evidence = stored alerts whose record lists images; evidence_intact = those whose every listed image
is in the evidence table, of the listed size, a whole JPEG (SOI .. EOI) that OpenCV decodes; the
received copies must list the same images. Passed when nothing is lost and all evidence is intact.
Writes ``alert_faults.json`` under the work folder.

    python -m tools.reliability.alert_faults                     # 20 kills each, results in a temp folder
    python -m tools.reliability.alert_faults --kills 5 --out /tmp/af
    python -m tools.reliability.alert_faults --no-evidence       # alerts without images
    python -m tools.reliability.alert_faults --kills 20 --items 5  # then the shipped bundle's own item alerts
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from tools.reliability.common import REPO, percentile
from tools.reliability.mosquitto import Mosquitto, mosquitto_path

RATE = 20.0  # alerts per second the driver raises


# -- the driver (a separate process: it is what gets SIGKILLed) ------------------------------------
def item_frame(i: int, t: float):
    """A drawn 160x120 RGB frame with item ``i`` in it at stream time ``t`` and its box (x1, y1, x2, y2 in
    [0, 1]): a coloured block with some texture, so its crop is a JPEG of the size an item's is."""
    import numpy as np

    rng = np.random.default_rng([i, int(abs(t))])
    rgb = np.full((120, 160, 3), 90, np.uint8)
    x, y = 20 + (i * 13) % 80, 20 + (i * 7) % 50
    rgb[y : y + 40, x : x + 50] = rng.integers(0, 255, 3, dtype=np.uint8)
    rgb[y : y + 40, x : x + 50] ^= rng.integers(0, 40, (40, 50, 3), dtype=np.uint8)
    return rgb, np.array([x / 160, y / 120, (x + 50) / 160, (y + 40) / 120])


def drive(state: Path, url: str, rate: float, stop_after: float | None, with_evidence: bool = True) -> None:
    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings
    from edge_runtime.items.evidence_ring import EvidenceRing

    svc = AlertService(AlertSettings.model_validate({"site": "faults", "mqtt": {"url": url, "keepalive_s": 5},
                                                     "outbox": {"max_alerts": 10_000_000}}), state, evaluate=False)
    rings = {f"lane{k}": EvidenceRing("item") for k in (1, 2, 3)} if with_evidence else {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    i = svc.outbox.counts()["stored"]  # go on from what an earlier (killed) run stored: every id new
    t_end = None if stop_after is None else time.monotonic() + stop_after
    while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
        stream, start, end = f"lane{i % 3 + 1}", 60.0 * i, 60.0 * i + 2
        events, ring = [], rings.get(stream)
        if ring is not None:  # the item's track in the ring before, during and after its event
            for t in (start - 1.0, start + 1.0, end + 1.0):
                rgb, box = item_frame(i, t)
                ring.add(rgb, t, {i: box})
            events = [{"activity": "bag", "product": f"item {i}", "start": start, "end": end, "confidence": 0.9,
                       "item": i}]
        svc.raise_alert({"rule": "bagged_without_scan", "product": f"item {i}", "start": start,
                         "end": end, "confidence": 0.9, "evidence": events}, stream=stream, ring=ring)
        i += 1
        stop.wait(1.0 / rate)
    while not stop.is_set() and svc.status()["pending"]:  # asked to drain: until the outbox is empty
        time.sleep(0.05)
    svc.close()


class Driver:
    def __init__(self, state: Path, url: str, log_path: Path, evidence: bool = True) -> None:
        self.state, self.url, self.log_path, self.evidence = state, url, log_path, evidence
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, stop_after: float | None = None) -> None:
        cmd = [sys.executable, "-m", "tools.reliability.alert_faults", "--drive", str(self.state), self.url,
               "--rate", str(RATE)] + (["--stop-after", str(stop_after)] if stop_after is not None else []) \
            + ([] if self.evidence else ["--no-evidence"])
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def drain(self, timeout: float = 120.0) -> int:
        """Run until the outbox is empty (raising nothing more); -> the exit code."""
        self.kill()
        self.start(stop_after=0.0)
        return self.proc.wait(timeout)


def outbox_view(state: Path) -> tuple[set[str], int]:
    """(ids stored, rows still waiting for a sink) of a driver's alerts.db."""
    db = sqlite3.connect(f"file:{state / 'alerts.db'}?mode=ro", uri=True)
    try:
        ids = {r[0] for r in db.execute("SELECT id FROM alerts")}
        waiting = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()
    return ids, waiting


def evidence_view(state: Path) -> dict[str, Any]:
    """Of a driver's alerts.db: how many alerts list images, and whether each listed image is stored whole
    (in the evidence table, of the listed size, SOI .. EOI, decoded by OpenCV); the ids that are not, and
    id -> the number of images of each alert that lists some."""
    import cv2
    import numpy as np

    db = sqlite3.connect(f"file:{state / 'alerts.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, id, body FROM alerts").fetchall()
        stored = {(seq, k): bytes(j) for seq, k, j in db.execute("SELECT seq, k, jpeg FROM evidence")}
    finally:
        db.close()
    listed: dict[str, int] = {}
    broken: list[str] = []
    for seq, alert_id, body in rows:
        images = json.loads(body).get("images") or []
        if not images:
            if any(key[0] == seq for key in stored):  # JPEGs no image of its record names
                broken.append(alert_id)
            continue
        listed[alert_id] = len(images)
        for k, img in enumerate(images):
            jpeg = stored.get((seq, k))
            whole = (jpeg is not None and len(jpeg) == img["bytes"] and jpeg[:2] == b"\xff\xd8"
                     and jpeg[-2:] == b"\xff\xd9"
                     and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None)
            if not whole:
                broken.append(alert_id)
                break
        else:
            if any(key[0] == seq and key[1] >= len(images) for key in stored):
                broken.append(alert_id)
    return {"with_evidence": len(listed), "evidence_intact": len(listed) - len(set(broken) & set(listed)),
            "evidence_broken_ids": sorted(set(broken))[:20], "images": sum(listed.values()), "listed": listed}


def stored(state: Path) -> int:
    """Alerts in a driver's alerts.db (0 before it exists, or while it cannot be read yet)."""
    if not (state / "alerts.db").is_file():
        return 0
    try:
        db = sqlite3.connect(f"file:{state / 'alerts.db'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def wait_stored(state: Path, n: int, driver, timeout: float) -> None:
    """Until ``driver`` (a Driver or a RunProcess) has stored ``n`` alerts; RuntimeError if it exits or
    takes longer than ``timeout``."""
    t_end = time.monotonic() + timeout
    while stored(state) < n:
        if not driver.alive():
            raise RuntimeError(f"the driver exited before raising an alert (its log: {driver.log_path})")
        if time.monotonic() > t_end:
            raise RuntimeError(f"the driver raised no alert in {timeout:g} s (its log: {driver.log_path})")
        time.sleep(0.05)


class Counting:
    """The store's subscriber: every alert message, by id, with when it arrived."""

    def __init__(self, url: str, client_id: str) -> None:
        from edge_runtime.alerts.subscriber import subscribe

        self.by_id: Counter = Counter()
        self.images: dict[str, set[int]] = {}  # id -> the image counts its copies listed
        self.delay: dict[str, float] = {}   # id -> seconds from raised to first received
        self._lock = threading.Lock()
        self.client = subscribe(url, self._on, client_id=client_id, timeout=20)

    def _on(self, _topic: str, alert: dict[str, Any]) -> None:
        if alert.get("cleared"):  # the copy sent once the alert was cleared: a message of its own, not a redelivery
            return
        with self._lock:
            key = str(alert.get("id"))
            if key not in self.by_id:
                self.delay[key] = time.time() - float(alert.get("raised_at", time.time()))
            self.by_id[key] += 1
            self.images.setdefault(key, set()).add(len(alert.get("images") or []))

    def snapshot(self) -> tuple[Counter, dict[str, float]]:
        with self._lock:
            return Counter(self.by_id), dict(self.delay)

    def image_counts(self) -> dict[str, set[int]]:
        with self._lock:
            return {k: set(v) for k, v in self.images.items()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _tally(name: str, state: Path, counter: Counting, grace_s: float, extra: dict[str, Any]) -> dict[str, Any]:
    raised, waiting = outbox_view(state)
    t_end = time.monotonic() + grace_s
    while time.monotonic() < t_end:  # the last deliveries may still be on their way
        got, _ = counter.snapshot()
        if raised <= set(got):
            break
        time.sleep(0.2)
    got, delay = counter.snapshot()
    lost = raised - set(got)
    delays = [delay[k] for k in raised if k in delay]
    ev = evidence_view(state)
    seen = counter.image_counts()
    # a received copy lists the images its stored alert lists (0 for an alert with none)
    mismatch = sorted(k for k in raised & set(got) if seen.get(k, set()) != {ev["listed"].get(k, 0)})
    return {"scenario": name, "raised": len(raised), "received_unique": len(raised & set(got)),
            "lost": len(lost), "lost_ids": sorted(lost)[:20], "duplicates": sum(got.values()) - len(got),
            "alerts_with_copies": sum(1 for n in got.values() if n > 1), "unknown_ids": len(set(got) - raised),
            "with_evidence": ev["with_evidence"], "evidence_intact": ev["evidence_intact"],
            "evidence_broken_ids": ev["evidence_broken_ids"], "images": ev["images"],
            "received_images_mismatch": len(mismatch), "received_images_mismatch_ids": mismatch[:20],
            "outbox_rows_left": waiting, "delivery_delay_s": {"p50": round(percentile(delays, 50), 3),
                                                              "p99": round(percentile(delays, 99), 3),
                                                              "max": round(max(delays, default=float("nan")), 3)},
            **extra}


def broker_kills(kills: int, workdir: Path, log: Callable[[str], None], seed: int = 0,
                 evidence: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    broker = Mosquitto(workdir / "broker-a", persistent=True).start()
    counter = Counting(broker.url, "alert-faults-counter-a")
    driver = Driver(workdir / "state-a", broker.url, workdir / "driver-a.log", evidence)
    driver.start()
    downs = []
    try:
        wait_stored(workdir / "state-a", 1, driver, 60.0)  # the outages fall while it raises alerts
        for k in range(kills):
            time.sleep(rng.uniform(0.8, 2.0))
            broker.kill()
            down = rng.uniform(0.3, 2.0)
            time.sleep(down)
            broker.start()
            downs.append(down)
            if (k + 1) % 5 == 0:
                log(f"alert faults: broker killed and restarted {k + 1}/{kills} times")
        time.sleep(1.0)
        code = driver.drain()
        return _tally("broker", workdir / "state-a", counter, 30.0,
                      {"broker_kills": kills, "broker_down_s_total": round(sum(downs), 1), "driver_exit": code})
    finally:
        driver.kill()
        counter.close()
        broker.stop()


def runtime_kills(kills: int, workdir: Path, log: Callable[[str], None], seed: int = 1,
                  evidence: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    broker = Mosquitto(workdir / "broker-b", persistent=True).start()
    counter = Counting(broker.url, "alert-faults-counter-b")
    driver = Driver(workdir / "state-b", broker.url, workdir / "driver-b.log", evidence)
    try:
        for k in range(kills):
            before = stored(workdir / "state-b")
            driver.start()
            # a loaded machine takes seconds to import the driver: each kill lands at a random instant once it
            # has stored its first new alert (a kill during imports shows nothing), while it raises more
            wait_stored(workdir / "state-b", before + 1, driver, 60.0)
            time.sleep(rng.uniform(0.0, 1.7))
            driver.kill()
            if (k + 1) % 5 == 0:
                log(f"alert faults: runtime SIGKILLed {k + 1}/{kills} times")
        code = driver.drain()
        return _tally("runtime", workdir / "state-b", counter, 30.0, {"runtime_kills": kills, "driver_exit": code})
    finally:
        driver.kill()
        counter.close()
        broker.stop()


ITEMS_SOURCE = "demo://checkout?seed=3&duration={d:g}&shrink=0.3,0.1,0.6"  # many item alerts: shrink raised
ITEMS_RULES = {"bagged_without_scan": {}, "left_in_basket": {}}


def item_kills(kills: int, workdir: Path, log: Callable[[str], None], seed: int = 2,
               duration: float = 1200.0) -> dict[str, Any]:
    """A real ``lvm-edge run`` of the shipped bundle (its event head: alerts about tracked items, with
    their crops) on a demo lane, SIGKILLed ``kills`` times, each at a random instant after it stored an
    alert, and started again on the same state dir (the lane plays again from its start: the same
    alerts come again with the same ids); the last start plays to the end of the video."""
    from tools.reliability.common import RunProcess, default_bundle

    rng = random.Random(seed)
    broker = Mosquitto(workdir / "broker-c", persistent=True).start()
    counter = Counting(broker.url, "alert-faults-counter-c")
    config = workdir / "items.json.yaml"  # JSON is YAML
    config.write_text(json.dumps({"alerts": {"site": "faults", "rules": ITEMS_RULES, "mqtt": {"url": broker.url}}}))
    state = workdir / "state-c"
    rt = RunProcess(["--config", str(config), "--threads", "1", "--keep-serving", "--source", f"lane1={ITEMS_SOURCE.format(d=duration)}"],
                    workdir / "run-c", state_dir=state, bundle=default_bundle(), name="lvm-edge-run")
    try:
        for k in range(kills):
            before = stored(state)
            rt.start()
            wait_stored(state, before + 1, rt, 300.0)
            time.sleep(rng.uniform(0.0, 3.0))
            rt.kill()
            log(f"alert faults: lvm-edge run SIGKILLed {k + 1}/{kills} times, {stored(state)} alerts stored")
        rt.start()
        rt.wait_ready(timeout=180)
        t_end = time.monotonic() + 900
        while time.monotonic() < t_end:  # to the end of the video, then until every alert was delivered
            streams = rt.get("/v1/streams").json()["streams"]
            if all(x["state"] in ("ended", "failed", "stopped") for x in streams) \
                    and not rt.status()["alerts"].get("pending"):
                break
            if not rt.alive():
                raise RuntimeError(f"lvm-edge run exited: {rt.last_line()}")
            time.sleep(1.0)
        code = rt.stop()
        return _tally("items", state, counter, 30.0, {"runtime_kills": kills, "source": ITEMS_SOURCE.format(d=duration),
                                                      "rules": sorted(ITEMS_RULES), "bundle": str(default_bundle()),
                                                      "run_exit": code})
    finally:
        rt.close()
        counter.close()
        broker.stop()


def scenario_passed(r: dict[str, Any]) -> bool:
    """Nothing lost and all evidence whole; a driver that raised nothing (it crashed) has shown nothing."""
    return (r["raised"] > 0 and r["lost"] == 0 and r["evidence_intact"] == r["with_evidence"] and not r["evidence_broken_ids"]
            and r["received_images_mismatch"] == 0)


def run(quick: bool, workdir: Path, log: Callable[[str], None] = print, kills: int | None = None,
        evidence: bool = True, item_kills_n: int = 0) -> dict[str, Any]:
    if mosquitto_path() is None:
        return {"available": False, "passed": None, "why": "mosquitto is not installed (apt-get install mosquitto)"}
    n = kills if kills is not None else (5 if quick else 20)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    res = {"rate_per_s": RATE, "evidence": "item" if evidence else "none",
           "broker": broker_kills(n, workdir, log, evidence=evidence),
           "runtime": runtime_kills(n, workdir, log, evidence=evidence)}
    if item_kills_n:
        res["items"] = item_kills(item_kills_n, workdir, log)
    res["passed"] = all(scenario_passed(res[k]) for k in ("broker", "runtime", "items") if k in res)
    res["seconds"] = round(time.monotonic() - t0, 1)
    (workdir / "alert_faults.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.reliability.alert_faults", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="broker kills, then runtime kills (default 20 each)")
    p.add_argument("--out", type=Path, help="work folder (default: a new temporary folder)")
    p.add_argument("--drive", nargs=2, metavar=("STATE_DIR", "BROKER_URL"), help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=RATE, help=argparse.SUPPRESS)
    p.add_argument("--stop-after", type=float, help=argparse.SUPPRESS)
    p.add_argument("--no-evidence", action="store_true", help="alerts of no tracked item, without images")
    p.add_argument("--items", type=int, default=0, metavar="KILLS",
                   help="then a real `lvm-edge run` of the shipped bundle on a demo lane (item alerts with their "
                        "crops), SIGKILLed KILLS times (default 0: not run)")
    args = p.parse_args(argv)
    if args.drive:
        drive(Path(args.drive[0]), args.drive[1], args.rate, args.stop_after, not args.no_evidence)
        return 0
    if args.kills < 1 or args.items < 0:
        p.error("--kills must be at least 1, --items at least 0")
    out = args.out or Path(tempfile.mkdtemp(prefix="alert-faults-"))
    res = run(False, out, kills=args.kills, evidence=not args.no_evidence, item_kills_n=args.items)
    if res.get("available") is False:
        print(f"alert faults: {res['why']}", file=sys.stderr)
        return 2
    for name in ("broker", "runtime", "items"):
        if name not in res:
            continue
        r = res[name]
        print(f"{name:8s} kills {r.get('runtime_kills', r.get('broker_kills'))}: raised {r['raised']}, lost {r['lost']}, duplicates {r['duplicates']} "
              f"({r['alerts_with_copies']} alerts with copies), delay p50 {r['delivery_delay_s']['p50']} s "
              f"p99 {r['delivery_delay_s']['p99']} s max {r['delivery_delay_s']['max']} s; with evidence "
              f"{r['with_evidence']} ({r['images']} JPEGs), intact {r['evidence_intact']}, received copies listing "
              f"other images {r['received_images_mismatch']}")
    print(f"results: {out / 'alert_faults.json'}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
