"""lvm-train --events-only: the event stage and the track labeler's stage alone, on the frozen backbone of
--init-from's checkpoint; nothing else of a run."""
from __future__ import annotations

from pathlib import Path

from export.cli.common import UsageError
from export.cli.train_events import event_stage, events_plan_line
from export.cli.train_track_labels import track_label_stage, track_labels_plan_line
from export.train.event_defaults import default_events_path


def events_only(args, cfg) -> int:
    """--events-only: the event stage alone on --init-from's checkpoint."""
    if not args.init_from:
        raise UsageError("--events-only trains the event head of a checkpoint: give it as --init-from CHECKPOINT")
    clash = [f for f, v in (("--data", args.data), ("--resume", args.resume), ("--no-events", args.no_events),
                            ("--sampler-from", args.sampler_from), ("--heads-from", args.heads_from),
                            ("--backbone-from", args.backbone_from)) if v]
    if clash:
        raise UsageError(f"--events-only trains the event stage alone on --init-from's checkpoint: drop {', '.join(clash)}")
    from export.model.checkpoint import (
        CheckpointError,
        checkpoint_labels,
        load_checkpoint,
        read_metadata,
    )

    ckpt = Path(args.init_from)
    try:
        net, _ = load_checkpoint(ckpt, cfg)
        labels = checkpoint_labels(read_metadata(ckpt))
    except CheckpointError as err:
        raise UsageError(f"--init-from {err}") from None
    if labels is None:
        from export.dataset import LabelSet

        labels = LabelSet.generator().to_dict()
    out = Path(args.out) / default_events_path(ckpt).name
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {args.out}: not writable ({err.strerror})") from None

    def say(msg: str) -> None:
        print(msg, flush=True)

    from export.onnx.track_labels_file import default_track_labels_path

    rates = _rates(cfg)
    video_s = cfg.train.video_s if args.video_s is None else args.video_s
    labeler = Path(args.out) / default_track_labels_path(ckpt).name
    for line, _ in (events_plan_line(args, rates), track_labels_plan_line(args, rates, video_s)):
        say(f"lvm-train: plan ({cfg.name}, --events-only on {ckpt}): {line}")
    for f in (out, labeler) if not args.no_track_labels else (out,):
        if f.exists():
            say(f"lvm-train: {f} is replaced when its stage ends")
    seed = cfg.train.seed if args.seed is None else args.seed
    event_stage(args, net, ckpt, out, seed, labels, say, not args.no_progress)
    written = [out]
    if not args.no_track_labels and track_label_stage(args, net, out, labeler, seed, video_s, say,
                                                      not args.no_progress):
        written.append(labeler)
    if out.parent.resolve() != ckpt.parent.resolve():
        say(f"lvm-train: lvm-export finds them beside the checkpoint: copy {' and '.join(f.name for f in written)} "
            f"to {ckpt.parent}")
    return 0


def _rates(cfg):
    from export.train.eta import rates_for

    found = rates_for(cfg.name, (cfg.backbone.name, cfg.backbone.image_size))
    return found[1] if found else None
