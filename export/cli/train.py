"""lvm-train: train an LVM-Net config on the procedural checkout benchmark or a dataset folder."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from export.cli.common import UsageError, run_cli
from export.cli.train_plan import plan
from export.cli.train_reader import (
    READER_FINETUNE_LR,
    READER_FINETUNE_STEPS,
    reader_init,
    reader_planned,
    reader_stage,
    reader_wanted,
)
from export.cli.train_events import add_event_args, event_stage, events_planned, events_wanted
from export.cli.train_events_only import events_only
from export.cli.train_track_labels import (
    add_track_label_args,
    naming_reader,
    read_track_label_meta,
    track_label_stage,
    track_labels_planned,
    track_labels_wanted,
)
from export.cli.train_resume import keep_or_train, read_event_meta, read_reader_meta
from export.cli.train_stage1 import lsmcl_steps, query_seed, stage1
from export.train.eta import minutes
from export.train.reader_defaults import READER_BATCH, READER_CALIB_VIDEOS, READER_LR, READER_STEPS, READER_VIDEOS
from export.train.warm_start import check_init_from, init_from, taken_init
from export.cpu_threads import cores, default_threads

SEED_MAX = 2**31 - 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvm-train",
        description="Train LVM-Net (frozen backbone, neural sampler, query heads) and its memory reader on "
                    "generated checkout videos, or with --data on a dataset folder's train split (your own "
                    "videos and annotations). The tiny backbone is first pre-trained on per-frame labels (the "
                    "generator's, or derived from the annotations), then frozen. Stage 1 trains sampler and "
                    "heads on the streams (CPU; under torchrun, DDP with gloo). The heads stage (--heads-steps) "
                    "trains the heads alone on the frozen sampler's memories: only when asked for (hours on "
                    "CPU). The reader stage trains the memory reader on the frozen backbone and sampler (on the "
                    "same generated videos or dataset folder; with --init-from, starting from the reader beside "
                    "that checkpoint) and writes OUT/<model>-reader.safetensors beside OUT/<model>.safetensors, "
                    "where lvm-export finds it. On generated videos the event stage then trains the event head "
                    "(OUT/<model>-events.safetensors) and the track labeler stage the labeler of its item tracks "
                    "(OUT/<model>-track-labels.safetensors). lvm-tiny with the defaults: 79 minutes to about 2½ hours on 2 CPU cores, by their matrix multiply's speed; the plan printed at the start prices the stages at the slower host's rates, and each stage prints this machine's ETA once its first steps have run (docs/training.md).",
        epilog="Examples: lvm-train --config configs/models/lvm-tiny.yaml --out runs/tiny;  "
               "lvm-train --config configs/models/lvm-tiny.yaml --out runs/shop --data data/shop "
               "--init-from checkpoints/lvm-tiny.safetensors")
    p.add_argument("--config", required=True, help="model config: a YAML file, or a name in configs/models/ (lvm-tiny, lvm-edge, lvm-paper)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.safetensors, train_log.jsonl, ...")
    p.add_argument("--epochs", type=int, help="epochs (default: config train.epochs)")
    p.add_argument("--data", metavar="DIR", help="train on this dataset folder's train split (labels.yaml, videos/, "
                   "annotations/; see lvm-data check) instead of generated videos; heads.num_activities is set "
                   "from its labels.yaml and the checkpoint carries its labels")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="start from this checkpoint (e.g. "
                   "checkpoints/lvm-tiny.safetensors): its backbone (taken as it is, no pre-training), sampler and "
                   "heads; tensors whose shape differs (another number of activities) start fresh, named in one line. "
                   "The reader stage starts from <stem>-reader.safetensors beside it when there is one")
    p.add_argument("--videos", type=int, help="generated training videos (default: config train.train_videos); "
                   "refused with --data, which trains on every video of the train split")
    p.add_argument("--video-s", type=float, help="seconds per generated training video (default: config "
                   "train.video_s); refused with --data (the files' own lengths)")
    p.add_argument("--queries", type=int, help="queries sampled per video (default: config)")
    p.add_argument("--seed", type=int, help="seed (default: config train.seed)")
    p.add_argument("--backbone-epochs", type=int, default=3, help="backbone pre-training epochs (default 3)")
    p.add_argument("--backbone-frames", type=int, default=6000,
                   help="frames sampled for backbone pre-training, busy and idle balanced (default 6000)")
    p.add_argument("--backbone-patch-classes", type=float, default=1.0, metavar="WEIGHT",
                   help="weight of backbone pre-training's per-patch product-class loss (default 1.0; 0 = off): "
                        "each patch token learns which product it shows")
    p.add_argument("--backbone-patch-activities", type=float, default=1.0, metavar="WEIGHT",
                   help="weight of backbone pre-training's per-patch activity loss (default 1.0; 0 = off): each "
                        "patch token showing a product learns what is being done to it, if anything")
    p.add_argument("--backbone-from", help="take the frozen backbone from this checkpoint (or another run's "
                   "backbone.safetensors) instead of pre-training")
    p.add_argument("--sampler-from", help="skip stage 1: take the frozen backbone and the trained sampler from this "
                   "checkpoint and train fresh heads in the heads stage alone")
    p.add_argument("--heads-from", metavar="CHECKPOINT", help="train only the sampler (e.g. an s5 config's): take "
                   "the frozen backbone and the heads from this checkpoint and keep the heads frozen; their query "
                   "losses still reach the sampler. No heads stage unless --heads-steps is given")
    p.add_argument("--no-lsmcl", action="store_true", help="ablation: skip the s5 sampler's LSMCL pre-training")
    p.add_argument("--lsmcl-steps", type=int, help="s5: LSMCL pre-training steps (default: config train.lsmcl_steps)")
    p.add_argument("--heads-steps", type=int, help="steps of the heads stage, the heads alone on the frozen sampler's "
                   "memories (default 0: no heads stage, the heads are stage 1's; the config's train.heads_steps, "
                   "6,000 for lvm-tiny, is the stage's length when asked for: 8-16 h on 2 CPU cores, minutes on a "
                   "GPU; the shipped checkpoint has none). Not resumable: --resume re-runs it from the stage-1 checkpoint")
    p.add_argument("--heads-videos", type=int, help="videos the heads stage streams (default: config "
                   "train.heads_videos, else --videos; with --data every train video, or the first N)")
    p.add_argument("--reader-steps", type=int,
                   help=f"steps of the reader stage, {READER_BATCH} memories a step (default {READER_STEPS}; "
                        f"{READER_FINETUNE_STEPS}, at learning rate {READER_FINETUNE_LR:g} instead of {READER_LR:g}, "
                        f"when it starts from the reader beside --init-from)")
    p.add_argument("--reader-videos", type=int,
                   help=f"generated videos the reader stage trains on (default {READER_VIDEOS}; the first ones are "
                        f"stage 1's, whose tokens are cached), plus --reader-calib-videos more it calibrates on. "
                        f"Refused with --data: the reader trains on the train split")
    p.add_argument("--reader-calib-videos", type=int,
                   help=f"videos the reader's answers are calibrated on, none of them trained on (default "
                        f"{READER_CALIB_VIDEOS}: fewer let a few products decide what 'confident' means); with "
                        f"--data the last ones of the train split, at most a quarter of it")
    p.add_argument("--no-reader", action="store_true", help="no reader stage: the checkpoint is answered by its heads")
    add_event_args(p)
    add_track_label_args(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the heads stage trains (default auto: cuda if available; stage 1 runs on CPU)")
    p.add_argument("--workers", type=int, help="processes that render, encode and stream the heads stage's videos "
                   "(default: CPU cores)")
    p.add_argument("--no-continual", action="store_true", help="ablation: train without the continual-learning loss")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.safetensors + optimizer state; a reader or event stage "
                        "already finished on the checkpoint, with the same steps and seed, is kept")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: $OMP_NUM_THREADS, else CPU cores / processes)")
    p.add_argument("--max-steps", type=int, help="stop after this many sampler steps (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-token-cache", action="store_true",
                   help="always run the backbone (default: reuse tokens kept in $LVM_EDGE_CACHE/tokens, "
                        "~/.cache/lvm-edge/tokens, keyed by the backbone's weights and the video)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("lvm-train", lambda: _guarded(args))


def _guarded(args) -> int:
    from export.dataset import DatasetError

    out = Path(args.out)
    new_out = not out.exists()
    try:
        return _train(args)
    except DatasetError as err:  # a dataset problem found while decoding (in this process or a worker)
        raise UsageError(str(err)) from None
    finally:
        # a run refused (or stopped) before it wrote anything leaves no empty --out behind
        if new_out and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):  # another rank of the run removed it first
                out.rmdir()


def _train(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edge_runtime.config import resolve_model_config

    cfg = resolve_model_config(args.config)
    tc = cfg.train
    seed = tc.seed if args.seed is None else args.seed
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be in [0, {SEED_MAX}], got {seed}")
    for name in ("epochs", "videos", "queries", "backbone_epochs", "max_steps", "threads", "heads_steps",
                 "heads_videos", "workers", "lsmcl_steps", "reader_steps", "reader_videos", "reader_calib_videos",
                 "event_steps", "event_videos", "event_frames", "track_label_videos", "track_label_epochs"):
        v = getattr(args, name)
        if v is not None and v < (0 if name in ("backbone_epochs", "heads_steps", "lsmcl_steps") else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if not args.backbone_patch_classes >= 0:
        raise UsageError(f"--backbone-patch-classes must be 0 or more, got {args.backbone_patch_classes}")
    if not args.backbone_patch_activities >= 0:
        raise UsageError(f"--backbone-patch-activities must be 0 or more, got {args.backbone_patch_activities}")
    two_clips = cfg.stream.clip_frames / cfg.stream.fps * 2
    video_s = tc.video_s if args.video_s is None else args.video_s
    if video_s < two_clips:
        raise UsageError(f"--video-s {video_s} is shorter than two clips ({two_clips:g} s)")
    if args.init_from and (args.sampler_from or args.backbone_from):
        raise UsageError("--init-from already gives the backbone and sampler: drop --sampler-from / --backbone-from")
    if args.heads_from and (args.init_from or args.sampler_from or args.backbone_from):
        raise UsageError("--heads-from gives the backbone and the heads: drop --init-from / --sampler-from / "
                         "--backbone-from")
    if args.init_from:
        check_init_from(args.init_from, cfg)
    if args.events_only:
        return events_only(args, cfg)
    notes: list[str] = []  # said once the rank is known
    items = None
    if args.data:
        if args.reader_videos is not None:
            raise UsageError("--reader-videos chooses generated videos; with --data the reader stage trains on the "
                             "train split: drop it")
        cfg, items, labels, data_meta = _open_data(args, cfg, two_clips, notes)
    else:
        from export.dataset import LabelSet

        labels, data_meta = LabelSet.generator().to_dict(), None
    if args.init_from:
        notes += _init_label_notes(args.init_from, labels)
    args.reader_init = reader_init(args, cfg)
    args.reader_steps = args.reader_steps or (READER_FINETUNE_STEPS if args.reader_init else READER_STEPS)
    args.reader_videos = args.reader_videos or READER_VIDEOS
    args.reader_calib_videos = args.reader_calib_videos or READER_CALIB_VIDEOS
    if args.backbone_from:  # before anything is rendered or created
        from export.model.checkpoint import CheckpointError, refuse_pickle
        try:
            refuse_pickle(args.backbone_from)
        except CheckpointError as err:
            raise UsageError(str(err)) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"  # per process: DDP ranks check the same folder at once
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out {out}: not writable ({err.strerror})") from None

    # the heads stage takes hours on CPU: it runs only when asked for (the config's heads_steps is its
    # length when asked for, not a default)
    heads_steps = args.heads_steps or 0
    if args.sampler_from and args.backbone_from:
        raise UsageError("--sampler-from already gives the backbone: drop --backbone-from")
    if args.sampler_from and heads_steps == 0:
        raise UsageError("--sampler-from trains only the heads stage: give --heads-steps N (N > 0)")
    if args.sampler_from and args.resume:
        raise UsageError("--sampler-from and --resume do not mix: the heads stage is not resumable")
    if args.resume and not (out / "checkpoint.safetensors").exists():
        print(f"lvm-train: --resume: {out} holds no stage-1 state (checkpoint.safetensors) to go on from; "
              f"training from the start", file=sys.stderr)
    if not args.resume and int(os.environ.get("RANK", "0")) == 0:
        from export.train.run_folder import keep_previous_run

        kept = keep_previous_run(out, cfg.name, inputs=[args.reader_init, args.init_from, args.sampler_from,
                                                        args.backbone_from, args.heads_from])
        if kept is not None:
            print(f"lvm-train: {out} held a run before; its files are kept in {kept}", file=sys.stderr)

    import torch
    import torch.distributed as dist

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible to torch")

    from edge_runtime.checkout import BASE_ACTIVITIES, training_video
    from export.dataset.video_data import token_cache_dir
    from export.model.checkpoint import holds_checkpoint, save_checkpoint
    from export.model.lvmnet import LVMNet, count_parameters

    if items is None and cfg.heads.num_activities != len(BASE_ACTIVITIES):
        raise UsageError(f"{args.config}: heads.num_activities={cfg.heads.num_activities} but the benchmark has "
                         f"{len(BASE_ACTIVITIES)} activities")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        from datetime import timedelta
        # a rank that dies or diverges turns into an error after 10 minutes, not a silent hang
        dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    rank = dist.get_rank() if world > 1 else 0
    torch.set_num_threads(args.threads or default_threads(world))
    progress = not args.no_progress and rank == 0
    n_videos = len(items) if items is not None else args.videos or tc.train_videos
    if n_videos < world:
        what = f"--data: {n_videos} train videos" if items is not None else f"--videos {n_videos}"
        raise UsageError(f"{what} < {world} ranks: every rank needs its own videos")

    def say(msg: str) -> None:
        if rank == 0:
            print(msg, flush=True)

    t0 = time.time()
    for note in notes:
        say(note)
    # with --data, stage 1 runs as many clips as its shortest video holds: plan with that length
    lengths = [float(it.annotations["duration_s"]) for it in items or ()
               if isinstance(it.annotations.get("duration_s"), (int, float))]
    plan_s = min(lengths) if items and len(lengths) == len(items) else video_s
    for line in plan(args, cfg, n_videos, plan_s, heads_steps, world, items):
        say(line)
    torch.manual_seed(seed)
    taken = args.init_from or args.sampler_from or args.backbone_from or args.heads_from  # the backbone's file
    net = LVMNet(cfg, backbone_init=not taken)
    if taken:
        net.backbone.init_source = taken_init(taken)
    say(f"lvm-train: {cfg.name}: backbone {count_parameters(net.backbone):,} params (frozen), "
        f"sampler {count_parameters(net.sampler):,}, heads {count_parameters(net.heads):,}")
    if args.init_from:
        say(init_from(net, args.init_from))
    if args.heads_from:
        from export.model.checkpoint import CheckpointError, load_reader_state
        try:
            net.load_state_dict(load_reader_state(args.heads_from, cfg), strict=False)
        except CheckpointError as err:
            raise UsageError(f"--heads-from {err}") from None
        net.backbone.freeze()
        say(f"lvm-train: backbone and heads from {args.heads_from} (heads frozen); training the {cfg.sampler.kind} "
            f"sampler")
    cache = None if args.no_token_cache else token_cache_dir()
    res, continual_p = None, 0 if args.no_continual else tc.continual_p
    if args.sampler_from:
        from export.model.checkpoint import load_stage1_state
        net.load_state_dict(load_stage1_state(args.sampler_from, cfg), strict=False)
        net.backbone.freeze()
        say(f"lvm-train: backbone and sampler from {args.sampler_from}; fresh heads")
    else:
        res = stage1(args, cfg, net, seed, video_s, n_videos, continual_p, cache, out, world, rank, progress, say, t0,
                     items, labels)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return 0  # the heads stage (a single process) and the final checkpoint are rank 0's

    heads_last: dict = {}
    if items is not None:
        n_heads_videos = min(args.heads_videos or n_videos, n_videos)
    else:
        n_heads_videos = args.heads_videos or tc.heads_videos or n_videos
    if heads_steps > 0:
        from export.train.heads_stage import DatasetVideoSpec, stage_videos, train_heads
        from export.train.joint_stage import init_activity_prior

        workers = args.workers or min(cores(), n_heads_videos)
        n_q = tc.heads_queries_per_video or args.queries or tc.queries_per_video
        if items is not None:
            specs = [DatasetVideoSpec(items[i], n_q, query_seed(seed, i)) for i in range(n_heads_videos)]
        else:
            specs = [(*training_video(seed, i), video_s, n_q) for i in range(n_heads_videos)]
        t1 = time.time()
        hv = stage_videos(net, specs, workers=workers, cache=cache, progress=progress)
        say(f"lvm-train: heads stage: {n_heads_videos} videos streamed through the frozen sampler "
            f"({workers} processes, {time.time() - t1:.0f} s)")
        if args.sampler_from and tc.prior_init:
            init_activity_prior(net, hv)
        t1 = time.time()
        heads_last = train_heads(net, hv, out, steps=heads_steps, batch=tc.heads_batch, lr=tc.lr_heads,
                                 identity_weight=tc.identity_weight,
                                 token_activity_weight=tc.token_activity_weight, seed=seed, device=device,
                                 progress=progress, say=say)
        say(f"lvm-train: heads stage: {heads_steps} steps on {device} ({time.time() - t1:.0f} s)")

    final = out / f"{cfg.name}.safetensors"
    steps = res.steps if res else 0
    meta = {"seed": seed, "steps": steps, "continual_p": continual_p, "videos": n_videos,
            "video_s": video_s, "world_size": world, "heads_steps": heads_steps,
            "heads_videos": n_heads_videos if heads_steps else 0,
            "command": " ".join(["lvm-train"] + sys.argv[1:])}
    if data_meta is not None:
        del meta["video_s"]  # the files' own lengths
        meta["data"] = json.dumps(data_meta)
    if args.init_from:
        meta["init_from"] = str(args.init_from)
    if args.heads_from:
        meta["heads_from"] = str(args.heads_from)
    if cfg.sampler.kind == "s5":
        meta["lsmcl_steps"] = 0 if args.sampler_from else lsmcl_steps(args, cfg)
    # --resume with nothing left to train: the file stays as it is, and so do the stages trained on it
    same = args.resume and holds_checkpoint(final, net, meta, labels=labels)
    if not same:
        save_checkpoint(net, final, meta, labels=labels)  # before the reader stage: its failure loses nothing
    reader_file, reader_meta = None, None
    if reader_planned(args):
        reader_file = out / f"{cfg.name}-reader.safetensors"
        reader_meta = keep_or_train("reader stage", same, reader_file, final, read_reader_meta(cfg),
                                    reader_wanted(args, seed), say,
                                    lambda: reader_stage(args, net, reader_file, final, seed, video_s, say, progress,
                                                         items))
    events_file, events_meta = None, None
    if events_planned(args):
        events_file = out / f"{cfg.name}-events.safetensors"
        events_meta = keep_or_train("event stage", same, events_file, final, read_event_meta(cfg),
                                    events_wanted(args, seed), say,
                                    lambda: event_stage(args, net, final, events_file, seed, labels, say, progress))
    labeler_file, labeler_meta = None, None
    if events_file is not None and track_labels_planned(args):
        labeler_file = out / f"{cfg.name}-track-labels.safetensors"
        # kept only when trained on this very event head file (its hash), which a kept event stage is
        labeler_meta = keep_or_train("track labeler", same, labeler_file, events_file, read_track_label_meta,
                                     track_labels_wanted(args, seed, video_s, naming_reader(out, cfg.name)), say,
                                     lambda: track_label_stage(args, net, events_file, labeler_file, seed, video_s,
                                                               say, progress))
        if labeler_meta is None:
            labeler_file = None
    summary = {"checkpoint": str(final), "steps": steps, "train_seconds": round(res.seconds, 1) if res else 0.0,
               "heads_steps": heads_steps, "total_seconds": round(time.time() - t0, 1),
               "last_losses": res.last_losses if res else {}, "heads_last_losses": heads_last,
               "reader": str(reader_file) if reader_file else None,
               "reader_train": reader_meta["train"] if reader_meta else None,
               "events": str(events_file) if events_file else None,
               "events_heldout": events_meta["heldout"] if events_meta else None,
               "track_labels": str(labeler_file) if labeler_file else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"lvm-train: done: {steps} stage-1 steps, {heads_steps} heads-stage steps, "
        f"{args.reader_steps if reader_file else 0} reader steps in {minutes(time.time() - t0)}; wrote {final}"
        + (f" and {reader_file}" if reader_file else "") + (f" and {events_file}" if events_file else "")
        + (f" and {labeler_file}" if labeler_file else ""))
    return 0


def _init_label_notes(path, labels: dict) -> list[str]:
    """--init-from's activity outputs are taken by position: say so when its names are not this run's
    in the same order (the same count, so nothing is re-initialised, yet "meet" may start as "walk")."""
    from export.model.checkpoint import CheckpointError, checkpoint_labels, read_metadata

    try:
        theirs = (checkpoint_labels(read_metadata(path)) or {}).get("activities")
    except CheckpointError:
        return []
    ours = list(labels.get("activities") or [])
    if not theirs or theirs == ours or len(theirs) != len(ours):
        return []
    return [f"lvm-train: note: --init-from's activities ({', '.join(theirs)}) are not this dataset's "
            f"({', '.join(ours)}) in order: each output row starts from the one at its position, and is trained from there"]


def _open_data(args, cfg, two_clips: float, notes: list[str]):
    """--data DIR -> (config with the dataset's activity count, train items, labels, metadata)."""
    from export.dataset import open_dataset

    if args.videos is not None or args.video_s is not None:
        raise UsageError("--videos / --video-s choose generated videos; --data trains on the train split's own "
                         "videos: drop them")
    ds = open_dataset(args.data)  # DatasetError: one line, made a usage error by _guarded
    items = ds.split("train")
    for it in items:
        dur = float(it.annotations["duration_s"])
        if dur < two_clips:
            raise UsageError(f"{it.video}: {dur:g} s is shorter than two clips ({two_clips:g} s): "
                             f"too short to train on")
    n_val = sum(it.split == "val" for it in ds.items)
    if n_val:
        notes.append(f"lvm-train: {len(items)} train videos; the {n_val} val videos are not trained on "
                     f"(lvm-eval --data {args.data} --split val scores them)")
    labels = ds.labels.to_dict()
    n_act = len(labels["activities"])
    if cfg.heads.num_activities != n_act:
        notes.append(f"lvm-train: heads.num_activities {cfg.heads.num_activities} -> {n_act} "
                     f"(the activities of {Path(args.data) / 'labels.yaml'})")
        cfg = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"num_activities": n_act})})
    return cfg, items, labels, {"path": str(Path(args.data).resolve()), "train_videos": len(items)}


if __name__ == "__main__":
    sys.exit(main())
