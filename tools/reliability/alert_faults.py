"""Alert delivery under faults: does every alert a runtime raised reach a store's subscriber, and how
many copies does it get?

A driver process (``--drive``: the runtime's AlertService with an MQTT sink, alerts raised at a steady
rate, each with its own id) publishes to a real Mosquitto on loopback; a subscriber with a persistent
session counts every alert message by id. Then:

  broker   the broker is SIGKILLed and restarted ``--kills`` times while the driver raises alerts
           (the broker keeps sessions and queued messages on disk, saved after every change)
  runtime  the driver is SIGKILLed ``--kills`` times at random instants and started again on the same
           state directory (its outbox), the broker up throughout

After each scenario the driver runs until its outbox is empty, and the subscriber gets a grace period.
raised = the alerts in the driver's outbox (alerts.db: every alert it stored, whether or not its process
lived to say so); lost = raised but never received; duplicates = messages beyond the first per id.
Passed when nothing is lost. Writes ``alert_faults.json`` under the work folder.

    python -m tools.reliability.alert_faults                     # 20 kills each, results in a temp folder
    python -m tools.reliability.alert_faults --kills 5 --out /tmp/af
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
def drive(state: Path, url: str, rate: float, stop_after: float | None) -> None:
    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings

    svc = AlertService(AlertSettings.model_validate({"site": "faults", "mqtt": {"url": url, "keepalive_s": 5},
                                                     "outbox": {"max_alerts": 10_000_000}}), state, evaluate=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    i = svc.outbox.counts()["stored"]  # go on from what an earlier (killed) run stored: every id new
    t_end = None if stop_after is None else time.monotonic() + stop_after
    while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
        svc.raise_alert({"rule": "bagged_without_scan", "product": f"item {i}", "start": 60.0 * i,
                         "end": 60.0 * i + 2, "confidence": 0.9, "evidence": []}, stream=f"lane{i % 3 + 1}")
        i += 1
        stop.wait(1.0 / rate)
    while not stop.is_set() and svc.status()["pending"]:  # asked to drain: until the outbox is empty
        time.sleep(0.05)
    svc.close()


class Driver:
    def __init__(self, state: Path, url: str, log_path: Path) -> None:
        self.state, self.url, self.log_path = state, url, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, stop_after: float | None = None) -> None:
        cmd = [sys.executable, "-m", "tools.reliability.alert_faults", "--drive", str(self.state), self.url,
               "--rate", str(RATE)] + (["--stop-after", str(stop_after)] if stop_after is not None else [])
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.starts += 1

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


class Counting:
    """The store's subscriber: every alert message, by id, with when it arrived."""

    def __init__(self, url: str, client_id: str) -> None:
        from edge_runtime.alerts.subscriber import subscribe

        self.by_id: Counter = Counter()
        self.delay: dict[str, float] = {}   # id -> seconds from raised to first received
        self._lock = threading.Lock()
        self.client = subscribe(url, self._on, client_id=client_id, timeout=20)

    def _on(self, _topic: str, alert: dict[str, Any]) -> None:
        with self._lock:
            key = str(alert.get("id"))
            if key not in self.by_id:
                self.delay[key] = time.time() - float(alert.get("raised_at", time.time()))
            self.by_id[key] += 1

    def snapshot(self) -> tuple[Counter, dict[str, float]]:
        with self._lock:
            return Counter(self.by_id), dict(self.delay)

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
    return {"scenario": name, "raised": len(raised), "received_unique": len(raised & set(got)),
            "lost": len(lost), "lost_ids": sorted(lost)[:20], "duplicates": sum(got.values()) - len(got),
            "alerts_with_copies": sum(1 for n in got.values() if n > 1), "unknown_ids": len(set(got) - raised),
            "outbox_rows_left": waiting, "delivery_delay_s": {"p50": round(percentile(delays, 50), 3),
                                                              "p99": round(percentile(delays, 99), 3),
                                                              "max": round(max(delays, default=float("nan")), 3)},
            **extra}


def broker_kills(kills: int, workdir: Path, log: Callable[[str], None], seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    broker = Mosquitto(workdir / "broker-a", persistent=True).start()
    counter = Counting(broker.url, "alert-faults-counter-a")
    driver = Driver(workdir / "state-a", broker.url, workdir / "driver-a.log")
    driver.start()
    downs = []
    try:
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


def runtime_kills(kills: int, workdir: Path, log: Callable[[str], None], seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    broker = Mosquitto(workdir / "broker-b", persistent=True).start()
    counter = Counting(broker.url, "alert-faults-counter-b")
    driver = Driver(workdir / "state-b", broker.url, workdir / "driver-b.log")
    try:
        for k in range(kills):
            driver.start()
            time.sleep(rng.uniform(0.8, 2.5))  # imports take ~0.5 s: some kills land before the first alert
            driver.kill()
            if (k + 1) % 5 == 0:
                log(f"alert faults: runtime SIGKILLed {k + 1}/{kills} times")
        code = driver.drain()
        return _tally("runtime", workdir / "state-b", counter, 30.0, {"runtime_kills": kills, "driver_exit": code})
    finally:
        driver.kill()
        counter.close()
        broker.stop()


def run(quick: bool, workdir: Path, log: Callable[[str], None] = print, kills: int | None = None) -> dict[str, Any]:
    if mosquitto_path() is None:
        return {"available": False, "passed": None, "why": "mosquitto is not installed (apt-get install mosquitto)"}
    n = kills if kills is not None else (5 if quick else 20)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    res = {"rate_per_s": RATE, "broker": broker_kills(n, workdir, log), "runtime": runtime_kills(n, workdir, log)}
    res["passed"] = res["broker"]["lost"] == 0 and res["runtime"]["lost"] == 0
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
    args = p.parse_args(argv)
    if args.drive:
        drive(Path(args.drive[0]), args.drive[1], args.rate, args.stop_after)
        return 0
    if args.kills < 1:
        p.error("--kills must be at least 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="alert-faults-"))
    res = run(False, out, kills=args.kills)
    if res.get("available") is False:
        print(f"alert faults: {res['why']}", file=sys.stderr)
        return 2
    for name in ("broker", "runtime"):
        r = res[name]
        print(f"{name:8s} kills {args.kills}: raised {r['raised']}, lost {r['lost']}, duplicates {r['duplicates']} "
              f"({r['alerts_with_copies']} alerts with copies), delay p50 {r['delivery_delay_s']['p50']} s "
              f"p99 {r['delivery_delay_s']['p99']} s max {r['delivery_delay_s']['max']} s")
    print(f"results: {out / 'alert_faults.json'}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
