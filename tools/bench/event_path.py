"""The event path's cost per camera: streaming rate at event_fps (every frame through the backbone and the
event head, item tracks and events), handed over a second's frames at a time (a file's) and 0.4 s of them
at a time (a camera's, ``Engine.paced_batch``), the same without the bundle's track labeler (when it has
one: the rows it keeps per track and each track labelled as it ends), beside the memory path alone at its
own fps, in one run.

    python -m tools.bench.event_path --threads 2 --video-s 300 --repeats 3 --json docs/benchmarks/event_path.json

A held-out generator video is rendered once (frames kept in memory), then streamed ``--repeats`` times
through each setting, in alternation, from an empty stream, each setting's frames per ingest call as the
runtime hands them over. Reported: the real-time factor (video seconds per wall second), median and
spread (min - max), the ratio of the medians, and the stream's state bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.checkout import CheckoutVideo, heldout_video
from edge_runtime.engine.engine import Engine
from tools.repo_paths import REPO


def stream_once(eng: Engine, frames: np.ndarray, times: np.ndarray, step: int) -> tuple[float, int]:
    """(wall seconds, state bytes) of one stream of the frames through ``eng``, ``step`` frames per call."""
    st = eng.new_stream()
    t0 = time.perf_counter()
    for k in range(0, len(frames), step):
        eng.ingest(st, frames[k:k + step], times[k:k + step])
    eng.flush(st)
    return time.perf_counter() - t0, st.memory_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.event_path", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "engines" / "lvm-tiny-fp32"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--video-s", type=float, default=300.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.video_s <= 0 or args.threads < 1:
        print("event_path: --repeats, --video-s and --threads must be positive", file=sys.stderr)
        return 2
    events = Engine(args.bundle, threads=args.threads)
    if events.events is None:
        print(f"event_path: {args.bundle} has no event head", file=sys.stderr)
        return 2
    memory = Engine(args.bundle, threads=args.threads, events=False)
    seed, look = heldout_video(0, 0)
    video = CheckoutVideo(seed, args.video_s, size=events.frame_size, look=look)
    plain = None  # the same event path without the bundle's track labeler: what it costs
    if events.events.sequence is not None:
        plain = Engine(args.bundle, threads=args.threads)
        plain.events.sequence = None
    rendered = {}
    for name, eng, step in (("event path", events, events.intake_batch),
                            ("event path, a camera's hand-over", events, events.paced_batch),
                            *((("event path, no track labeler", plain, plain.intake_batch),) if plain else ()),
                            ("memory alone", memory, memory.intake_batch)):
        ts, fr = zip(*video.frames(eng.intake_fps))
        rendered[name] = (eng, np.stack(fr), np.asarray(ts, np.float64), step)
    runs: dict[str, list[float]] = {name: [] for name in rendered}
    state: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, (eng, fr, ts, step) in rendered.items():
            wall, nbytes = stream_once(eng, fr, ts, step)
            runs[name].append(args.video_s / wall)
            state[name] = nbytes
    rows = {name: {"fps": rendered[name][0].intake_fps, "frames_per_call": rendered[name][3],
                   "realtime_x": {"median": round(statistics.median(r), 1), "min": round(min(r), 1),
                                  "max": round(max(r), 1)},
                   "state_bytes": state[name]} for name, r in runs.items()}
    ratio = rows["memory alone"]["realtime_x"]["median"] / rows["event path"]["realtime_x"]["median"]
    paced = rows["event path"]["realtime_x"]["median"] / rows["event path, a camera's hand-over"]["realtime_x"]["median"]
    if plain is not None:
        result_labeler = round(rows["event path, no track labeler"]["realtime_x"]["median"]
                               / rows["event path"]["realtime_x"]["median"], 3)
    result = {"tool": "tools/bench/event_path.py", "bundle": os.path.relpath(args.bundle, REPO), "threads": args.threads,
              "video_s": args.video_s, "repeats": args.repeats, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
              "rows": rows, "memory_over_event_path": round(ratio, 2), "file_over_camera_hand_over": round(paced, 2),
              **({"track_labeler_cost": result_labeler} if plain is not None else {})}
    for name, r in rows.items():
        x = r["realtime_x"]
        print(f"{name:32s} {r['fps']:g} fps, {r['frames_per_call']} a call: {x['median']}x real time "
              f"(spread {x['min']}-{x['max']}), state {r['state_bytes'] / 1e6:.2f} MB")
    print(f"the event path costs {ratio:.2f}x the memory path's time, a camera's hand-over {paced:.2f}x a file's "
          f"(medians); load average {os.getloadavg()[0]:.1f}")
    if plain is not None:
        print(f"the track labeler makes the event path take {result_labeler:.3f}x the time (medians)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
