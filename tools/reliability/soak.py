"""Soak: an accelerated 24-hour stream (the demo unpaced) through `lvm-edge run`, sampling the
process's RSS, open fds and threads and the state dir's size at every stream-hour.

Pass: RSS grows ≤ 1 % from the first stream-hour to the last, fds and threads stay flat (±1), the
state dir stays the size of one snapshot, and the stream (longer than the sampled hours, so
that every sample sees it running) reaches its end with every frame processed. --quick streams 10
"hours" of 60 stream-seconds each: the same checks, on a few minutes of stream.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tools.reliability.common import RunProcess, dir_bytes

RSS_GROWTH_MAX = 0.01


def _writing(state_dir: Path) -> bool:
    return state_dir.is_dir() and any(p.name.endswith(".tmp") for p in state_dir.iterdir())


def _flat(values: list[int] | None) -> bool:
    return bool(values) and max(values) - min(values) <= 1


def run(quick: bool, workdir: Path, log=print, hours: int | None = None, hour_s: float | None = None) -> dict[str, Any]:
    hours = hours if hours is not None else (10 if quick else 24)
    hour_s = hour_s if hour_s is not None else (60.0 if quick else 3600.0)
    # Streams on past the last sample so that every sample sees it running. Short "hours" pass faster
    # than the sampler polls on a loaded machine, so there the tail is as long as the sampled part.
    total = hours * hour_s + (hours * hour_s if hour_s < 600 else hour_s / 2)
    source = f"demo://checkout?seed=21&duration={total:g}"
    t0 = time.monotonic()
    rt = RunProcess(["--source", source, "--keep-serving", "--snapshot-every", "5"], Path(workdir), name="soak")
    samples: list[dict[str, Any]] = []
    res: dict[str, Any] = {"stream_hours": hours, "hour_s": hour_s}
    try:
        rt.start()
        rt.wait_ready()
        nxt = 1
        while nxt <= hours:
            st = rt.status()
            t = st.get("stream_time") or 0.0
            ended = st.get("state") in ("ended", "failed")
            if t >= nxt * hour_s or ended:
                busy = _writing(rt.state_dir)
                row = {"hour": nxt, "stream_time": t, "wall_s": round(time.monotonic() - t0, 1),
                       **rt.proc_stats(), "state_dir_bytes": dir_bytes(rt.state_dir),
                       "memory_bytes": st.get("memory_bytes"), "state": st.get("state")}
                if (busy or _writing(rt.state_dir)) and not ended:
                    continue  # a snapshot being written holds one more fd and a second file: sample again
                if ended:
                    res["error"] = (f"the stream {st.get('state')} at {t:.0f} s, before the hour-{nxt} sample: "
                                    f"{st.get('error') or st.get('end_reason')}")
                    break
                samples.append(row)
                log(f"soak: hour {nxt}/{hours}: rss {row['rss_kb'] / 1024:.1f} MB, fds {row['fds']}, "
                    f"threads {row['threads']}, state dir {row['state_dir_bytes'] / 1e6:.2f} MB")
                nxt += 1
                continue
            if not rt.alive():
                res["error"] = f"lvm-edge run exited: {rt.last_line()}"
                break
            time.sleep(0.1)
        end = rt.wait_status(lambda s: s.get("state") in ("ended", "failed"), timeout=300, every=0.5)
        res.update({"end_state": end.get("state"), "frames_processed": end.get("frames_processed"),
                    "dropped": end.get("dropped")})
    except Exception as err:  # noqa: BLE001 — reported, not raised
        res["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    finally:
        text = rt.log_text()
        rt.close()
    res["samples"] = samples
    res["traceback_in_log"] = "Traceback" in text
    if len(samples) >= 2:
        first, last = samples[0], samples[-1]
        res["rss_growth"] = round(last["rss_kb"] / first["rss_kb"] - 1, 4)
        # the rate says whether growth is steady (a leak or a cache still filling) or a step at the start
        res["rss_kb_per_hour"] = round((last["rss_kb"] - first["rss_kb"]) / (len(samples) - 1), 1)
        res["rss_mb"] = {"first": round(first["rss_kb"] / 1024, 1), "last": round(last["rss_kb"] / 1024, 1),
                         "max": round(max(s["rss_kb"] for s in samples) / 1024, 1)}
        res["fds"] = sorted({s["fds"] for s in samples})
        res["threads"] = sorted({s["threads"] for s in samples})
        res["state_dir_mb"] = sorted({round(s["state_dir_bytes"] / 1e6, 2) for s in samples})
    res["wall_s"] = round(time.monotonic() - t0, 1)
    checks = {
        "no error": not res.get("error"),
        f"{hours} samples": len(samples) == hours,
        "stream ended": res.get("end_state") == "ended",
        "every frame processed": res.get("frames_processed") == int(total) and res.get("dropped") == 0,
        f"rss growth <= {RSS_GROWTH_MAX:.0%}": res.get("rss_growth", 1.0) <= RSS_GROWTH_MAX,
        # One either way is the sampler's own request: its server socket may not be closed yet, and
        # the API's worker pool starts a thread when a request beats the last worker back to idle.
        "fds flat": _flat(res.get("fds")),
        "threads flat": _flat(res.get("threads")),
        "state dir one snapshot": bool(samples) and max(s["state_dir_bytes"] for s in samples[1:] or samples)
        <= 2 * samples[-1]["state_dir_bytes"],
        "no traceback in log": not res["traceback_in_log"],
    }
    res["failed_checks"] = [name for name, ok in checks.items() if not ok]
    res["passed"] = not res["failed_checks"]
    return res
