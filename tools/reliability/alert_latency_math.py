"""The arithmetic of the alert latency measurement (tools/reliability/alert_latency.py): the frame
counter read from ``/metrics`` text, when each frame reached the runtime (``FrameClock``, bracketed by
the polls), which frame ends an alert's event, each alert's latencies from those, and their median /
p95 / max; with ``--items``, which ground-truth bag each alert found (``match``) and the latencies from
its true end, its nudge's and its evidence's bytes (``item_latency``). Pure (no process, broker or
network), apart from the paced run that feeds it, so tests/test_alert_latency.py checks it without
running one."""
from __future__ import annotations

import bisect
import math
import re
import statistics
import threading
from typing import Any

from tools.reliability.common import percentile

_FRAMES_IN = re.compile(r'^lvm_frames_in_total\{([^}]*)\}\s+(\S+)\s*$', re.MULTILINE)
_STREAM_LABEL = re.compile(r'stream="((?:[^"\\]|\\.)*)"')


class LatencyError(RuntimeError):
    """What stops the measurement (one line)."""


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
    """n, median, p95 (the nearest sample to the rank, numpy's "nearest" method, as the other reliability
    tools), max; seconds rounded to 0.01."""
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


MATCH_TOL_S = 5.0  # an alert finds a target it overlaps widened by this much (as tools/accuracy/alerts_eval.py)
Target = tuple[str, float, float]  # (product, start, end) of an item bagged and never scanned


def match(alert: dict[str, Any], targets: list[Target]) -> Target | None:
    """The target of the alert's product its interval overlaps (widened by MATCH_TOL_S), nearest end first."""
    near = [t for t in targets if t[0] == alert["product"] and alert["start"] < t[2] + MATCH_TOL_S
            and alert["end"] > t[1] - MATCH_TOL_S]
    return min(near, key=lambda t: abs(t[2] - alert["end"])) if near else None


def item_latency(alerts: list[dict[str, Any]], clock: FrameClock, fps: float, targets: dict[str, list[Target]],
                 alert_rx: dict[str, float], nudge_rx: dict[str, float], hook_rx: dict[str, float],
                 evidence_bytes: dict[str, int], early_rx: list[tuple[float, dict]] = ()) -> dict[str, Any]:
    """The item tracks' figures: per alert its target (``targets``: per stream) and its latencies from the
    target's true end (E: the arrival of the first frame at or after it) to the outbox row, the alert on
    the broker, the nudge on the broker and on the webhook; from the end of the model's own event (every
    alert, right or false); the nudge after the outbox row; the evidence's bytes. The latencies from the
    true end count the first alert of each target only. ``early_rx``: the early nudges received from the
    broker (arrival, body), each matched to a target as an alert is: per target the first nudge the screen
    got, early or its alert's (``first_nudge``), and the early nudges that matched none."""
    def arrival(stream: str, end: float) -> tuple[float, float] | None:
        return clock.arrival(stream, min(end_frame(end, fps), max(0, clock.frames(stream) - 1)))

    def after(rx: dict[str, float], alert_id: str, e: float) -> float | None:
        return round(rx[alert_id] - e, 3) if alert_id in rx else None

    first_of: dict[tuple[str, Target], str] = {}  # (stream, target) -> the id of the first alert raised for it
    for a in sorted(alerts, key=lambda a: a["raised_at"]):
        t = match(a, targets.get(a["stream"], []))
        if t is not None:
            first_of.setdefault((a["stream"], t), a["id"])
    rows, found = [], set()
    for a in alerts:
        t = match(a, targets.get(a["stream"], []))
        row: dict[str, Any] = {"id": a["id"], "stream": a["stream"], "product": a["product"], "start": a["start"],
                               "end": a["end"], "images": len(a.get("images") or []),
                               "evidence_bytes": evidence_bytes.get(a["id"], 0),
                               "target": None if t is None else list(t),
                               "first_for_target": first_of.get((a["stream"], t)) == a["id"]}
        own = max([float(e["end"]) for e in a.get("evidence") or [] if "end" in e], default=float(a["end"]))
        arr = arrival(a["stream"], own)
        if arr is not None:  # from the end of the model's own event the rule read (every alert, right or not)
            row.update(own_end_s=round(own, 2), own_outbox_s=round(a["raised_at"] - arr[0], 3),
                       own_nudge_s=after(nudge_rx, a["id"], arr[0]))
        if t is not None:
            found.add((a["stream"], t))
            arr = arrival(a["stream"], t[2])
            if arr is not None:
                e = arr[0]
                row.update(bag_end_wall=round(e, 3), outbox_s=round(a["raised_at"] - e, 3),
                           mqtt_s=after(alert_rx, a["id"], e), nudge_s=after(nudge_rx, a["id"], e),
                           nudge_webhook_s=after(hook_rx, a["id"], e))
        rows.append(row)
    firsts = [r for r in rows if r["first_for_target"]]
    per_alert = [r["evidence_bytes"] for r in rows]
    # the screen's first nudge of each target: an early one (matched as an alert is) or its first alert's
    first_nudge: dict[tuple[str, Target], float] = {}
    for r in firsts:
        if r["target"] is not None and r["id"] in nudge_rx:
            first_nudge[(r["stream"], tuple(r["target"]))] = nudge_rx[r["id"]]
    early_false = 0
    for at, body in early_rx:
        t = match(body, targets.get(body.get("stream"), []))
        if t is None:
            early_false += 1
            continue
        key = (body["stream"], t)
        first_nudge[key] = min(first_nudge.get(key, at), at)
    first_nudges = [{"stream": stream, "target": list(t), "s": round(at - arr[0], 3)}
                    for (stream, t), at in first_nudge.items() if (arr := arrival(stream, t[2])) is not None]
    return {
        "early_nudges": len(early_rx), "early_nudges_matching_no_target": early_false,
        "targets_nudged": len(first_nudge), "first_nudge_from_true_bag_end_s": stats([r["s"] for r in first_nudges]),
        "first_nudges": first_nudges,
        "targets": sum(len(v) for v in targets.values()), "alerts": len(alerts),
        "matched_alerts": sum(r["target"] is not None for r in rows), "targets_found": len(found),
        "latency_from_true_bag_end_s": {k[:-2]: stats([r[k] for r in firsts if r.get(k) is not None])
                                        for k in ("outbox_s", "mqtt_s", "nudge_s", "nudge_webhook_s")},
        "latency_from_own_event_end_s": {k[4:-2]: stats([r[k] for r in rows if r.get(k) is not None])
                                         for k in ("own_outbox_s", "own_nudge_s")},
        "nudge_after_outbox_row_s": stats([nudge_rx[a["id"]] - a["raised_at"] for a in alerts
                                           if a["id"] in nudge_rx]),
        "nudges_on_broker": len(nudge_rx), "nudges_on_webhook": len(hook_rx),
        "evidence_bytes_per_alert": stats([float(b) for b in per_alert]), "evidence_bytes_stored": sum(per_alert),
        "rows": rows,
    }
