"""lvm-train's event stage: its flags, its line in the plan, and the call into
``export.train.event_stage.train_events`` once the checkpoint is written (with --events-only, on the
checkpoint of --init-from alone: train_events_only.py)."""
from __future__ import annotations

from pathlib import Path

from export.cli.common import UsageError
from export.train.eta import estimate, minutes
from export.train.event_defaults import (
    EVENT_FRAMES,
    EVENT_HELD_FRAMES,
    EVENT_HELDOUT_FRAMES,
    EVENT_HELDOUT_VIDEOS,
    EVENT_STEPS,
    EVENT_VIDEOS,
    THRESHOLD_FRAMES,
)
from export.cpu_threads import default_threads


def add_event_args(p) -> None:
    p.add_argument("--no-events", action="store_true", help="no event stage: the bundle gets no event head "
                   "(per-frame item detections and the scanner light at 5 fps)")
    p.add_argument("--events-only", action="store_true", help="train only the event stage and the track labeler "
                   "(unless --no-track-labels), on the frozen backbone of --init-from's checkpoint, and write "
                   "OUT/<its stem>-events.safetensors and OUT/<its stem>-track-labels.safetensors (with --out the "
                   "checkpoint's folder: beside it, where lvm-export finds them); nothing else in OUT changes")
    p.add_argument("--event-steps", type=int, help=f"steps of the event stage (default {EVENT_STEPS})")
    p.add_argument("--event-videos", type=int, help=f"training videos of the event stage (default {EVENT_VIDEOS}; "
                   f"held-out videos measured: at most {EVENT_HELDOUT_VIDEOS})")
    p.add_argument("--event-frames", type=int, help=f"random frames from each of its videos (default {EVENT_FRAMES}; "
                   f"as many again, at most {EVENT_HELD_FRAMES}, from its handling periods)")


def events_planned(args) -> bool:
    """Whether this run trains an event head: generated videos only (their per-frame labels)."""
    return not args.no_events and not args.data


def events_plan_line(args, rates: dict | None) -> tuple[str, float]:
    """(the plan's line, its seconds) for the event stage."""
    if args.no_events:
        return "event stage: off (--no-events)", 0.0
    if args.data:
        return "event stage: off (it trains on generated videos' per-frame labels; --data has none)", 0.0
    steps = args.event_steps or EVENT_STEPS
    sec = events_seconds(steps, rates, event_sizes(args)) if rates and "events_per_step" in rates else 0.0
    return f"event stage: {steps} steps{f', ~{minutes(sec)}' if sec else ''}", sec


def events_seconds(steps: int, rates: dict, sizes: dict | None = None) -> float:
    z = {"videos": EVENT_VIDEOS, "frames": EVENT_FRAMES, "held_frames": EVENT_HELD_FRAMES,
         "heldout_videos": EVENT_HELDOUT_VIDEOS, "heldout_frames": EVENT_HELDOUT_FRAMES, **(sizes or {})}
    frames = (z["videos"] * (z["frames"] + z["held_frames"]) + THRESHOLD_FRAMES
              + z["heldout_videos"] * z["heldout_frames"])
    return estimate("events_per_frame", frames, rates=rates) + estimate("events_per_step", steps, rates=rates)


def event_stage(args, net, checkpoint: Path, out: Path, seed: int, labels: dict, say, progress) -> dict:
    """The event head on ``net``'s frozen backbone, written to ``out``."""
    import torch

    from export.train.event_stage import train_events

    cfg = net.cfg
    torch.set_num_threads(args.threads or default_threads())
    classes = list(labels.get("products") or [])
    if not classes:
        raise UsageError(f"{checkpoint}: carries no product names; the event head's classes are the bundle's products")
    return train_events(net.backbone.eval(), grid=cfg.backbone.grid, size=cfg.backbone.image_size, classes=classes,
                        out=out, checkpoint=checkpoint, config_sha256=cfg.digest(), seed=seed,
                        steps=args.event_steps or EVENT_STEPS, progress=progress, **event_sizes(args),
                        log=lambda m: say(f"lvm-train: {m}"))


def events_wanted(args, seed: int) -> dict:
    """What a finished event head file's ``train`` section must say for --resume to keep it."""
    return {"steps": args.event_steps or EVENT_STEPS, "seed": seed,
            "videos": event_sizes(args).get("videos", EVENT_VIDEOS)}


def event_sizes(args) -> dict:
    """The stage's videos and frames from --event-videos / --event-frames (the defaults without them)."""
    out = {}
    if getattr(args, "event_videos", None):
        out.update(videos=args.event_videos, heldout_videos=min(EVENT_HELDOUT_VIDEOS, args.event_videos))
    if getattr(args, "event_frames", None):
        out.update(frames=args.event_frames, held_frames=min(EVENT_HELD_FRAMES, args.event_frames),
                   heldout_frames=min(EVENT_HELDOUT_FRAMES, args.event_frames))
    return out
