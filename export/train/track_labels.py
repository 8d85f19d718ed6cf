"""Train the track labeler (edge_runtime/items/sequence_model.py) on a bundle's own item tracks.

    python -m export.train.track_labels --bundle engines/lvm-tiny-fp32 \
        --out checkpoints/lvm-tiny-track-labels.safetensors

Training videos (``training_video(seed, i)`` from ``--first`` on, past the event head's own; the first
half at the default rates, the second with scan avoidance ``0.25,0.25,0.1`` as in the head's) stream at the head's rate through
the bundle's backbone and event head (ONNX Runtime, as the runtime runs them), then the runtime's
tracker, zone proposal and track rows (``ItemState`` with a recorder in place of the model), so the
model learns the detections the runtime will give it. Each row is labelled with the annotated
activity of the item its box covers (IoU > 0.3 with the item's true box; an undetected row takes the
nearest detected row's item within 2 s), ``none`` elsewhere; ``browse`` leaves no track and is
``none``. A bidirectional 2-layer GRU (64 wide) learns the labels on chunks of 200 rows,
cross-entropy weighted by the inverse square root of each class's share.

``--saved FOLDER`` reads the head's outputs saved by ``tools/accuracy/head_replay.py save`` instead
of streaming the videos again (the same numbers; for trying settings). lvm-export puts the file into
the bundle when it lies beside the checkpoint (``<stem>-track-labels.safetensors``).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.items.item_events import GeometricLabeler
from edge_runtime.items.sequence_model import FORMAT
from edge_runtime.items.track_labels import TrackLabels
from edge_runtime.items.track_rows import FEATURES, ROW_COLS, features, row_iou

CLASSES = ("none", *GeometricLabeler.activities)
MATCH_IOU = 0.3       # a row's box is the item's when it overlaps the item's true box this much
FILL_ROWS = 10        # an undetected row takes the item of the nearest detected row this close (2 s at 5 fps)
CHUNK = 200           # rows a training sequence (40 s at 5 fps); chunks overlap by half
HIDDEN, LAYERS = 64, 2
VIDEOS, FIRST, EPOCHS = 12, 49, 10
SHRINK = "0.25,0.25,0.1"


class _Recorder(TrackLabels):
    """TrackLabels that keeps each track's rows where the runtime would label them."""

    def __init__(self, zones, fps: float) -> None:
        super().__init__(None, zones, fps=fps)  # type: ignore[arg-type]
        self.recorded: list[tuple[float, np.ndarray]] = []

    def _label(self, tracks, scanned):
        self.recorded += [(t0, r) for _, t0, r, _, _ in tracks if len(r)]
        return []


def track_rows(dets: list, fps: float, zones=None) -> tuple[list[tuple[float, np.ndarray]], object]:
    """One video's detections (in time order) -> each track's (start, rows) and the zones (``zones``, else
    proposed from the head's zone map, as a stream without configured zones does)."""
    from edge_runtime.items.item_state import ItemState

    items = ItemState(zones, bundle_id="training", fps=fps)
    recorder = None
    for d in dets:
        items.update(d)
        if items.zones is not None and recorder is None:
            recorder = items.labels = _Recorder(items.zones, fps)
    items.flush()
    return (recorder.recorded if recorder else []), items.zones


def row_labels(start: float, rows: np.ndarray, ann: dict, fps: float) -> np.ndarray:
    """The class of each row (rows at ``fps``): the annotated activity of the item its box covers, at its time."""
    t = start + rows[:, 0].astype(np.float64)
    box_fps = float(ann["fps_boxes"])
    keys = np.round(t * box_fps).astype(np.int64)
    inst = np.full(len(rows), -1)
    best = np.full(len(rows), MATCH_IOU)
    for k, box_rows in ann["boxes"].items():
        b = np.asarray(box_rows, np.float64)
        at = dict(zip(np.round(b[:, 0] * box_fps).astype(np.int64).tolist(), range(len(b))))
        idx = np.array([at.get(int(x), -1) for x in keys])
        ok = (idx >= 0) & (rows[:, 1] > 0)
        if not ok.any():
            continue
        iou = np.zeros(len(rows))
        iou[ok] = row_iou(rows[ok, 4:8].astype(np.float64), b[idx[ok], 1:5])
        better = iou > best
        inst[better], best[better] = int(k), iou[better]
    seen = np.flatnonzero(inst >= 0)
    if len(seen):
        for j in np.flatnonzero(inst < 0):
            k = seen[np.argmin(np.abs(seen - j))]
            if abs(k - j) <= FILL_ROWS:
                inst[j] = inst[k]
    y = np.zeros(len(rows), np.int64)
    by_item: dict[int, list] = {}
    for e in ann["events"]:
        if e["activity"] in CLASSES:
            by_item.setdefault(int(e["instance_id"]), []).append(e)
    half = 0.5 / fps
    for j in np.flatnonzero(inst >= 0):
        for e in by_item.get(int(inst[j]), ()):
            if e["start"] - half <= t[j] <= e["end"] + half:
                y[j] = CLASSES.index(e["activity"])
                break
    return y


