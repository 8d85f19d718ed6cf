"""Load: what a store's box sees. One camera streams at its real pace (the demo, ``--realtime``, one
frame a second at the model's fps) into a memory that already holds ``MEMORY_S`` seconds (streamed
unpaced and snapshotted first, then restored: the queries read a full memory, not an empty one),
while clients query it over HTTP. Two figures:

- **paced** (the target): 32 clients, each sending at random times (Poisson) at 2 requests a second,
  as lanes' dashboards and tills that each ask now and then; open loop, so a request's latency is
  timed from when it was due (a client still waiting on its last answer counts the delay). Passed
  when p99 ≤ ``P99_TARGET_MS``.
- **saturation**: the same 32 clients closed loop (each sends its next request when its last one is
  answered): the requests per second the box serves at most, and the p99 there (≈ clients /
  throughput, queueing, not a query's own cost).

Each client cycles through a mix (status, the three queries, a batch of 8), each on its own
connection. The clients run in this process, on the same cores as the runtime
(``client_cpu_ms_per_request`` says what they take). Correct: no error (transport error or
non-2xx), the camera streamed throughout, and when it ends every frame it delivered was processed
(the memory's frames are the restored ones and the camera's), none dropped.
"""
from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from tools.reliability.common import RunProcess, percentile

P99_TARGET_MS = 50.0
PACED_RATE = 2.0   # requests a second from each client
MEMORY_S = 600     # stream seconds in memory before the camera starts at its real pace
MARGIN_S = 20.0    # real-paced stream seconds beyond the load (start-up, the wait for the end)


def _image() -> str:
    img = (np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)
    return base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()


def _requests(img: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("status", "/v1/status", None),
        ("activity", "/v1/query/activity", {"object_image": img, "start": 0, "end": 600}),
        ("object", "/v1/query/object", {"activity": "scan", "start": 0, "end": 600, "fps": 0.5}),
        ("time", "/v1/query/time", {"activity": "bag", "object_image": img, "start": 0, "end": 600, "k": 3}),
        ("batch8", "/v1/query/batch", {"queries": [{"type": "object", "activity": i % 8, "start": 60 * i,
                                                    "end": 60 * i + 120} for i in range(8)]}),
    ]


async def _send(c: httpx.AsyncClient, name: str, path: str, body, errors: list[str]) -> bool:
    try:
        r = await (c.get(path) if body is None else c.post(path, json=body))
        r.read()
    except httpx.HTTPError as err:
        errors.append(f"{name}: {type(err).__name__}: {err}"[:200])
        return False
    if r.status_code != 200:
        errors.append(f"{name}: {r.status_code} {r.text[:150]}")
        return False
    return True


