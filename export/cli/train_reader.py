"""lvm-train's reader stage: its defaults, the reader it starts from (the one beside --init-from,
checked before stage 1), its time estimate for the plan, and the call into
``export.train.reader_stage.train_reader`` once the checkpoint is written."""
from __future__ import annotations

from pathlib import Path

from export.cli.common import UsageError
from export.train.eta import estimate, minutes, rates_for
from export.train.reader_defaults import READER_BATCH, READER_LR
from export.cpu_threads import default_threads

# starting from a trained reader (the one beside --init-from) only its new sampler's memories and the
# new footage are new to it: a fifth of the steps, at a quarter of the learning rate (the fresh rate's
# first steps moved a trained reader far enough that its FP32 answer graph failed lvm-export's parity
# check on a small folder)
READER_FINETUNE_STEPS, READER_FINETUNE_LR = 300, 5e-4


def reader_planned(args) -> bool:
    """Whether this run trains a reader (the reason it does not is said in the plan)."""
    return not args.no_reader


def reader_init(args, cfg) -> Path | None:
    """The reader the reader stage starts from: the one beside --init-from, checked now (before stage 1)
    so that a damaged or foreign file fails in a second, not after an hour of training."""
    if args.no_reader or not args.init_from:
        return None
    from export.onnx.reader_graphs import (
        default_reader_path,  # where lvm-export looks for it too
    )

    path = default_reader_path(Path(args.init_from))
    if not path.is_file():
        return None
    from export.train.reader_stage import init_reader

    try:
        init_reader(path, cfg)
    except ValueError as err:
        raise UsageError(f"{err} (the reader beside --init-from; --no-reader skips the reader stage)") from None
    return path


def reader_wanted(args, seed: int) -> dict:
    """What a finished reader file's ``train`` section must say for --resume to keep it."""
    return {"steps": args.reader_steps, "seed": seed, "init": str(args.reader_init) if args.reader_init else None}


def reader_stage(args, net, reader_file: Path, checkpoint: Path, seed: int, video_s: float, say, progress,
                  items=None) -> dict:
    """The memory reader on the frozen backbone and sampler (export/train/reader_stage.py): the first
    generated training videos are stage 1's (the same seeds), so their tokens come from the cache; a
    dataset folder's train videos likewise (the same files, the same backbone)."""
    import torch

    from export.train.reader_stage import train_reader

    net.eval()
    threads = args.threads or default_threads()
    where = f"the train split of {args.data}" if items is not None else \
        f"{args.reader_videos} + {args.reader_calib_videos} generated videos"
    cfg = net.cfg
    found = rates_for(cfg.name, (cfg.backbone.name, cfg.backbone.image_size))
    say(f"lvm-train: reader stage: {where}, {args.reader_steps} steps"
        + (f" from {args.reader_init}" if args.reader_init else "")
        + (f" (~{minutes(reader_seconds(args, video_s, items, found[1]))} on 2 CPU cores)" if found else ""))
    meta = train_reader(net, out=reader_file, videos=args.reader_videos, calib_videos=args.reader_calib_videos,
                        video_s=video_s, queries=args.queries or net.cfg.train.queries_per_video, seed=seed,
                        steps=args.reader_steps, batch=READER_BATCH, threads=threads, checkpoint=str(checkpoint),
                        lr=READER_FINETUNE_LR if args.reader_init else READER_LR, data=items, data_root=args.data,
                        init=args.reader_init,
                        token_cache=not args.no_token_cache, progress=progress, log=lambda m: say(f"lvm-train: {m}"))
    torch.set_num_threads(threads)
    return meta


def reader_seconds(args, video_s: float, items=None, rates: dict[str, float] | None = None) -> float:
    """The reader stage's estimate at ``rates`` (export/train/eta.py; default lvm-tiny's)."""
    if items is not None:  # per-video rates scale with each file's length
        prep = sum(estimate("reader_per_video", 1, float(it.annotations["duration_s"]), rates) for it in items)
    else:
        prep = estimate("reader_per_video", args.reader_videos + args.reader_calib_videos, video_s, rates)
    return prep + estimate("reader_per_step", args.reader_steps, rates=rates)