def examples(dets: list, ann: dict, fps: float, zones=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """One video -> (features, labels) of each track the runtime would label."""
    recorded, zones = track_rows(dets, fps, zones)
    return [(features(r, zones), row_labels(t0, r, ann, fps)) for t0, r in recorded]


def train(data: list[tuple[np.ndarray, np.ndarray]], *, epochs: int = EPOCHS, seed: int = 0, threads: int = 2,
          log=print):
    """-> (the torch model, feature mean, feature sd, per-class row counts)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    X = np.concatenate([x for x, _ in data])
    mean, sd = X.mean(0).astype(np.float32), (X.std(0) + 1e-6).astype(np.float32)
    counts = np.bincount(np.concatenate([y for _, y in data]), minlength=len(CLASSES)).astype(np.float64)
    weight = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
    weight /= weight.mean()
    chunks = []
    for x, y in data:
        x = (x - mean) / sd
        for a in range(0, len(x), CHUNK // 2):
            chunks.append((x[a:a + CHUNK], y[a:a + CHUNK]))
            if a + CHUNK >= len(x):
                break
    model = GRULabeler(len(FEATURES), HIDDEN, LAYERS, len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    t0 = time.perf_counter()
    for ep in range(epochs):
        order, total = rng.permutation(len(chunks)), 0.0
        for b in range(0, len(order), 32):
            batch = [chunks[i] for i in order[b:b + 32]]
            L = max(len(c[0]) for c in batch)
            xb = np.zeros((len(batch), L, len(FEATURES)), np.float32)
            yb = np.full((len(batch), L), -100, np.int64)
            for i, (x, y) in enumerate(batch):
                xb[i, :len(x)], yb[i, :len(y)] = x, y
            loss = nn.functional.cross_entropy(model(torch.from_numpy(xb)).reshape(-1, len(CLASSES)),
                                               torch.from_numpy(yb).reshape(-1), weight=weight, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        log(f"epoch {ep + 1}/{epochs}: loss {total / len(chunks):.3f} ({time.perf_counter() - t0:.0f} s)")
    return model.eval(), mean, sd, counts


def GRULabeler(features_n: int, hidden: int, layers: int, classes: int):
    """The model whose weights sequence_model.SequenceModel reads (its names are the contract)."""
    import torch
    from torch import nn

    class _M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(features_n, hidden)
            self.gru = nn.GRU(hidden, hidden, layers, batch_first=True, bidirectional=True)
            self.out = nn.Linear(2 * hidden, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.gru(torch.relu(self.inp(x)))[0])

    return _M()


def save(path: Path, model, mean: np.ndarray, sd: np.ndarray, info: dict) -> Path:
    """safetensors, never pickle: the weights, the feature normalisation, the classes and how it was trained."""
    import torch
    from safetensors.torch import save as to_bytes

    from edge_runtime.atomic_write import atomic_writer

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    state["feature_mean"], state["feature_sd"] = torch.from_numpy(mean), torch.from_numpy(sd)
    meta = {"format": FORMAT, "classes": json.dumps(list(CLASSES)), "layers": str(LAYERS),
            "features": json.dumps(list(FEATURES)), "rows": json.dumps(list(ROW_COLS)), "info": json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as tmp:
        tmp.write_bytes(to_bytes(state, metadata=meta))
    return path


def _bundle_detections(eng, videos: list, log):
    """Each video's detections from the engine's backbone and event head (ONNX Runtime)."""
    start = time.perf_counter()
    for i, video in enumerate(videos, 1):
        t0, dets = time.perf_counter(), []
        frames = video.frames(eng.events.event_fps)
        while chunk := list(itertools.islice(frames, eng.batch_size)):
            dets += eng.events.detect(eng.encode(np.stack([f for _, f in chunk])), [t for t, _ in chunk])
        left = (time.perf_counter() - start) / i * (len(videos) - i)
        log(f"  video {i} of {len(videos)} ({video.video_id}): {len(dets)} frames in {time.perf_counter() - t0:.0f} s"
            f"{f', about {left / 60:.0f} min left' if i < len(videos) else ''}")
        yield dets


def _saved_detections(folder: Path, log):
    """Each saved video's detections (tools/accuracy/head_replay.py save), with its video."""
    from edge_runtime.checkout import CheckoutVideo, ShrinkRates
    from edge_runtime.items import head_decode

    meta = json.loads((folder / "meta.json").read_text())
    for i, pv in enumerate(meta["per_video"]):
        with np.load(folder / f"video{i}.npz") as z:
            out = {k: z[k].astype(np.float32) for k in head_decode.OUTPUTS}
            times = z["times"]
        video = CheckoutVideo(seed=pv["seed"], duration_s=meta["video_s"], size=meta["frame_size"], look=pv["look"],
                              shrink=ShrinkRates(**meta["shrink"]))
        yield video, head_decode.decode(out, times, meta["threshold"]), float(meta["event_fps"])


def label_videos(seed: int, first: int, n: int, video_s: float, size: int) -> list:
    """The labeler's training videos: ``training_video(seed, i)`` for ``n`` indices from ``first``, the
    first half at the default rates, the second with the scan avoidance ``SHRINK``."""
    from edge_runtime.checkout import CheckoutVideo, ShrinkRates, training_video

    videos = []
    for i in range(first, first + n):
        vseed, look = training_video(seed, i)
        rates = ShrinkRates.parse(SHRINK if i >= first + n // 2 else "default")
        videos.append(CheckoutVideo(seed=vseed, duration_s=video_s, size=size, look=look, shrink=rates))
    return videos


def fit(detected, fps: float, out: Path, *, epochs: int = EPOCHS, threads: int = 2, log=print,
        extra: dict | None = None) -> dict | None:
    """``detected``: (video, its detections in time order) of each training video -> the labeler trained
    on their tracks and written to ``out``; its ``info`` (None, nothing written, when no video gave a track)."""
    t0 = time.perf_counter()
    data, shown = [], []
    for video, dets in detected:
        data += examples(dets, video.annotations(), fps)
        shown.append([video.seed, video.look])
    frames_s = time.perf_counter() - t0
    rows = sum(len(y) for _, y in data)
    if not data:
        log(f"no item tracks in {len(shown)} video{'s' * (len(shown) != 1)}: no track labeler written (the queries "
            "read the geometric labeler's item events)")
        return None
    log(f"{len(data)} tracks, {rows} rows from {len(shown)} video{'s' * (len(shown) != 1)} in {frames_s:.0f} s; "
        f"training {epochs} epoch{'s' * (epochs != 1)}")
    model, mean, sd, counts = train(data, epochs=epochs, threads=threads, log=log)
    info = {"fps": fps, "videos": shown, "tracks": len(data), "rows": int(rows),
            "rows_per_class": {c: int(n) for c, n in zip(CLASSES, counts)}, "epochs": epochs,
            "hidden": HIDDEN, "chunk": CHUNK, "seconds": round(time.perf_counter() - t0, 1),
            "frames_seconds": round(frames_s, 1), "threads": threads, **(extra or {})}
    save(Path(out), model, mean, sd, info)
    log(f"wrote {out} ({info['seconds']:.0f} s)")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.train.track_labels", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="engines/lvm-tiny-fp32", help="the bundle whose event head's detections "
                   "it learns (default: %(default)s)")
    p.add_argument("--out", required=True, help="the weights file to write (safetensors)")
    p.add_argument("--videos", type=int, default=VIDEOS, help="training videos (default %(default)s)")
    p.add_argument("--first", type=int, default=FIRST, help="the first training video's index (default %(default)s: "
                   "past the event head's 48 and its threshold video)")
    p.add_argument("--video-s", type=float, default=1800.0, help="seconds a video (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="training seed: training_video(seed, i) (default 0)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="default %(default)s")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--saved", action="append", default=[], help="a folder of head outputs saved by "
                   "tools/accuracy/head_replay.py save (repeatable), instead of streaming training videos")
    a = p.parse_args(argv)
    say = functools.partial(print, flush=True)
    if a.videos < 1 or a.video_s <= 0 or a.epochs < 1:
        print("track_labels: --videos, --video-s and --epochs must be positive", file=sys.stderr)
        return 2
    if bad := [f for f in a.saved if not (Path(f) / "meta.json").is_file()]:
        print(f"track_labels: --saved {bad[0]}: no meta.json (a folder tools/accuracy/head_replay.py save wrote)",
              file=sys.stderr)
        return 2
    if a.saved:
        saved = json.loads((Path(a.saved[0]) / "meta.json").read_text())
        fps, head_sha = float(saved["event_fps"]), saved.get("event_head_sha256")
        detected = ((video, dets) for folder in a.saved for video, dets, _ in _saved_detections(Path(folder), say))
    else:
        bundle = Path(a.bundle)
        if not (bundle / "manifest.json").is_file():
            print(f"track_labels: --bundle {bundle}: no manifest.json (an exported bundle folder)", file=sys.stderr)
            return 2
        from edge_runtime.engine.engine import Engine

        eng = Engine(bundle, threads=a.threads, events=True)
        if eng.events is None:
            print(f"track_labels: --bundle {bundle}: it has no event head (export it without --no-events)",
                  file=sys.stderr)
            return 2
        fps, head_sha = eng.events.event_fps, eng.bundle.manifest["events"].get("file_sha256")
        videos = label_videos(a.seed, a.first, a.videos, a.video_s, eng.frame_size)
        say(f"streaming {len(videos)} training videos through {bundle}'s event head")
        detected = zip(videos, _bundle_detections(eng, videos, say))
    extra = {"events_sha256": head_sha} if head_sha else None  # lvm-export checks it against the bundle's head
    return 0 if fit(detected, fps, Path(a.out), epochs=a.epochs, threads=a.threads, log=say, extra=extra) else 1


if __name__ == "__main__":
    sys.exit(main())
