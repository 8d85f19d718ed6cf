"""lvm-eval: ReST metrics of a checkpoint on held-out generator videos or a dataset split."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from edge_runtime.checkout import EVAL_SEED_BASE, WINDOWS, heldout_video
from edge_runtime.query.types import NAMES
from export.cli.common import UsageError, run_cli

SEED_MAX = 2**31 - 1


DESCRIPTION = ("Evaluate a checkpoint on held-out checkout videos (new seeds; half of them in looks the training "
               "set never had), or on the videos of a dataset folder's split (--data). Prints a Recall@1x / @3x "
               "table per query type and window and writes it as JSON.")
EXAMPLES = ("Examples: lvm-eval --json runs/eval.json --sampler random\n"
            "          lvm-eval --data footage/ --split test --checkpoint runs/mine/lvm-tiny.safetensors "
            "--json runs/eval.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvm-eval", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped checkpoints/lvm-tiny.safetensors)")
    p.add_argument("--json", required=True, help="where to write the results JSON")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (videos, queries, random sampler)")
    p.add_argument("--data", metavar="DIR",
                   help="a dataset folder (labels.yaml, videos/, annotations/): evaluate every video of --split, "
                        "queries sampled from its annotations; the checkpoint's activity labels must be "
                        "labels.yaml's (default: generated checkout videos)")
    p.add_argument("--split", default="test", help="with --data: the split to evaluate (default test)")
    p.add_argument("--videos", type=int, help="held-out generator videos (default 4; not with --data)")
    p.add_argument("--video-s", type=float,
                   help="seconds per generator video (default 1800: 30 min at 1 fps; not with --data)")
    p.add_argument("--queries", type=int, default=120, help="queries per video (default 120)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-token-cache", action="store_true",
                   help="always run the backbone (default: reuse tokens kept in $LVM_EDGE_CACHE/tokens, "
                        "~/.cache/lvm-edge/tokens, keyed by the backbone's weights and the video)")
    p.add_argument("--sampler", choices=["neural", "random", "oracle"], default="neural",
                   help="memory: trained sampler, uniform random tokens, or query-aware oracle")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("lvm-eval", lambda: _eval(args))


def format_table(res: dict) -> str:
    lines = [f"{'':10s} {'window':8s} {'R@1x':>7s} {'R@3x':>7s}"]
    for qt in NAMES:
        for w in WINDOWS:
            r1 = res["recall@1x"][qt][w]
            r3 = res["recall@3x"][qt][w]
            f = lambda x: "    n/a" if x is None else f"{100 * x:7.1f}"  # noqa: E731
            lines.append(f"{qt:10s} {w:8s} {f(r1)} {f(r3)}")
    return "\n".join(lines)


def _eval(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.data is None and args.split != "test":
        raise UsageError("--split chooses the videos of a dataset folder: give the folder with --data")
    if args.data is not None and (args.videos is not None or args.video_s is not None):
        raise UsageError("--videos / --video-s choose generated videos; --data evaluates every video of the split")
    args.videos = 4 if args.videos is None else args.videos
    args.video_s = 1800.0 if args.video_s is None else args.video_s
    if not 0 <= args.seed <= SEED_MAX - EVAL_SEED_BASE:
        raise UsageError(f"--seed must be in [0, {SEED_MAX - EVAL_SEED_BASE}], got {args.seed}")
    if args.videos < 1 or args.queries < 1:
        raise UsageError("--videos and --queries must be positive")
    if not 60.0 <= args.video_s <= 36000.0:
        raise UsageError(f"--video-s must be in [60, 36000] seconds, got {args.video_s:g}")
    out = Path(args.json)
    if out.parent and not out.parent.exists():
        raise UsageError(f"--json {out}: folder {out.parent} does not exist")
    split = _open_split(args) if args.data is not None else None  # a bad folder fails before torch loads

    import torch

    from export.model.checkpoint import DEFAULT_CHECKPOINT, checkpoint_labels, load_checkpoint
    from export.dataset.video_data import token_cache_dir
    from export.dataset import DatasetError
    from export.dataset.eval_data import labels_mismatch
    from export.evaluate.scoring import evaluate_model, evaluation_videos

    torch.set_num_threads(os.cpu_count() or 2)
    ckpt = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    net, meta = load_checkpoint(ckpt)
    cfg = net.cfg
    if split is not None:
        problem = labels_mismatch(checkpoint_labels(meta), split.labels, ckpt, split.root)
        if problem:
            raise UsageError(problem)
    elif args.video_s < cfg.stream.clip_frames / cfg.stream.fps:
        raise UsageError(f"--video-s {args.video_s:g} is shorter than one clip")
    t0 = time.time()
    try:
        videos = evaluation_videos(net, args.queries, args.seed, items=split.items if split is not None else None,
                                   videos=args.videos, video_s=args.video_s,
                                   cache=None if args.no_token_cache else token_cache_dir(),
                                   progress=not args.no_progress)
    except DatasetError as err:  # a video of the split that does not decode
        raise UsageError(str(err)) from None
    res = evaluate_model(net, videos, args.sampler, seed=args.seed, progress=not args.no_progress)
    if split is not None:
        res.update({"checkpoint": str(ckpt), "data": split.describe(), "seed": args.seed})
        where = f"{len(videos)} videos of {args.data} (split {args.split})"
    else:
        res.update({"checkpoint": str(ckpt), "videos": args.videos, "video_s": args.video_s, "seed": args.seed,
                    "looks": [heldout_video(args.seed, i)[1] for i in range(args.videos)]})
        where = f"{args.videos} x {args.video_s:g} s videos"
    res["seconds"] = round(time.time() - t0, 1)
    print(f"lvm-eval: {cfg.name} ({ckpt.name}), sampler={args.sampler}, {res['queries']} queries on "
          f"{where}, m={cfg.stream.memory_tokens}")
    print(format_table(res))
    out.write_text(json.dumps(res, indent=2))
    print(f"lvm-eval: wrote {out}")
    return 0


def _open_split(args):
    from export.dataset.eval_data import DataSplit

    try:
        return DataSplit.open(Path(args.data), args.split)
    except ValueError as err:  # DatasetError: one line naming the file and field, or the splits that exist
        raise UsageError(str(err)) from None


if __name__ == "__main__":
    sys.exit(main())
