"""Calibrating a reader for its timeline track: with the timeline beside the memory, the answer
step's evidence has another distribution (more tokens, each a frame's strongest), so p(seen) and
p(right) are fitted again, on the same held-out calibration videos, with the answers reading both
tracks as the runtime does. The reader file then carries both fits: ``calibration`` (memory alone)
and ``timeline.calibration``; lvm-export puts the one its bundle reads into the manifest.

    python -m export.train.timeline_calibration --reader checkpoints/lvm-tiny-reader.safetensors

adds the timeline's calibration to an existing reader file (weights unchanged), on the calibration
videos its training used (the training seeds after its ``videos``); ``--memory-too`` fits the
memory-alone calibration again as well (after a change to how calibrations are fitted);
``--calib-videos N`` calibrates on N such videos instead of the number it was trained with (the
file then records N).
"""
from __future__ import annotations

import argparse
import os
import time

from edge_runtime.backends.bundle import LONGEST_WINDOW_S
from edge_runtime.memory.timeline import TimelineSpec
from export.train.timeline_tokens import PER_FRAME, default_timeline


def timeline_meta(reader, answer, calib_videos: list, cfg, prior, spec: TimelineSpec) -> dict:
    """The reader file's "timeline" entry: the track's shape and the calibration of answers reading it."""
    from export.train.reader_calibration import calibrate

    return {"per_frame": spec.per_frame, "horizon_s": spec.horizon_s,
            "calibration": calibrate(reader, answer, calib_videos, cfg, prior, timeline=spec)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.train.timeline_calibration", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lvm-tiny.safetensors")
    ap.add_argument("--reader", required=True, help="reader file to add the timeline's calibration to")
    ap.add_argument("--out", help="where to write (default: over --reader, atomically)")
    ap.add_argument("--horizon-s", type=float, default=LONGEST_WINDOW_S)
    ap.add_argument("--per-frame", type=int, default=PER_FRAME)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-too", action="store_true",
                    help="fit the memory-alone calibration (what lvm-export --no-timeline bundles) again as well")
    ap.add_argument("--calib-videos", type=int, default=None,
                    help="calibrate on this many videos (training seeds after the reader's training videos; "
                         "default: as many as the reader file records)")
    args = ap.parse_args(argv)
    if args.calib_videos is not None and args.calib_videos < 1:
        ap.exit(2, f"{ap.prog}: --calib-videos must be at least 1, got {args.calib_videos}\n")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from edge_runtime.checkout import training_video
    from export.dataset.video_data import token_cache_dir
    from export.model.checkpoint import load_checkpoint
    from export.model.reader import load_reader, save_reader
    from export.train.reader_videos import make_videos

    torch.set_num_threads(args.threads)
    net, _ = load_checkpoint(args.checkpoint)
    net.eval()
    cfg = net.cfg
    try:
        spec = default_timeline(cfg, args.horizon_s, args.per_frame)
        reader, answer, meta = load_reader(args.reader, cfg)
    except ValueError as err:
        ap.exit(2, f"{ap.prog}: {err}\n")
    tr = meta.get("train") or {}
    if "videos" not in tr or "calib_videos" not in tr:
        ap.exit(2, f"{ap.prog}: {args.reader} does not say which videos calibrated it (trained on a dataset folder?)\n")
    seed = int(tr.get("seed", 0))
    if args.calib_videos is not None:
        tr["calib_videos"] = args.calib_videos
        meta["train"] = tr
    specs = [training_video(seed, i) for i in range(tr["videos"], tr["videos"] + tr["calib_videos"])]
    t0 = time.time()
    calib = make_videos(net, specs, tr.get("video_s", 1800.0), tr.get("queries", 300), tr.get("every", 2),
                        tr.get("absent_share", 0.2), "calibration videos", True, token_cache_dir(), keep_video=True)
    if args.memory_too:
        from export.train.reader_calibration import calibrate

        meta["calibration"] = calibrate(reader, answer, calib, cfg, meta["prior"])
    meta["timeline"] = timeline_meta(reader, answer, calib, cfg, meta["prior"], spec)
    meta["timeline"]["calibrate_min"] = round((time.time() - t0) / 60, 2)
    save_reader(args.out or args.reader, reader, answer, meta)
    print(f"wrote {args.out or args.reader}: timeline {spec.per_frame}/frame over {spec.horizon_s:g} s, "
          f"calibrated in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
