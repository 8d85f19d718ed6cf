"""``lvm-edge demo``: no camera needed. Export the shipped model if there is no current bundle (into
another folder than the shipped one only with --export-if-missing), stream the procedural checkout
video through it, then print answers beside the ground truth."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge_runtime.cli.common import REPO_ROOT, CliError, load_settings, open_engine, resolve_path, say
from edge_runtime.cli.status_line import StatusLine

SHIPPED_CHECKPOINT = REPO_ROOT / "checkpoints" / "lvm-tiny.safetensors"
# runtime settings of a live run: the demo serves no API, keeps no state and streams its own source
DEMO_IGNORES = ("source", "streams", "api", "state", "alerts", "batch_frames", "duration_s")


def given_settings(config: str | None) -> set[str]:
    """The top-level settings the file ``config`` sets (none without one)."""
    from edge_runtime.cli.runtime_config import load_runtime_settings

    return set(load_runtime_settings(resolve_path(config)).model_fields_set) if config else set()


def cmd_demo(args) -> int:
    import numpy as np

    from edge_runtime.query.reader_query import not_seen_below
    from edge_runtime.serve.pipeline import RunState, Runtime

    s = load_settings(args, {"bundle": args.bundle, "backend": args.backend, "threads": args.threads,
                             "demo.seed": args.seed, "demo.duration_s": args.duration, "demo.queries": args.queries,
                             "answers": args.answers})
    ignored = [k for k in DEMO_IGNORES if k in given_settings(args.config)]
    if ignored:
        say(f"{args.config}: the demo streams demo:// in-process, so its {', '.join(ignored)} settings do not apply")
    try:
        from edge_runtime.checkout import CheckoutVideo, sample_queries
        from edge_runtime.checkout.queries import WINDOWS, engine_request
    except ImportError as err:
        raise CliError(f"the checkout generator is not available ({err})", 1) from None
    if args.save_crops:
        return save_crops(CheckoutVideo(seed=s.demo.seed, duration_s=s.demo.duration_s, size=CROP_SIZE,
                                        look=s.demo.look), Path(args.save_crops))
    bundle = resolve_path(s.bundle)  # the current directory first: the checkout ships engines/lvm-tiny-fp32
    if not bundle.is_absolute() and not bundle.exists() and (REPO_ROOT / "pyproject.toml").is_file():
        bundle = REPO_ROOT / bundle  # an editable install: lvm-export runs in the repository, export there
    if not (bundle / "manifest.json").is_file() and not (args.export_if_missing or shipped_bundle(s)):
        # a mistyped --bundle must not become a new 40-second export into the typo
        raise CliError(f"--bundle {s.bundle}: no bundle there (no manifest.json); give an exported bundle folder, "
                       f"or add --export-if-missing to export the shipped model into it")
    ensure_bundle(bundle)
    engine = open_engine(str(bundle), s.backend, s.threads, s.answers)
    d = s.demo
    # without scan avoidance: the table below scores the model's answers against the ground truth of
    # the video its accuracy figures come from, and an 8-activity model cannot name pass_around
    uri = f"demo://checkout?seed={d.seed}&duration={d.duration_s:g}&shrink=0" + (f"&look={d.look}" if d.look else "")
    runtime = Runtime(engine, warn=say)
    say(f"streaming {uri} through {engine.bundle.describe()} on {engine.backend}, answers by the {engine.answers_kind}")
    t0 = time.monotonic()
    runtime.start(uri, realtime=False)
    status = StatusLine(runtime, s.status_every_s)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not runtime.wait(0.25):
        status.tick()
        if stop.is_set():
            break
    wall = time.monotonic() - t0
    runtime.stop(snapshot=False)
    status.tick(force=True)
    status.done()
    if runtime.state is RunState.FAILED:
        runtime.close()
        raise CliError(runtime.error or "the demo source failed", 1)
    engine.flush(runtime.stream)  # the stream has ended: commit the last partial clip too
    cov = runtime.stream.coverage
    print(f"\nstreamed {runtime.stream.frames_processed} frames ({(cov['end'] or 0):.0f} s of video) in {wall:.1f} s wall: "
          f"{(cov['end'] or 0) / max(wall, 1e-9):.1f} video-seconds per second; memory {runtime.stream.memory_bytes / 1e6:.2f} MB")
    video = CheckoutVideo(seed=d.seed, duration_s=d.duration_s, size=engine.frame_size, look=d.look)
    # drawn twice over: the sampler can draw a question twice, and repeats are dropped
    queries = distinct(sample_queries(video.annotations(), 2 * d.queries, np.random.default_rng(d.seed)))[:d.queries]
    if not queries:  # a smoke run: streaming worked, but no question fits the video
        runtime.close()
        shortest = min(WINDOWS.values())
        say(f"no questions to ask: they are about windows of {shortest:g} s or more, and this video is "
            f"{d.duration_s:g} s (--duration {shortest:g} or more for the table of answers)")
        return 0
    reqs = [engine_request(q, video.object_crop(q.instance_id, size=engine.frame_size)
                           if q.type != "object" and q.instance_id is not None else None) for q in queries]
    t1 = time.perf_counter()
    answers = runtime.query(reqs)
    qt = time.perf_counter() - t1
    print(f"{len(reqs)} queries answered in one batch in {qt * 1000:.0f} ms\n")
    sec = engine.reader_section
    cuts = {t: not_seen_below(sec, t) for t in sec["calibration"]} if sec else {}
    products = {i["instance_id"]: i["product"] for i in video.annotations()["instances"]}
    print(demo_table(queries, answers, engine.labels, cuts, products))
    print(TABLE_LEGEND)
    runtime.close()
    return 0


CROP_SIZE = 224  # the API resizes pictures to the bundle's frame size
TABLE_LEGEND = """
given: the query's inputs: an activity, and/or a product's picture, "NAME #N": item N of this video, a
  NAME of the generator's catalog (several items of one product look alike; `lvm-edge demo --save-crops
  DIR` writes each item's picture as DIR/object-N.png, for `lvm-edge query --image`).
answer: activity: the top-ranked activities, as many as the truth has; object: when the object was seen
  (its extent) and its boxes [x1, y1, x2, y2] as fractions of the frame, one per 1/5 s inside the
  extent; time: the best interval, with p its score (0-1).
  With the memory reader, an answer also says how likely it is right (confidence 0-1), or "not seen"
  when the reader found too little evidence of it in the window (p: how likely it was seen, < the
  least its query type needs; its best guess follows).
R@1x: Recall@1x of the answer against the ground truth (1.00 right, 0.00 wrong; n/a: not scored).
  activity: the share of the true activities among those answered; time: 1 when the best interval
  overlaps the true one by more than 0.3 (tIoU); object: 1 when the boxes overlap the true boxes by
  more than 0.3 (vIoU: box overlap, frame by frame, over the frames of either track), so an object
  answer whose time span matches the truth still scores 0.00 when its boxes are elsewhere."""


def distinct(queries: list) -> list:
    """The queries without repeats: the sampler may draw the same (type, window, inputs) twice,
    which would print the same row twice."""
    seen, out = set(), []
    for q in queries:
        key = (q.type, round(q.start, 2), round(q.end, 2), q.instance_id, q.activity_id)
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def save_crops(video, folder: Path) -> int:
    """--save-crops: the picture of every product instance in the demo video, one PNG each."""
    import cv2

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--save-crops {folder}: cannot create it ({err.strerror})") from None
    ann = video.annotations()
    for inst in ann["instances"]:
        path = folder / f"object-{inst['instance_id']}.png"
        crop = video.object_crop(inst["instance_id"])
        if not cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise CliError(f"--save-crops {folder}: cannot write {path.name}", 1)
        print(f"{path}  {inst['product']}  visible {inst['appear']:.0f}-{inst['vanish']:.0f} s", flush=True)
    say(f"{len(ann['instances'])} object pictures of {video!r} in {folder}; ask about one with "
        f"`lvm-edge query activity --image {folder}/object-N.png --start S --end E`")
    return 0


def shipped_bundle(settings) -> bool:
    """Whether the demo runs the shipped bundle's path (the settings' default), which it exports when
    missing without being asked: a runtime-only install's first run."""
    return Path(settings.bundle) == Path(type(settings).model_fields["bundle"].default)


def ensure_bundle(bundle: Path) -> None:
    """Export the shipped checkpoint to ``bundle`` unless a current export is already there."""
    import importlib.util
    import shutil

    can_export = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("export.cli.export") is not None
    if (bundle / "manifest.json").is_file():
        reason = _stale_reason(bundle)
        if reason is None:
            return
        if not can_export:  # a runtime-only install never exports: the bundle it has still runs
            say(f"using {bundle} although {reason} (re-exporting it needs the export extra)")
            return
        say(f"re-exporting {bundle}: {reason}")
    if not can_export:
        raise CliError(f"no bundle at {bundle.absolute()} and exporting one needs the export extra: "
                       f"pip install 'lvm-edge[export]' (or run lvm-edge demo in the lvm-edge checkout, whose "
                       f"engines/ holds lvm-tiny-fp32, or pass --bundle with an exported bundle)")
    exe = shutil.which("lvm-export", path=str(Path(sys.executable).parent)) or shutil.which("lvm-export")
    cmd = [exe] if exe else [sys.executable, "-m", "export.cli.export"]
    cmd += ["--precision", "fp32", "--out", str(bundle)]
    say(f"no bundle at {bundle}: exporting it first ({' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))})")
    res = subprocess.run(cmd, cwd=REPO_ROOT)
    if res.returncode != 0 or not (bundle / "manifest.json").is_file():
        raise CliError(f"lvm-export failed (exit {res.returncode}); see its message above", 1)


def _stale_reason(bundle: Path) -> str | None:
    """Why an existing bundle no longer matches the shipped checkpoint, or None if it does.

    A bundle exported from an older shipped checkpoint must not be reused silently."""
    import json

    from edge_runtime.file_hash import sha256_file

    try:
        ck = json.loads((bundle / "manifest.json").read_text()).get("checkpoint") or {}
    except (OSError, ValueError):
        return "its manifest is unreadable"
    if not SHIPPED_CHECKPOINT.is_file() or Path(str(ck.get("path", ""))).name != SHIPPED_CHECKPOINT.name:
        return None  # exported from some other checkpoint on purpose: the user's bundle
    if ck.get("sha256") != sha256_file(SHIPPED_CHECKPOINT):
        return "it was exported from an older shipped checkpoint"
    return None


def demo_table(queries, answers, labels, cuts=None, products=None) -> str:
    """Answers beside ground truth, one row per query, then how many were right. ``cuts``: query type
    -> the p(seen) its answers need not to be "not seen" (the reader's; shown beside a not-seen
    answer's p). ``products``: item id -> its product's name (the pictures are named by it)."""
    try:
        from edge_runtime.checkout.metrics import score_query
    except ImportError:
        score_query = None
    rows = [("#", "type", "window (s)", "given", "answer", "ground truth", "R@1x")]
    scores: list[float] = []
    for i, (q, a) in enumerate(zip(queries, answers)):
        win = f"{q.start:.0f}-{q.end:.0f}"
        given = []
        if q.type != "activity" and q.activity_id is not None:
            given.append(labels[q.activity_id])
        if q.type != "object" and q.instance_id is not None:
            given.append(f"{(products or {}).get(q.instance_id, 'object')} #{q.instance_id}")
        if a.get("status") == "no_memory":
            ans, gt = "nothing in memory for this window", ""
        elif q.type == "activity":
            k = max(1, len(q.gt_activities))
            ans = ", ".join(labels[j] for j in a["ranked"][:k])
            gt = ", ".join(labels[j] for j in q.gt_activities)
        elif q.type == "object":
            gtb = [b for b in q.gt_boxes]
            ext = a.get("extent")
            seen = f"seen {ext[0]:.0f}-{ext[1]:.0f} s, " if ext else ""
            ans = f"{seen}{len(a['boxes'])} boxes, first {_box(a['boxes'][0])}" if a.get("boxes") else "no boxes"
            gt = f"seen {gtb[0][0]:.0f}-{gtb[-1][0]:.0f} s, {len(gtb)} boxes, first {_box(gtb[0][1:])}" if gtb else "none"
        else:
            s, e, p = a["intervals"][0] if a["intervals"] else (0, 0, 0)
            ans = f"{s:.0f}-{e:.0f} s (p {p:.2f})"
            gt = f"{q.gt_interval[0]:.0f}-{q.gt_interval[1]:.0f} s"
        if a.get("status") == "not_seen":
            cut = (cuts or {}).get(q.type)
            ans = f"not seen (p {a.get('p_seen') or 0.0:.2f}{f' < {cut:.2f}' if cut is not None else ''}); best guess {ans}"
        elif a.get("confidence") is not None:
            ans += f", confidence {a['confidence']:.2f}"
        hit = "?"
        if score_query is not None:
            try:
                val = score_query(q, a).get("recall@1x")
                hit = "n/a" if val is None else f"{float(val):.2f}"
                if val is not None:
                    scores.append(float(val))
            except Exception:  # a score is a courtesy here: the table still prints without it
                hit = "?"
        rows.append((str(i), q.type, win, " + ".join(given) or "-", ans, gt, hit))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if scores:
        lines += ["", right_line(scores, len(rows) - 1)]
    return "\n".join(lines)


def right_line(scores: list[float], asked: int) -> str:
    """How many scored answers were right (R@1x = 1.00), in part (an activity answer with some of the
    true activities) and not scored, in one line under the table."""
    right = sum(v >= 1.0 for v in scores)
    part = sum(0.0 < v < 1.0 for v in scores)
    line = f"{right} of {len(scores)} answers right (those with R@1x = 1.00)"
    if part:
        line += f", {part} in part"
    if asked > len(scores):
        line += f"; {asked - len(scores)} not scored"
    return line


def _box(b) -> str:
    return "[" + ", ".join(f"{float(x):.2f}" for x in list(b)[:4]) + "]"
