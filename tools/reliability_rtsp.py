"""Reliability scenarios against a real RTSP peer (GStreamer's RTSP server, tools/rtsp_server.py):

- ``outages``: the server is SIGKILLed mid-stream and started again after 5, 30 and 120 s (20
  cycles; ``quick``: 3 cycles of 5 s). Each time the runtime must reconnect, record the outage as
  a gap of the outage's length (within GAP_TOLERANCE_S), answer queries from memory while the
  camera is gone (never a 5xx), and end with memory covering both sides of every outage.
- ``watchdog``: a TCP proxy in front of the server goes silent mid-stream (the connection stays
  open, no byte moves): the runtime must notice and reconnect. Then two peers that never serve a
  frame — one accepts connections and says nothing, one listens and never accepts — and one closed
  port: the runtime keeps retrying (counted from the peer's side where it can be), its API answers
  at once throughout, /v1/status says ``connecting``, and SIGTERM still ends it promptly.

``run(quick, workdir, log)`` runs both; each returns a JSON-able dict with ``passed`` and figures.
The runtime is a real ``lvm-edge run`` process on loopback (tools/reliability_common.RunProcess)
with a runtime config that ingests every frame at once (batch_frames 1: a reconnect shows in
/v1/status within a frame) and caps the reconnect backoff at RECONNECT_MAX_S (the shipped kiosk
cap is 30 s: a camera back after a long outage would be picked up up to 30 s late, which is a
choice of how hard to poll an NVR, not an error in the gap).
"""
from __future__ import annotations

import base64
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.reliability_common import RunProcess, ScenarioError, free_port  # noqa: E402
from tools.rtsp_server import RtspPeer, render_frames, unavailable  # noqa: E402

GAP_TOLERANCE_S = 2.0
STALL_TIMEOUT_S = 5.0   # the shipped default
RECONNECT_MAX_S = 1.0
FULL_OUTAGES_S = (5.0, 30.0, 120.0)
FULL_CYCLES = 20
QUICK_CYCLES, QUICK_OUTAGE_S = 3, 5.0


def config_yaml(path: Path) -> Path:
    path.write_text(f"batch_frames: 1\nsource:\n  stall_timeout_s: {STALL_TIMEOUT_S}\n"
                    f"  reconnect_max_s: {RECONNECT_MAX_S}\n")
    return path


def _png() -> str:
    import cv2
    import numpy as np

    img = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    return base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()


def ask(rt: RunProcess, start: float, end: float, image: str) -> dict[str, Any]:
    """One activity query; -> {"code", "covered", "ms"} (code -1: no HTTP answer at all)."""
    t0 = time.monotonic()
    try:
        r = rt.post("/v1/query/activity", json={"object_image": image, "start": start, "end": end}, timeout=10)
        covered = r.json().get("coverage", {}).get("covered_fraction", 0.0) if r.status_code == 200 else 0.0
        code = r.status_code
    except Exception:  # noqa: BLE001 — a dropped connection or timeout is "no answer", counted
        code, covered = -1, 0.0
    return {"code": code, "covered": covered, "ms": round((time.monotonic() - t0) * 1000, 1)}


# ---- outages ------------------------------------------------------------------------------------

