"""lvm-train's plan: what a run will do and how long each stage takes, printed before anything starts
(the rates: export/train/eta.py)."""
from __future__ import annotations

from pathlib import Path

from export.cli.train_events import events_plan_line
from export.cli.train_reader import reader_seconds
from export.cli.train_track_labels import track_labels_plan_line
from export.train.eta import RATES_2_CORES, estimate, minutes, rates_for, stream_clips


def plan(args, cfg, n_videos: int, video_s: float, heads_steps: int, world: int, items) -> list[str]:
    """What this run will do and how long each stage takes at the rates measured on 2 CPU cores
    (export/train/eta.py), printed before anything starts. A model with no measured rates gets the
    stages without times."""
    tc = cfg.train
    found = rates_for(cfg.name, (cfg.backbone.name, cfg.backbone.image_size))
    rates = found[1] if found else None
    lines, total = [], 0.0

    unmeasured: list[str] = []

    def took(unit: str, count: float, vs: float = 1800.0) -> float:
        if rates and unit not in rates:  # a stage this config was never timed on (lvm-edge's heads stage)
            unmeasured.append(unit.split("_per_")[0] + " stage")
            return 0.0
        return estimate(unit, count, vs, rates) if rates else 0.0

    def shown(sec: float) -> str:
        return f", ~{minutes(sec)}" if rates and sec > 0 else ""

    n_clips = stream_clips(video_s, cfg.stream.fps, cfg.stream.clip_frames)
    if not args.sampler_from:
        sec = took("tokens_per_video", n_videos, video_s)
        taken = args.backbone_from or args.init_from or args.heads_from or args.resume
        if not taken and args.backbone_epochs > 0:
            sec += took("pretrain_per_frame_epoch", args.backbone_frames * args.backbone_epochs)
        lines.append(f"videos and backbone{shown(sec)}" + ("" if taken else " (backbone pre-training included)"))
        total += sec
        groups = -(-n_videos // (tc.batch_size * world))
        steps = (args.epochs or tc.epochs) * groups * n_clips
        steps = min(steps, args.max_steps) if args.max_steps else steps
        sec = took("stage1_per_step", steps)
        lines.append(f"stage 1 (sampler and heads): {steps} steps{shown(sec)}")
        total += sec
    if heads_steps:
        sec = took("heads_per_step", heads_steps)
        lines.append(f"heads stage: {heads_steps} steps{shown(sec)} (plus streaming its videos)")
        total += sec
    if args.no_reader:
        lines.append("reader stage: off (--no-reader); the checkpoint is answered by its heads")
    else:
        sec = reader_seconds(args, video_s, items, rates) if rates else 0.0
        if args.reader_init:
            start = f" from {args.reader_init}"
        elif args.init_from:
            from export.onnx.reader_graphs import default_reader_path

            start = f" from fresh weights (no {default_reader_path(Path(args.init_from))})"
        else:
            start = ""
        if items is not None:
            from export.train.reader_stage import calibration_split

            n_cal = calibration_split(len(items), args.reader_calib_videos)
            what = (f"{len(items) - n_cal} + {n_cal} train-split videos (the last {n_cal} held out to calibrate on)"
                    if n_cal else f"{len(items)} train-split videos (too few to hold one out: calibrated on them)")
        else:
            what = f"{args.reader_videos} + {args.reader_calib_videos} videos"
        lines.append(f"reader stage: {what}, {args.reader_steps} steps{start}{shown(sec)}")
        total += sec
    for line, sec in (events_plan_line(args, rates), track_labels_plan_line(args, rates, video_s)):
        lines.append(line)
        total += sec
    if found is None:
        return [f"lvm-train: plan ({cfg.name}): {line}" for line in lines] + [
            f"lvm-train: plan: no rates measured for {cfg.name} on 2 CPU cores (only for "
            f"{', '.join(RATES_2_CORES)}); each stage prints its ETA once its first steps have run"]
    whose = "" if found[0] == cfg.name else f" of {found[0]}, the same backbone"
    besides = f" (and the stages not timed: {', '.join(unmeasured)})" if unmeasured else ""
    return [f"lvm-train: plan ({cfg.name}, rates{whose} measured on 2 CPU cores): {line}" for line in lines] + [
        f"lvm-train: plan: ~{minutes(total)} in all{besides}"]
