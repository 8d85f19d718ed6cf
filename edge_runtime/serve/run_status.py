"""One stream's status as the API and the CLI show it."""
from __future__ import annotations

import time
from typing import Any


def runtime_status(rt) -> dict[str, Any]:
    """What /v1/status and the status line show of one stream (a ``pipeline.Runtime``): its
    memory's status (``StreamState.status``) and the Runtime's public fields."""
    e = rt.engine
    mem = rt.stream.status()
    st = rt.source_stats
    fps = rt.intake_fps
    return {
        "stream": rt.name,
        "state": rt.state.value,
        "error": rt.error,
        "end_reason": rt.end_reason,
        "outage_since": rt.outage_since,
        "source_problem": rt.source_problem,
        "source": rt.source_label,
        "coverage": mem["coverage"],
        "stream_time": mem["stream_time"],
        "wall_origin": rt.wall_origin,
        "frames_in": rt.frames_in,
        "frames_processed": mem["frames_processed"],
        "pending_frames": mem["pending_frames"],
        "clips": mem["clips"],
        "memory_bytes": mem["memory_bytes"],
        # which token selector writes the memory, and the bytes of its own recurrent state (s5), part of memory_bytes
        "sampler": {"kind": e.cfg.sampler.kind, "state_bytes": e.bundle.sampler_state_bytes},
        "gaps": mem["gaps"],
        # the reader's timeline track (tokens, fill, horizon, oldest / newest time held), absent without one
        **({"timeline": mem["timeline"]} if "timeline" in mem else {}),
        # the ring of recent item crops the alerts' evidence is taken from (bytes, bound), absent without one
        **({"evidence": mem["evidence"]} if "evidence" in mem else {}),
        "ood": mem["ood"],
        "restored_from": rt.restored_from,
        "fps": round(fps, 3),
        "stream_rate": round(fps / e.intake_fps, 3),
        "dropped": int(st.get("dropped", 0)),
        "reconnects": int(st.get("reconnects", 0)),
        # live sources: attempts that delivered nothing (the log repeats one failure at most every 10 min)
        "connect_failures": int(st.get("connect_failures", 0)) + int(st.get("stalls", 0)),
        "decode_errors": int(st.get("decode_errors", 0)),
        "backend": e.backend,
        # which answers queries get: "reader" (the memory reader, with not_seen and confidence) or "heads"
        "answers": e.answers_kind,
        "bundle": e.bundle.bundle_id,
        "last_snapshot": str(rt.last_snapshot_path) if rt.last_snapshot_path else None,
        "last_snapshot_at": rt.last_snapshot_at,
        # a full or read-only state directory: periodic snapshots fail, and a restart would lose the memory
        "snapshot_error": rt.snapshot_error,
        "uptime_s": round(time.time() - rt.started, 1),
    }
