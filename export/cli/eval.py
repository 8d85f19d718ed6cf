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
from export.cpu_threads import default_threads

SEED_MAX = 2**31 - 1
ANSWER_KINDS = ("auto", "reader", "heads")
ABSENT_SHARE = 0.2  # as many absent queries as a quarter of the present ones


DESCRIPTION = ("Evaluate a checkpoint (in PyTorch) or an exported bundle (--bundle: through the runtime's Engine, "
               "as on the device) on held-out checkout videos (new seeds; half of them in looks the training "
               "set never had), or on the videos of a dataset folder's split (--data). Prints a Recall@1x / @3x "
               "table per query type and window and writes it as JSON. With --bundle, absent queries (truth "
               "\"not seen\") are asked too, and a second table gives per query type the share of absent "
               "queries answered \"not seen\", of present ones wrongly so, the precision of answers with "
               "confidence >= 0.8 and the calibration error (ECE) of the confidence; the heads' answers carry "
               "no confidence (n/a).")
EXAMPLES = ("Examples: lvm-eval --json runs/eval.json --sampler random\n"
            "          lvm-eval --bundle engines/lvm-tiny-fp32 --answers reader --json runs/reader.json\n"
            "          lvm-eval --data footage/ --split test --checkpoint runs/mine/lvm-tiny.safetensors "
            "--json runs/eval.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lvm-eval", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped checkpoints/lvm-tiny.safetensors)")
    p.add_argument("--bundle", metavar="DIR", help="evaluate this exported bundle through the runtime Engine instead "
                   "of a checkpoint")
    p.add_argument("--answers", choices=ANSWER_KINDS, help="with --bundle: which answers the Engine uses (default "
                   "auto: the reader when the bundle has one, else the heads)")
    p.add_argument("--absent-share", type=float, help="with --bundle: share of the queries that are absent, truth "
                   f"\"not seen\" (default {ABSENT_SHARE:g}; 0 = none)")
    p.add_argument("--threads", type=int, help="CPU threads (default: $OMP_NUM_THREADS, else the cores this process may use)")
    p.add_argument("--json", required=True, help="where to write the results JSON")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (videos, queries, random sampler)")
    p.add_argument("--data", metavar="DIR",
                   help="a dataset folder (labels.yaml, videos/, annotations/): evaluate every video of --split, "
                        "queries sampled from its annotations; the checkpoint's activity labels must be "
                        "labels.yaml's (default: generated checkout videos)")
    p.add_argument("--split", default="test", help="with --data: the split to evaluate (default test)")
    p.add_argument("--videos", type=int, help="held-out generator videos (default 4; not with --data)")
    p.add_argument("--video-s", type=float,
                   help="seconds per generator video, 60 to 36000 (default 1800: 30 min at 1 fps; not with --data)")
    p.add_argument("--queries", type=int, default=120, help="queries per video (default 120)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (rendering, decoding, "
                   "scoring), e.g. for a log file")
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
    if out.is_dir():  # found now, not after the evaluation it would lose
        raise UsageError(f"--json {out}: is a folder; give a file name (e.g. {out / 'eval.json'})")
    if not os.access(out.parent if str(out.parent) else ".", os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--json {out}: cannot write there")
    if args.bundle is None and (args.answers is not None or args.absent_share is not None):
        raise UsageError("--answers / --absent-share are for a bundle's runtime answers: give --bundle DIR")
    if args.bundle is not None and (args.checkpoint is not None or args.sampler != "neural"):
        raise UsageError("--bundle evaluates the bundle's own model: drop --checkpoint / --sampler")
    if args.absent_share is not None and not 0.0 <= args.absent_share < 1.0:
        raise UsageError(f"--absent-share must be in [0, 1), got {args.absent_share:g}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be positive, got {args.threads}")
    split = _open_split(args) if args.data is not None else None  # a bad folder fails before torch loads
    if args.bundle is not None:
        return _eval_bundle(args, out, split)

    import torch

    from export.model.checkpoint import DEFAULT_CHECKPOINT, checkpoint_labels, load_checkpoint
    from export.dataset.video_data import token_cache_dir
    from export.dataset import DatasetError
    from export.dataset.eval_data import labels_mismatch
    from export.evaluate.scoring import evaluate_model, evaluation_videos

    torch.set_num_threads(args.threads or default_threads())
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


def _eval_bundle(args, out: Path, split) -> int:
    """The bundle through the runtime's Engine: recalls and the "not seen" table from its answers."""
    from edge_runtime.backends.bundle import BundleError, load_bundle
    from edge_runtime.checkout.seen_metrics import format_seen_table
    from edge_runtime.engine.engine import Engine
    from export.dataset import DatasetError
    from export.dataset.eval_data import labels_mismatch
    from export.evaluate.scoring import engine_videos, evaluate_engine

    try:
        bundle = load_bundle(args.bundle)
        # one Engine first: a bundle without a reader asked for --answers reader fails here, in one line
        engine = Engine(bundle, threads=args.threads, answers=args.answers or "auto")
    except (BundleError, ValueError, OSError) as err:
        raise UsageError(f"--bundle {args.bundle}: {err}") from None
    cfg = bundle.cfg
    if split is not None:
        problem = labels_mismatch(bundle.labels or None, split.labels, Path(args.bundle), split.root)
        if problem:
            raise UsageError(problem)
    elif args.video_s < cfg.stream.clip_frames / cfg.stream.fps:
        raise UsageError(f"--video-s {args.video_s:g} is shorter than one clip")
    share = ABSENT_SHARE if args.absent_share is None else args.absent_share
    t0 = time.time()
    try:
        videos = engine_videos(cfg, args.queries, args.seed, items=split.items if split is not None else None,
                               videos=args.videos, video_s=args.video_s, absent_share=share,
                               progress=not args.no_progress)
    except DatasetError as err:
        raise UsageError(str(err)) from None
    res = evaluate_engine(lambda: engine, videos, progress=not args.no_progress)
    from edge_runtime.checkout.absent_queries import is_absent

    asked = [q for v in videos for q in v.queries]
    # short videos hold fewer products absent from a window than asked for: say how many were drawn
    drawn = sum(map(is_absent, asked)) / max(len(asked), 1)
    res.update({"bundle": str(args.bundle), "answers": engine.answers_kind, "absent_share": share,
                "absent_share_drawn": round(drawn, 4), "seed": args.seed})
    if split is not None:
        res["data"] = split.describe()
        where = f"{len(videos)} videos of {args.data} (split {args.split})"
    else:
        res.update({"videos": args.videos, "video_s": args.video_s,
                    "looks": [heldout_video(args.seed, i)[1] for i in range(args.videos)]})
        where = f"{args.videos} x {args.video_s:g} s videos"
    res["seconds"] = round(time.time() - t0, 1)
    engine.close()
    print(f"lvm-eval: {cfg.name} bundle {args.bundle}, answers from the {engine.answers_kind}, {res['queries']} "
          f"queries ({res['not_seen']['all']['absent']} absent) on {where}, m={cfg.stream.memory_tokens}")
    print(format_table(res))
    print(format_seen_table(res["not_seen"]))
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