async def _closed_client(i: int, base: str, until: float, reqs, lat: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        k = i
        while time.monotonic() < until:
            name, path, body = reqs[k % len(reqs)]
            k += 1
            t0 = time.perf_counter()
            if await _send(c, name, path, body, errors):
                lat.append((time.perf_counter() - t0) * 1000)


async def _paced_client(i: int, base: str, seconds: float, rate: float, reqs, lat: list[float], errors: list[str],
                        ready: asyncio.Barrier) -> None:
    rng = np.random.default_rng(100 + i)
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        await ready.wait()  # every client made first (tens of ms each): the schedule starts after
        until = time.perf_counter() + seconds
        k, due = i, time.perf_counter() + rng.exponential(1 / rate)
        while due < until:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            name, path, body = reqs[k % len(reqs)]
            k += 1
            if await _send(c, name, path, body, errors):
                # from when it was due: a client still waiting on its last answer sends late
                lat.append((time.perf_counter() - due) * 1000)
            due += rng.exponential(1 / rate)


def _figures(lat: list[float], errors: list[str], seconds: float) -> dict[str, Any]:
    n = len(lat) + len(errors)
    return {"requests": n, "requests_per_s": round(n / seconds, 1), "errors": len(errors),
            "error_examples": errors[:3], "p50_ms": round(percentile(lat, 50), 1),
            "p99_ms": round(percentile(lat, 99), 1), "max_ms": round(max(lat, default=0.0), 1)}


async def _paced(base: str, clients: int, rate: float, seconds: float) -> dict[str, Any]:
    reqs, lat, errors = _requests(_image()), [], []
    ready = asyncio.Barrier(clients)
    await asyncio.gather(*(_paced_client(i, base, seconds, rate, reqs, lat, errors, ready) for i in range(clients)))
    return {"rate_per_client": rate, **_figures(lat, errors, seconds)}


async def _closed(base: str, clients: int, seconds: float) -> dict[str, Any]:
    reqs, lat, errors = _requests(_image()), [], []
    until = time.monotonic() + seconds
    await asyncio.gather(*(_closed_client(i, base, until, reqs, lat, errors) for i in range(clients)))
    return _figures(lat, errors, seconds)


def run(quick: bool, workdir: Path, log=print, seconds: float | None = None, clients: int = 32) -> dict[str, Any]:
    """``seconds``: how long each of the two loads lasts (default 3 s with ``quick``, else 60 s)."""
    seconds = seconds if seconds is not None else (3.0 if quick else 60.0)
    workdir = Path(workdir)
    live_s = int(2 * seconds + MARGIN_S)
    # one video for both runs: the restored memory is this source's, and the camera goes on from there
    source = f"demo://checkout?seed=9&duration={MEMORY_S + live_s}"
    t0 = time.monotonic()
    res: dict[str, Any] = {"clients": clients, "seconds": seconds, "memory_s": MEMORY_S, "camera_s": live_s}
    fill = RunProcess(["--source", source, "--duration", str(MEMORY_S), "--no-keep-serving"], workdir, name="load-fill")
    rt = RunProcess(["--source", source, "--realtime", "--keep-serving"], workdir, name="load")
    text = ""
    try:
        fill.start()
        if fill.p.wait(600) != 0:
            raise RuntimeError(f"filling the memory failed: {fill.last_line()}")
        text += fill.log_text()
        rt.start()
        rt.wait_ready()
        # restored, the demo reads (and skips) the frames the memory holds before it paces the next ones
        before = rt.wait_status(lambda s: (s.get("stream_time") or 0) >= MEMORY_S, timeout=600, every=0.5)
        res["frames_restored"] = (before.get("restored_from") or {}).get("frames_processed")
        res["paced"] = asyncio.run(_paced(rt.url, clients, PACED_RATE, seconds))
        cpu0 = time.process_time()
        res["saturation"] = asyncio.run(_closed(rt.url, clients, seconds))
        res["client_cpu_ms_per_request"] = round(
            1000 * (time.process_time() - cpu0) / max(1, res["saturation"]["requests"]), 2)
        during = rt.status()
        res["memory_at_start_s"] = (before.get("coverage") or {}).get("end")
        res["streaming_throughout"] = during.get("state") == "streaming"
        res["camera_s_during_load"] = round((during.get("stream_time") or 0) - (before.get("stream_time") or 0), 1)
        end = rt.wait_status(lambda s: s.get("state") in ("ended", "failed"), timeout=live_s + 300, every=0.5)
        res.update({"end_state": end.get("state"), "end_stream_time": end.get("stream_time"),
                    "frames_in": end.get("frames_in"), "frames_processed": end.get("frames_processed"),
                    "dropped": end.get("dropped")})
    except Exception as err:  # noqa: BLE001 — reported, not raised
        res["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    finally:
        text += rt.log_text()
        fill.close()
        rt.close()
    res["traceback_in_log"] = "Traceback" in text
    res["wall_s"] = round(time.monotonic() - t0, 1)
    loads = [res.get("paced") or {}, res.get("saturation") or {}]
    # correct under load (no error, the camera streamed throughout and every frame it delivered was
    # processed, to the video's end) and fast enough (p99 of the paced clients)
    res["correct"] = bool(not res.get("error") and all(x.get("requests", 0) > 0 and x.get("errors") == 0 for x in loads)
                          and res.get("streaming_throughout") and res.get("end_state") == "ended"
                          and res.get("dropped") == 0 and res.get("frames_restored")
                          and res.get("frames_processed") == res["frames_restored"] + (res.get("frames_in") or 0)
                          and (res.get("end_stream_time") or 0) >= MEMORY_S + live_s - 2
                          and not res["traceback_in_log"])
    res["passed"] = res["correct"] and (res.get("paced") or {}).get("p99_ms", float("inf")) <= P99_TARGET_MS
    if "saturation" in res:
        p, s = res["paced"], res["saturation"]
        log(f"load, {clients} clients paced at {PACED_RATE:g}/s each ({p['requests_per_s']}/s) while the camera "
            f"streams at its pace: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, {p['errors']} errors")
        log(f"load, {clients} clients closed loop (saturation): {s['requests_per_s']}/s, p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, {s['errors']} errors; the camera's frames {res.get('frames_in')} received, "
            f"dropped {res.get('dropped')}")
    return res
