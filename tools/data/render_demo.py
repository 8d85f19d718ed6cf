#!/usr/bin/env python
"""Render one procedural checkout video to a file, with its ground truth (and optionally queries).

    python -m tools.data.render_demo --seed 7 --duration 600 --fps 5 --out /tmp/demo.mp4 [--overlay] [--queries 50 [--absent 10]]

Writes <out> (mp4 with the mp4v codec, or avi with MJPG), <out stem>.annotations.json
(docs/annotation-format.md) and, with --queries N, <out stem>.queries.json (with --absent M, M more
queries whose truth is "not seen", marked "absent": true). --overlay draws the
ground-truth boxes, the current activity and zone labels on the frames (for eyeballing, not training).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.checkout import ACTIVITIES, PRODUCTS, CheckoutVideo, sample_queries
from edge_runtime.checkout.absent_queries import ABSENT_SEED, sample_absent_queries


def _overlay(img: np.ndarray, labels: dict, scale: int) -> np.ndarray:
    out = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    h, w = out.shape[:2]
    for inst in labels["instances"]:
        x1, y1, x2, y2 = inst["box"]
        col = (255, 255, 0) if inst["instance_id"] == labels["activity_instance"] else (0, 255, 255)
        cv2.rectangle(out, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)), col, 1)
        cv2.putText(out, f"{inst['instance_id']}:{PRODUCTS[inst['class_id']]}", (int(x1 * w), max(8, int(y1 * h) - 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, col, 1)
    act = ACTIVITIES[labels["activity"]] if labels["activity"] >= 0 else "-"
    cv2.putText(out, f"t={labels['t']:.1f} {act}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.data.render_demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--size", type=int, default=112, help="frame side in pixels (default 112)")
    ap.add_argument("--look", default=None, help="look index or name (default: a training look from the seed)")
    ap.add_argument("--fps", type=float, default=5.0, help="frames per second written (default 5)")
    ap.add_argument("--out", default="checkout_demo.mp4", help=".mp4 or .avi")
    ap.add_argument("--overlay", action="store_true", help="draw ground-truth boxes and labels (2x upscaled)")
    ap.add_argument("--queries", type=int, default=0, help="also sample N ReST queries to <stem>.queries.json")
    ap.add_argument("--absent", type=int, default=0, help="with --queries: also M absent queries (truth \"not seen\")")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".avi"):
        ap.error("--out must end in .mp4 or .avi")
    if args.duration <= 0 or args.fps <= 0:
        ap.error("--duration and --fps must be positive")
    if args.absent < 0 or (args.absent and args.queries <= 0):
        ap.error("--absent M needs --queries N (N > 0) and M >= 0")
    video = CheckoutVideo(seed=args.seed, duration_s=args.duration, size=args.size, look=args.look)
    scale = 2 if args.overlay else 1
    side = args.size * scale
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if out.suffix.lower() == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(out), fourcc, args.fps, (side, side))
    if not writer.isOpened():
        print(f"render_demo: OpenCV cannot write {out} (codec missing?)", file=sys.stderr)
        return 1
    n = int(np.ceil(args.duration * args.fps - 1e-9))
    t0 = time.perf_counter()
    try:
        for t, img in tqdm(video.frames(args.fps), total=n, unit="frame", desc=video.video_id, disable=args.no_progress):
            if args.overlay:
                img = _overlay(img, video.frame_labels(t), scale)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    dt = time.perf_counter() - t0
    ann = video.annotations()
    ann_path = out.with_suffix(".annotations.json")
    ann_path.write_text(json.dumps(ann))
    msg = (f"render_demo: {video.video_id}: {n} frames in {dt:.1f} s ({n / dt:.0f} frames/s, "
           f"{args.duration / dt:.0f}x real time) -> {out}, {ann_path}")
    if args.queries > 0:
        qs = sample_queries(ann, args.queries, np.random.default_rng(args.seed))
        qs += sample_absent_queries(ann, args.absent, np.random.default_rng(args.seed + ABSENT_SEED))
        q_path = out.with_suffix(".queries.json")
        q_path.write_text(json.dumps([q.to_dict() for q in qs]))
        msg += f", {q_path} ({len(qs)} queries)"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