def outages(quick: bool, workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    plan = [QUICK_OUTAGE_S] * QUICK_CYCLES if quick else [FULL_OUTAGES_S[i % 3] for i in range(FULL_CYCLES)]
    between_s = 3.0 if quick else 20.0
    frames = render_frames(workdir / "frames")
    image = _png()
    peer = RtspPeer(frames, free_port(), log=workdir / "rtsp_server.log")
    cycles: list[dict[str, Any]] = []
    rt = RunProcess(["--source", peer.url, "--config", str(config_yaml(workdir / "runtime.yaml"))],
                    workdir / "outages", name="outages")
    with peer, rt:
        peer.start()
        rt.start()
        rt.wait_ready()
        st = rt.wait_status(lambda s: s["coverage"]["end"] is not None, timeout=90)  # memory before
        log(f"rtsp outages: streaming, memory to t={st['coverage']['end']:.0f}s; {len(plan)} cycles")
        for i, down_s in enumerate(plan):
            cycles.append(_one_outage(rt, peer, down_s, image))
            c = cycles[-1]
            log(f"  cycle {i + 1}/{len(plan)}: server down {c['real_outage_s']:.1f} s, gap {c['gap_s']}, "
                f"reconnected {c['reconnect_delay_s']} s after it came back, queries {c['queries_ok']}/"
                f"{c['queries']} answered")
            if c["recovered"]:
                time.sleep(between_s)
        # memory on both sides of every outage: wait for a clip committed after the last one
        last_end = max((c["gap"][1] for c in cycles if c["gap"]), default=0.0)
        try:
            rt.wait_status(lambda s: (s["coverage"]["end"] or 0) >= last_end + 2, timeout=60)
        except ScenarioError:
            pass
        for c in cycles:
            if c["gap"]:
                a, b = c["gap"]
                c["covered_before"] = ask(rt, max(0.0, a - 3), a, image)["covered"]
                c["covered_after"] = ask(rt, b, b + 2, image)["covered"]
        final = rt.status()
        rc = rt.stop()
        text = rt.log_text()
    recovered = sum(c["recovered"] for c in cycles)
    errors = [abs(c["gap_error_s"]) for c in cycles if c["gap_error_s"] is not None]
    asked = sum(c["queries"] for c in cycles)
    answered = sum(c["queries_ok"] for c in cycles)
    both_sides = sum(1 for c in cycles if c.get("covered_before", 0) > 0 and c.get("covered_after", 0) > 0)
    checks = {
        "all_recovered": recovered == len(cycles),
        "gaps_within_tolerance": len(errors) == len(cycles) and max(errors) <= GAP_TOLERANCE_S,
        "queries_answered_during_outages": asked > 0 and answered == asked,
        "memory_both_sides": both_sides == len(cycles),
        "clean_exit": rc == 0 and "Traceback" not in text,
    }
    return {
        "passed": all(checks.values()), "checks": checks,
        "outages_recovered": f"{recovered}/{len(cycles)}",
        "gap_tolerance_s": GAP_TOLERANCE_S, "max_gap_error_s": round(max(errors), 2) if errors else None,
        "queries_during_outages": f"{answered}/{asked}",
        "reconnect_delays_s": [c["reconnect_delay_s"] for c in cycles],
        "memory_both_sides": f"{both_sides}/{len(cycles)}",
        "reconnects_reported": final.get("reconnects"), "gaps_in_status": len(final.get("gaps", [])),
        "exit_code": rc, "config": {"stall_timeout_s": STALL_TIMEOUT_S, "reconnect_max_s": RECONNECT_MAX_S},
        "cycles": cycles,
    }


def _one_outage(rt: RunProcess, peer: RtspPeer, down_s: float, image: str) -> dict[str, Any]:
    before = rt.status()
    n_gaps = len(before["gaps"])
    t_kill = peer.kill()
    queries: list[dict[str, Any]] = []
    states: set[str] = set()
    while time.monotonic() - t_kill < down_s:
        now = rt.status()
        states.add(now["state"])
        queries.append(ask(rt, 0.0, max(1.0, now["stream_time"] or 1.0), image))
        time.sleep(max(0.0, min(1.0, down_s - (time.monotonic() - t_kill))))
    t_back = peer.start()
    real = t_back - t_kill
    t_rec = None
    deadline = t_back + 60
    while time.monotonic() < deadline:
        now = rt.status()
        states.add(now["state"])
        if now["state"] == "streaming" and len(now["gaps"]) > n_gaps:
            t_rec = time.monotonic()
            break
        time.sleep(0.05)
    new = [tuple(g) for g in now["gaps"][n_gaps:]]
    gap = max(new, key=lambda g: g[1] - g[0]) if new else None
    gap_s = round(gap[1] - gap[0], 2) if gap else None
    return {
        "outage_s": down_s, "real_outage_s": round(real, 2), "gap": list(gap) if gap else None,
        "gap_s": gap_s, "gap_error_s": round(gap_s - real, 2) if gap else None, "new_gaps": len(new),
        "recovered": t_rec is not None,
        "reconnect_delay_s": round(t_rec - t_back, 2) if t_rec is not None else None,
        "states_seen": sorted(states),
        "queries": len(queries), "queries_ok": sum(q["code"] == 200 for q in queries),
        "query_codes": sorted({q["code"] for q in queries}),
        "query_ms_max": max((q["ms"] for q in queries), default=None),
    }
