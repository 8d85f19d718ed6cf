"""lvm-data: check, summarise, render and import dataset folders of one's own footage."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from export.cli.common import UsageError, run_cli

PROG = "lvm-data"
EXIT_PROBLEMS = 1  # the dataset has problems (check found errors, or a command could not open it)

FORMAT = ("A dataset folder: labels.yaml (version: 1, activities: [...], objects: [...]),\n"
          "videos/<stem>.<ext>, annotations/<stem>.json (per-video ground truth), optional splits.yaml\n"
          "and crops/ (docs/dataset-format.md).")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Datasets of your own footage for lvm-train / lvm-eval / lvm-export --data.\n" + FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  lvm-data check data/shop                 # every problem, one line each; exit 1 if any error\n"
               "  lvm-data stats data/shop                 # videos, hours, events per label, per split\n"
               "  lvm-data render --seeds 0-7 --out data/gen --like train --duration 1800\n"
               "  lvm-data render --seeds 0-3 --out data/gen --like eval  # add lvm-eval's videos as split test\n"
               "  lvm-data import-cvat task.xml --video videos/cam1.mp4 --out data/shop\n"
               "  lvm-data verdicts --state-dir /var/lib/lvm-edge --out data/verdicts  # staff's verdicts on alerts")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="list every problem of a dataset folder",
                       description="List every problem of a dataset folder, one line each: "
                                   "'FILE: FIELD: what is wrong'. Lines ending in (warning) leave something out "
                                   "but do not stop training. Exit 0 without errors, 1 with any.")
    c.add_argument("dir", metavar="DIR", help="the dataset folder")
    c.add_argument("--no-decode", action="store_true",
                   help="do not open the videos: only the files' structure and content (the checks "
                        "lvm-train / lvm-eval --data make when they open the folder)")
    c.add_argument("--full", action="store_true",
                   help="decode every frame of every video (finds truncated or damaged files; slow on long footage)")
    c.add_argument("--json", metavar="FILE", help="also write the problems as JSON to FILE")

    s = sub.add_parser("stats", help="videos, durations and label counts per split",
                       description="Number of videos, total and mean duration, events per hour, events per "
                                   "activity and instances per object label; one column per split and the total.")
    s.add_argument("dir", metavar="DIR", help="the dataset folder")
    s.add_argument("--json", action="store_true", help="print JSON instead of the table")

    r = sub.add_parser("render", help="write generator videos as a dataset folder",
                       description="Render procedural checkout videos into a dataset folder: encoded video files, "
                                   "annotations (with a split) and the generator's labels.yaml. Adds to an "
                                   "existing folder rendered before. Each video is decoded back and the PSNR of "
                                   "its frames against the rendered ones is printed and kept in DIR/render.json.")
    r.add_argument("--seeds", required=True, metavar="LIST",
                   help="e.g. 0-7 or 0,2,5-6: generator seeds; with --like, the video indices i of that run")
    r.add_argument("--out", required=True, metavar="DIR", help="the dataset folder to write")
    r.add_argument("--like", choices=("train", "eval"),
                   help="train: video i of lvm-train --seed RUN_SEED (split train); eval: video i of "
                        "lvm-eval --seed RUN_SEED, held-out seeds and looks (split test)")
    r.add_argument("--run-seed", type=int, default=0, metavar="S",
                   help="with --like: the --seed of that lvm-train / lvm-eval run (default 0)")
    r.add_argument("--look", help="without --like: the look (name or index) of every video "
                                  "(default: each seed's own training look)")
    r.add_argument("--split", default="train", help="without --like: the split written into the annotations "
                                                    "(default train)")
    r.add_argument("--duration", type=float, default=1800.0, metavar="S",
                   help="seconds per video (default 1800: lvm-train's and lvm-eval's default)")
    r.add_argument("--size", type=int, default=112, metavar="PX", help="frame side in pixels (default 112: lvm-tiny)")
    r.add_argument("--fps", type=float, default=1.0, help="frames per second (default 1: the models' stream fps)")
    r.add_argument("--codec", choices=("mp4v", "mjpg", "ffv1"), default="mp4v",
                   help="mp4v (.mp4, default; mjpg if this OpenCV cannot write it), mjpg (.avi) or ffv1 "
                        "(.mkv, lossless, large)")
    r.add_argument("--no-crops", action="store_true",
                   help="do not write the generator's instance crops into crops/ (training and evaluation then cut "
                        "each instance's picture from the video at its largest box, as for footage without crops)")
    r.add_argument("--shrink", metavar="RATES",
                   help="scan avoidance in the videos: 0 (none), default (3 %% of bought items bagged unscanned, "
                        "2 %% passed around the scanner, 2 %% left in the basket) or three rates B,P,L: each bought item's odds of "
                        "those three, at most 1 together (0.5,0.5,0: no bought item is scanned); "
                        "default: default, but 0 with --like (lvm-train's and lvm-eval's videos have none). "
                        "With shrink, labels.yaml lists pass_around too")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    i = sub.add_parser("import-cvat", help="turn a CVAT video annotation export into a dataset item",
                       description="Convert a CVAT 'CVAT for video 1.1' XML export of one video into "
                                   "annotations/<stem>.json (and copy the video) in a dataset folder.")
    i.add_argument("xml", metavar="XML", help="the CVAT annotations.xml")
    i.add_argument("--video", required=True, metavar="FILE", help="the video the XML annotates")
    i.add_argument("--out", required=True, metavar="DIR", help="the dataset folder to add it to")
    i.add_argument("--labels", metavar="YAML", help="labels.yaml to start DIR with when it has none (default: "
                                                   "the labels the XML uses); every label found must be in it")

    v = sub.add_parser("verdicts", help="staff's verdicts on a runtime's alerts as annotations of own footage",
                       description="Write every alert of a runtime's state dir that staff gave a verdict as a "
                                   "dataset item: a clip of its stream around the alert, annotated (confirmed, "
                                   "customer_fixed: the rule's activity on the product; false_alert: the same under "
                                   "negatives), labels.yaml, and verdicts.json listing the footage each clip needs "
                                   "(stream, start, end) for videos/. The alert store is read read-only; a running "
                                   "runtime may hold it (docs/own-footage.md).")
    v.add_argument("--state-dir", required=True, metavar="DIR", help="the runtime's --state-dir (holds alerts.db)")
    v.add_argument("--out", required=True, metavar="FOLDER", help="the dataset folder to write (added to)")
    v.add_argument("--pad", type=float, metavar="S",
                   help="seconds of footage before and after each alert (default 20: a clip of over 32 s, what "
                        "lvm-train needs of a video at lvm-tiny's rate)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    body = {"check": _check, "stats": _stats, "render": _render, "import-cvat": _import_cvat,
            "verdicts": _verdicts}[args.command]
    try:
        return run_cli(PROG, lambda: _dataset_errors(body, args))
    except BrokenPipeError:  # output piped into head & co., which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dataset_errors(body, args) -> int:
    from export.dataset import DatasetError

    try:
        return body(args)
    except DatasetError as err:
        print(f"{PROG}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_PROBLEMS


def _check(args) -> int:
    from export.dataset import check_dataset

    problems = check_dataset(args.dir, decode=not args.no_decode, full=args.full)
    for p in problems:
        print(p)
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    if args.json:
        rows = [{"file": p.file, "field": p.field, "message": p.message, "level": p.level} for p in problems]
        _write(Path(args.json), json.dumps({"dir": args.dir, "errors": errors, "warnings": warnings,
                                            "problems": rows}, indent=1) + "\n")
    if errors:
        print(f"{PROG} check: {args.dir}: {errors} error{'s' * (errors != 1)}, {warnings} "
              f"warning{'s' * (warnings != 1)}", file=sys.stderr)
        return EXIT_PROBLEMS
    how = "structure only, videos not opened" if args.no_decode else "videos opened"
    print(f"{PROG} check: {args.dir}: ok ({how}; {warnings} warning{'s' * (warnings != 1)})")
    return 0


def _stats(args) -> int:
    from export.dataset import open_dataset
    from export.dataset.stats import dataset_stats, format_stats

    st = dataset_stats(open_dataset(args.dir))
    print(json.dumps(st, indent=1) if args.json else format_stats(st))
    return 0


def parse_seeds(text: str) -> list[int]:
    """'0-7' / '0,2,5-6' / '3' -> sorted unique ints; UsageError naming the bad part."""
    out: set[int] = set()
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b) if sep else int(a)
        except ValueError:
            raise UsageError(f"--seeds {text!r}: {part.strip()!r} is not N or N-M (non-negative integers)") from None
        if lo < 0 or hi < lo:
            raise UsageError(f"--seeds {text!r}: {part.strip()!r} is not an ascending range of non-negative integers")
        out.update(range(lo, hi + 1))
    return sorted(out)


def _render(args) -> int:
    from export.dataset.render import like_eval, like_train, plain, render_dataset

    seeds = parse_seeds(args.seeds)
    if args.duration <= 0 or args.fps <= 0 or args.duration * args.fps < 1:
        raise UsageError(f"--duration {args.duration:g} at --fps {args.fps:g} gives no frame")
    if args.size < 16:
        raise UsageError(f"--size must be >= 16 px, got {args.size}")
    if args.like and (args.look is not None or args.split != "train"):
        raise UsageError("--like fixes the looks and the split: drop --look / --split")
    if args.run_seed < 0:
        raise UsageError(f"--run-seed must be >= 0, got {args.run_seed}")
    if args.like == "train":
        specs = like_train(seeds, args.run_seed)
    elif args.like == "eval":
        specs = like_eval(seeds, args.run_seed)
    else:
        try:
            specs = plain(seeds, args.look, args.split)
        except ValueError as err:
            raise UsageError(f"--look: {err}") from None
    from edge_runtime.checkout.shrink import ShrinkRates

    try:
        shrink = ShrinkRates.parse(args.shrink or ("0" if args.like else "default"))
    except ValueError as err:
        raise UsageError(f"--shrink: {err}") from None
    rep = render_dataset(args.out, specs, duration_s=args.duration, size=args.size, fps=args.fps, codec=args.codec,
                         crops=not args.no_crops, progress=not args.no_progress, shrink=shrink)
    print(f"{PROG} render: {len(specs)} video{'s' * (len(specs) != 1)} into {args.out} "
          f"({args.size} px, {args.fps:g} fps, {args.duration:g} s); PSNR of the decoded frames over the folder's "
          f"videos: {rep['psnr_mean_db']:.1f} dB mean, {rep['psnr_min_db']:.1f} dB min ({args.out}/render.json)")
    return 0


def _import_cvat(args) -> int:
    try:
        from export.dataset.cvat import import_cvat
    except ModuleNotFoundError as err:
        if err.name != "export.dataset.cvat":
            raise
        print(f"{PROG} import-cvat: not available in this installation (export/dataset/cvat.py is missing)",
              file=sys.stderr)
        return 2
    for flag, path in (("XML", args.xml), ("--video", args.video), ("--labels", args.labels)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    extra = {"labels_yaml": args.labels} if args.labels else {}
    try:
        ann_path = import_cvat(args.xml, args.video, args.out, **extra)
    except (ValueError, OSError) as err:  # DatasetError is a ValueError: the converter's one-line reasons
        print(f"{PROG}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"{PROG} import-cvat: wrote {ann_path}; next: lvm-data check {shlex.quote(str(args.out))}")
    return 0


def _verdicts(args) -> int:
    import math

    from export.dataset.verdicts import DEFAULT_PAD_S, VERDICTS_FILE, export_verdicts

    pad = DEFAULT_PAD_S if args.pad is None else args.pad
    if not (math.isfinite(pad) and pad >= 0):
        raise UsageError(f"--pad {args.pad:g}: must be a number of seconds >= 0")
    listing = export_verdicts(args.state_dir, args.out, pad_s=pad)
    counts: dict[str, int] = {}
    for e in listing["items"]:
        counts[e["outcome"]] = counts.get(e["outcome"], 0) + 1
    said = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    print(f"{PROG} verdicts: {len(listing['items'])} item{'s' * (len(listing['items']) != 1)} in {args.out} ({said}); "
          f"the footage each needs: {args.out}/{VERDICTS_FILE}; then lvm-data check {shlex.quote(str(args.out))}")
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--json {path}: cannot write ({err.strerror})") from None
