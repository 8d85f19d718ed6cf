"""lvm-train's track labeler stage: its flags, its line in the plan, and the call into
``export.train.track_label_stage.train_track_labels`` once the event head is written (it learns that
head's tracks, so it runs wherever the event stage runs, --events-only included)."""
from __future__ import annotations

from pathlib import Path

from export.cli.train_events import events_planned
from export.train.eta import estimate, minutes
from export.train.event_defaults import EVENT_VIDEOS
from export.train.track_labels import EPOCHS, VIDEOS


def add_track_label_args(p) -> None:
    p.add_argument("--no-track-labels", action="store_true", help="no track labeler stage: the bundle's queries "
                   "read the geometric labeler's item events (the stage learns the event head's item tracks, "
                   "after the event stage)")
    p.add_argument("--track-label-videos", type=int, help=f"training videos whose item tracks the track labeler "
                   f"learns (default {VIDEOS}, --video-s long; the first half at the default rates, the rest with "
                   f"more scan avoidance)")
    p.add_argument("--track-label-epochs", type=int, help=f"epochs of the track labeler (default {EPOCHS})")


def track_labels_planned(args) -> bool:
    return events_planned(args) and not args.no_track_labels


def track_labels_plan_line(args, rates: dict | None, video_s: float) -> tuple[str, float]:
    """(the plan's line, its seconds) for the track labeler stage."""
    if not events_planned(args):
        return "track labeler: off (it learns the event head's tracks)", 0.0
    if args.no_track_labels:
        return "track labeler: off (--no-track-labels)", 0.0
    n, epochs = _sizes(args)
    sec = 0.0
    if rates and "track_labels_per_video" in rates:
        sec = (estimate("track_labels_per_video", n, video_s, rates)
               + estimate("track_labels_per_epoch_video", epochs * n, video_s, rates))
    return (f"track labeler: {n} video{'s' * (n != 1)}, {epochs} epoch{'s' * (epochs != 1)}"
            f"{f', ~{minutes(sec)}' if sec else ''}"), sec


def track_label_stage(args, net, events_file: Path, out: Path, seed: int, video_s: float, say,
                      progress: bool) -> dict | None:
    """The labeler of ``events_file``'s head on ``net``'s frozen backbone, written to ``out``."""
    import torch

    from export.train.track_label_stage import train_track_labels

    cfg = net.cfg
    n, epochs = _sizes(args)
    # one left from before learnt another event head's tracks: it must not reach a bundle with this one
    out.unlink(missing_ok=True)
    # the run's memory reader, as lvm-export finds it beside the checkpoint: a bundle exported with it names
    # items by its identity too, so the labeler learns the tracks that bundle makes
    reader = None
    reader_file = naming_reader(out.parent, cfg.name)
    if reader_file is not None:
        from export.model.reader import load_reader

        reader = load_reader(reader_file, cfg)[0]
    return train_track_labels(net.backbone.eval(), events_file, out, dim=cfg.backbone.dim, grid=cfg.backbone.grid,
                              size=cfg.backbone.image_size, seed=seed, first=_first(args), videos=n, video_s=video_s,
                              epochs=epochs, threads=torch.get_num_threads(), progress=progress,
                              log=lambda m: say(f"lvm-train: {m}"), reader=reader,
                              reader_sha256=_sha(reader_file))


def naming_reader(folder: Path, model: str) -> Path | None:
    """The run's memory reader file (``<model>-reader.safetensors`` in ``folder``), when there is one."""
    path = folder / f"{model}-reader.safetensors"
    return path if path.is_file() else None


def _sha(path: Path | None) -> str | None:
    from edge_runtime.file_hash import sha256_file

    return sha256_file(path) if path is not None else None


def track_labels_wanted(args, seed: int, video_s: float, reader: Path | None = None) -> dict:
    """What a finished labeler file must say (``read_track_label_meta``'s ``train``) for --resume to keep it;
    ``reader``: the run's reader file, whose identity names the items its tracks are made of."""
    n, epochs = _sizes(args)
    return {"videos": n, "epochs": epochs, "seed": seed, "first": _first(args), "video_s": video_s,
            "reader_sha256": _sha(reader)}


def read_track_label_meta(path: Path) -> dict:
    """A labeler file's ``info`` in the shape --resume compares: trained on the event head whose hash is
    ``checkpoint_sha256``, with the ``train`` settings."""
    from edge_runtime.items.sequence_model import SequenceModel

    info = SequenceModel.load(path).meta
    train = {k: info.get(k) for k in ("epochs", "seed", "first", "video_s", "reader_sha256")}
    train["videos"] = len(info.get("videos") or ())
    return {"checkpoint_sha256": info.get("events_sha256"), "train": train, **info}


def _sizes(args) -> tuple[int, int]:
    return args.track_label_videos or VIDEOS, args.track_label_epochs or EPOCHS


def _first(args) -> int:
    """Past the event head's training videos and its threshold video: tracks the head never trained on."""
    return (args.event_videos or EVENT_VIDEOS) + 1
