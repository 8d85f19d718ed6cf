"""Dense training of the memory reader (export/model/reader.py) on cached backbone tokens.

    python -m export.train.reader_stage --checkpoint checkpoints/lvm-tiny.safetensors \
        --out runs/reader/reader.safetensors

(its defaults: export/train/reader_defaults.py)

or from Python, ``train_reader(net, out=...)`` (what the training CLI calls).

The backbone and sampler are the checkpoint's, frozen. Each training video is rendered, encoded
(token cache) and streamed through the sampler once; the memory after every ``--every``-th clip is
kept. Every memory token gets targets from the annotations alone (fields ReST has: instance boxes
and event spans): which instance's box covers the token's patch at its time, the activity of that
instance's event in progress, its box and the event's span. A step reads a batch of memories and
learns all facts at once (dense: ~400 targets per memory, not one per query), plus an activity-query
loss through the answer step so the pooling itself is trained, absent queries included. Identity is
learnt per product class (instances of a class look alike), each token against the crops of every
video in the batch.

After training, the answer step's raw evidence is calibrated (isotonic, per query type) on
``--calib-videos`` more training-look videos that training never saw: p(seen) decides "not seen",
p(right) is the confidence an answer carries.

With ``--data DIR`` (``train_reader(data=...)``) the videos are a dataset folder's train split instead
(docs/dataset-format.md; the annotations give the same targets as the generator's): the last
``--calib-videos`` of them, at most a quarter of the split, are held out for calibration; a split
too small to spare one is calibrated on its training videos, which the log and the file's metadata
say. ``--init`` starts from an existing reader file instead of fresh weights (fine-tuning): its
activity outputs start fresh when the number of activities differs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.checkout import training_video
from export.dataset.video_data import (
    token_cache_dir,
)
from export.model.lvmnet import LVMNet
from export.model.reader import (
    AnswerStep,
    MemoryReader,
    ReaderConfig,
    read_reader_file,
    save_reader,
)
from export.train.reader_calibration import calibrate, class_prior
from export.train.reader_defaults import READER_BATCH, READER_CALIB_VIDEOS, READER_LR, READER_STEPS, READER_VIDEOS
from export.train.reader_losses import activity_weights, facts_loss
from export.train.reader_videos import (
    TIMELINE_CLIPS,
    make_dataset_videos,
    make_videos,
    prepare_in_order,
)


# the activity balance on generated videos (``activity_weights``), chosen on the validation set
GENERATED_ACTIVITY_BALANCE = 0.5


def calibration_split(n: int, calib_videos: int) -> int:
    """How many of ``n`` dataset videos are held out for calibration: ``calib_videos``, but never more
    than a quarter of them (training needs the rest); 0 means calibrating on the training videos."""
    return max(0, min(calib_videos, n // 4))


def init_reader(path, cfg) -> tuple[MemoryReader, AnswerStep, list[str]]:
    """The reader and answer step of reader file ``path`` (lvm-reader/1) as the start of training for a
    model of config ``cfg`` -> (reader, answer step, names of the tensors that start fresh). Only the
    activity outputs may differ in shape (another number of activities): those start fresh. ValueError
    (one line) for a file that is not a reader or is one for another architecture."""
    md, state = read_reader_file(path)
    try:
        rc = ReaderConfig.from_dict(json.loads(md["reader_config"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: its reader_config is missing or not this version's") from None
    reader, answer = MemoryReader(cfg, rc), AnswerStep(rc, 0.5 / cfg.stream.fps)
    own = {f"reader.{k}": v for k, v in reader.state_dict().items()}
    own.update({f"answer.{k}": v for k, v in answer.state_dict().items()})
    if set(state) != set(own):
        odd = sorted(set(state) ^ set(own))
        raise ValueError(f"{path}: its tensors do not match this model's reader ({len(odd)} differ, e.g. {odd[0]})")
    fresh = sorted(k for k in own if state[k].shape != own[k].shape)
    other = [k for k in fresh if not k.startswith("reader.act.")]
    if other:
        k = other[0]
        raise ValueError(f"{path}: a reader for another architecture ({k} is {tuple(state[k].shape)}, this "
                         f"model's {tuple(own[k].shape)})")
    keep = {k: v for k, v in state.items() if k not in fresh}
    reader.load_state_dict({k[7:]: v for k, v in keep.items() if k.startswith("reader.")}, strict=False)
    answer.load_state_dict({k[7:]: v for k, v in keep.items() if k.startswith("answer.")})
    return reader, answer, fresh


def train_reader(net: LVMNet, *, out, videos: int = READER_VIDEOS, calib_videos: int = READER_CALIB_VIDEOS,
                 video_s: float = 1800.0, queries: int = 300, absent_share: float = 0.2, every: int = 2,
                 steps: int = READER_STEPS, batch: int = READER_BATCH,
                 lr: float = READER_LR, query_weight: float = 1.0, activity_balance: float | None = None, seed: int = 0,
                 motion: bool = True,
                 threads: int = 1,
                 checkpoint: str | None = None, data: list | None = None, data_root=None, init=None,
                 token_cache: bool = True, progress: bool = True, log=print, timeline="default",
                 timeline_clips: int = TIMELINE_CLIPS) -> dict:
    """Train a reader for ``net`` (backbone + sampler frozen), calibrate it, write it to ``out`` -> the
    metadata saved with it.

    Videos: ``videos`` generated training videos, calibrated on ``calib_videos`` more; or, with
    ``data`` (a dataset folder's train split: ``Dataset.split("train")``, folder ``data_root``), those
    files, the last ``calibration_split(len(data), calib_videos)`` of them held out for calibration
    (``videos`` and ``video_s`` unused). ``init``: a reader file to start from (``init_reader``).
    ``activity_balance``: event tokens of rare activities weigh more (``activity_weights``); None: 0.5 on
    generated videos (measured: docs/lab/accuracy.md, choosing a reader), 0 on a dataset folder, whose
    few videos give shares too uncertain to weigh by (a tiny folder's reader trained so failed export parity).
    ``timeline``: the timeline track to calibrate for besides the memory alone (a TimelineSpec;
    "default": ``default_timeline(cfg)``; None: none)."""
    from export.train.timeline_calibration import timeline_meta
    from export.train.timeline_tokens import default_timeline

    if timeline == "default":
        timeline = default_timeline(net.cfg)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net.eval()
    cfg = net.cfg
    t_start = time.time()
    reader = answer = None
    if init is not None:
        reader, answer, fresh = init_reader(init, cfg)
        log(f"reader stage: starting from {init}" + (f"; fresh (another number of activities): {', '.join(fresh)}"
                                                       if fresh else ""))
    cache = token_cache_dir() if token_cache else None
    calib_note = None

    def track(desc: str, held_out: int) -> tuple[bool, int]:
        """(keep the frames, timeline rows) of a part: calibration videos keep their frames to calibrate
        the timeline on and give no rows; with none held out, the training videos do both."""
        if timeline is None:
            return False, 0
        calibration = desc == "calibration videos"
        return calibration or held_out == 0, 0 if calibration else timeline_clips
    if data is not None:
        items = list(enumerate(data))
        n_cal = calibration_split(len(items), calib_videos)
        where = f" of {data_root}" if data_root else ""
        if n_cal:
            calib_note = (f"held-out train-split videos: {', '.join(it.stem for _, it in items[len(items) - n_cal:])} "
                          f"(not trained on)")
            log(f"reader stage: {len(items)} train videos{where}: {len(items) - n_cal} to train on, the last {n_cal} "
                f"held out to calibrate on")
        else:
            calib_note = (f"the training videos ({len(items)}: too few to hold one out), so p(seen) and p(right) "
                          f"are fitted on videos it was trained on: its confidences may be far off on others")
            log(f"reader stage: {len(items)} train video{'s' if len(items) != 1 else ''}{where}, too few to hold one "
                f"out: calibrating on the training videos (its confidences may be far off on other footage: give "
                f"4 or more train videos, and check them with lvm-eval --split test)")

        def build(part, desc):
            return make_dataset_videos(net, part, queries, every, absent_share, seed, cache, desc, progress,
                                       *track(desc, n_cal))
        parts = (items[:len(items) - n_cal], items[len(items) - n_cal:])
    else:
        specs = [training_video(seed, i) for i in range(videos + calib_videos)]

        def build(part, desc):
            return make_videos(net, part, video_s, queries, every, absent_share, desc, progress, cache,
                               *track(desc, calib_videos))
        parts = (specs[:videos], specs[videos:])
    everything = parts[0] + parts[1]
    n_train = len(parts[0])

    def build_range(a: int, b: int) -> list:
        """Videos a..b-1 of ``everything``: training videos, then calibration ones."""
        out = build(parts[0][a:min(b, n_train)], "videos") if a < n_train else []
        return out + (build(parts[1][max(a - n_train, 0):b - n_train], "calibration videos") if b > n_train else [])
    vids = prepare_in_order(build_range, len(everything), cache, log,
                            f"reader stage: {len(everything)} videos, then {steps} steps")
    train, calib = vids[:len(parts[0])], vids[len(parts[0]):]
    prep_min = (time.time() - t_start) / 60

    rc = ReaderConfig(motion=motion)
    if reader is None:
        reader, answer = MemoryReader(cfg, rc), AnswerStep(rc, 0.5 / cfg.stream.fps)
    params = list(reader.parameters()) + list(answer.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warm = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(s / max(steps, 1), 1.0))))
    rng = np.random.default_rng(seed)
    snaps = [(v, s) for v in range(len(train)) for s in range(len(train[v].tokens))]  # memories and timeline rows
    if activity_balance is None:
        activity_balance = 0.0 if data is not None else GENERATED_ACTIVITY_BALANCE
    act_weight = activity_weights(train, cfg.heads.num_activities, activity_balance)
    if act_weight is not None:
        log("reader stage: activity weights by activity id " + " ".join(f"{w:.2f}" for w in act_weight.tolist()))
    reader.train()
    answer.train()
    t_train = time.time()
    last, first_losses = {}, {}
    bar = tqdm(range(steps), desc="reader stage", mininterval=5.0, disable=not progress)
    for step in bar:
        pick = [snaps[i] for i in rng.choice(len(snaps), min(batch, len(snaps)), replace=False)]
        terms = facts_loss(reader, answer, train, pick, rng, query_weight, act_weight=act_weight)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step == 0:
            first_losses = {k: round(float(v.detach()), 4) for k, v in terms.items()}
        if step == 4:
            eta = (time.time() - t_train) / 5 * steps / 60
            log(f"reader stage: ~{eta:.1f} min for {steps} steps ({batch} memories a step)")
        if step % 20 == 19 or step == steps - 1:
            last = {k: round(float(v.detach()), 4) for k, v in terms.items()}
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    train_min = (time.time() - t_train) / 60
    log("first losses: " + json.dumps(first_losses))
    log("last losses: " + json.dumps(last))
    reader.eval()
    answer.eval()
    prior = class_prior(train, cfg.heads.num_activities)
    cal = calibrate(reader, answer, calib or train, cfg, prior) if (calib or train) else {}
    meta = {"config_sha256": cfg.digest(), "checkpoint": str(checkpoint) if checkpoint else None, "prior": prior,
            "calibration": cal,
            "train": {"videos": len(train), "calib_videos": len(calib), "video_s": video_s, "queries": queries,
                      "absent_share": absent_share, "steps": steps, "batch": batch, "lr": lr, "every": every,
                      "timeline_clips": timeline_clips if timeline is not None else 0,
                      "seed": seed, "query_weight": query_weight, "activity_balance": activity_balance,
                      "threads": threads,
                      "init": str(init) if init is not None else None,
                      "prepare_min": round(prep_min, 2), "train_min": round(train_min, 2),
                      "total_min": round((time.time() - t_start) / 60, 2), "first_losses": first_losses,
                      "last_losses": last}}
    if data is not None:
        del meta["train"]["video_s"]  # the files' own lengths
        meta["data"] = {"path": str(data_root) if data_root else None,
                        "train": [it.stem for _, it in parts[0]], "calibration": [it.stem for _, it in parts[1]],
                        "calibrated_on": calib_note}
    if meta["checkpoint"] is None:
        del meta["checkpoint"]
    else:  # which sampler's memories it reads: lvm-export refuses it beside another checkpoint
        from edge_runtime.file_hash import sha256_file

        meta["checkpoint_sha256"] = sha256_file(checkpoint)
    fit_on = calib or train
    if timeline is not None and fit_on and fit_on[0].video_tokens is not None:
        meta["timeline"] = timeline_meta(reader, answer, fit_on, cfg, prior, timeline)
    save_reader(out, reader, answer, meta)
    log(f"wrote {out}: prepare {prep_min:.1f} min, train {train_min:.1f} min, "
        f"total {(time.time() - t_start) / 60:.1f} min")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.train.reader_stage", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lvm-tiny.safetensors", help="frozen backbone + sampler")
    ap.add_argument("--out", required=True, help="reader .safetensors to write")
    ap.add_argument("--data", metavar="DIR", help="train on this dataset folder's train split (the checkpoint must "
                    "have its activities: lvm-train --data DIR) instead of generated videos")
    ap.add_argument("--init", metavar="READER", help="start from this reader file instead of fresh weights")
    ap.add_argument("--videos", type=int, default=READER_VIDEOS,
                    help=f"training videos (training looks, seeds seed*1000+i; default {READER_VIDEOS})")
    ap.add_argument("--calib-videos", type=int, default=READER_CALIB_VIDEOS,
                    help="further training-look videos for calibration only; "
                    "with --data, train-split videos held out (at most a quarter of the split)")
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=300, help="present queries per video")
    ap.add_argument("--absent-share", type=float, default=0.2)
    ap.add_argument("--every", type=int, default=2, help="keep the memory after every n-th clip")
    ap.add_argument("--steps", type=int, default=READER_STEPS)
    ap.add_argument("--batch", type=int, default=READER_BATCH)
    ap.add_argument("--lr", type=float, default=READER_LR)
    ap.add_argument("--query-weight", type=float, default=1.0)
    ap.add_argument("--activity-balance", type=float, help="event tokens of an activity weigh share ** -B in "
                    "the activity loss (default 0.5 on generated videos: put back and hand over ~2.5x, scan ~0.7x; "
                    "0 with --data; 0: all alike)")
    ap.add_argument("--no-motion", dest="motion", action="store_false",
                    help="the reader without its per-token motion input (how each patch changed since the frame "
                         "before and until the frame after)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeline-clips", type=int, default=TIMELINE_CLIPS,
                    help="clips per training video whose timeline rows are trained on beside its memories")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from export.dataset import DatasetError, open_dataset
    from export.dataset.eval_data import labels_mismatch
    from export.model.checkpoint import (
        CheckpointError,
        checkpoint_labels,
        load_checkpoint,
        read_metadata,
    )

    try:
        net, _ = load_checkpoint(args.checkpoint)
        items = None
        if args.data:
            ds = open_dataset(args.data)
            items = ds.split("train")
            bad = labels_mismatch(checkpoint_labels(read_metadata(args.checkpoint)), ds.labels, args.checkpoint,
                                  args.data)
            if bad:
                raise ValueError(bad)
        if args.init:
            init_reader(args.init, net.cfg)  # a wrong file fails now, not after the videos are prepared
        train_reader(net, out=args.out, videos=args.videos, calib_videos=args.calib_videos, video_s=args.video_s,
                     queries=args.queries, absent_share=args.absent_share, every=args.every, steps=args.steps,
                     batch=args.batch, lr=args.lr, query_weight=args.query_weight,
                     activity_balance=args.activity_balance, seed=args.seed, motion=args.motion,
                     threads=args.threads, checkpoint=args.checkpoint, data=items, data_root=args.data,
                     init=args.init, timeline_clips=args.timeline_clips)
    except (CheckpointError, DatasetError, ValueError) as err:
        print(f"{ap.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
