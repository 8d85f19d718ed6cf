"""lvm-train's track labeler stage: the labeler (export/train/track_labels.py) trained on the item tracks
of the run's own event head, written as ``<checkpoint stem>-track-labels.safetensors`` beside the
checkpoint, where lvm-export finds it.

The stage follows the event stage: its training videos (``label_videos``, past the event head's own
and its threshold video) are rendered at the head's rate, encoded by the frozen backbone (ONNX Runtime,
as every stage of lvm-train encodes frames: export/dataset/frame_encoder.py) and read by the event
head just trained (PyTorch), whose outputs the runtime's own decoding turns into detections at the
head's threshold; the runtime's tracker, zone proposal and track rows follow (``fit``). With the run's
memory reader beside the checkpoint, each detection is named as a bundle exported with it names it:
by its class and the reader's identity against the classes' drawn pictures (edge_runtime/engine/
event_path.py ``IDENTITY_WEIGHT``). The bundle path (``python -m export.train.track_labels --bundle``)
runs the same graphs in ONNX Runtime.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.items.head_decode import decode
from export.train.eta import minutes
from export.train.track_labels import fit, label_videos

BATCH = 64  # frames a call of the backbone and the head


@torch.no_grad()
def head_detections(backbone, head, threshold: float, videos: list, fps: float, *, progress: bool = True, log=print,
                    reader=None, classes: list[str] | None = None):
    """(video, its detections) of each video, in order, with a measured ETA after each video. ``reader``
    (a MemoryReader) with ``classes`` (the head's): detections carry the reader's identity and are named
    by it beside their class, as the runtime names them."""
    from export.dataset.frame_encoder import frame_encoder
    from export.dataset.video_data import backbone_digest

    encode = frame_encoder(backbone.eval(), backbone_digest(backbone))
    head.eval()
    naming = _naming(encode, reader, classes, videos[0].size if videos else 0) if reader is not None else None
    total = sum(int(np.ceil(v.duration_s * fps - 1e-9)) for v in videos)
    start = time.perf_counter()
    with tqdm(total=total, desc="track labeler: frames", unit="frame", mininterval=5.0, disable=not progress) as bar:
        for i, video in enumerate(videos, 1):
            dets, frames = [], video.frames(fps)
            while batch := list(itertools.islice(frames, BATCH)):
                dets += _detect(encode, head, batch, threshold, naming)
                bar.update(len(batch))
            spent = time.perf_counter() - start
            left = f", ~{minutes(spent / i * (len(videos) - i))} left" if i < len(videos) else ""
            log(f"track labeler: video {i} of {len(videos)}: {len(dets)} frames ({minutes(spent)} so far{left})")
            yield video, dets


def _naming(encode, reader, classes: list[str] | None, size: int) -> tuple:
    """(reader, the classes' drawn pictures' identities (K, Q, E) or None): what ``_detect`` names by,
    made as the runtime's engine makes it (``Engine.class_identities``, the reader's crop embedding)."""
    from edge_runtime.query.class_pictures import class_picture_grid

    reader.eval()
    grid = class_picture_grid(list(classes or []), size)
    if grid is None:
        return reader, None
    rows = reader.embed_crop(encode(np.stack(grid[0]), torch.float32)).numpy()
    return reader, rows.reshape(len(classes), grid[1], -1)


def _detect(encode, head, batch: list, threshold: float, naming: tuple | None = None) -> list:
    from edge_runtime.engine.event_path import IDENTITY_WEIGHT
    from edge_runtime.items.head_decode import EMBED

    tokens = encode(np.stack([f for _, f in batch]), torch.float32)
    out = {k: v.numpy() for k, v in head(tokens).items()}
    if naming is None:
        return decode(out, np.array([t for t, _ in batch]), threshold)
    reader, prototypes = naming
    out[EMBED] = reader.token_ident(tokens).numpy()
    return decode(out, np.array([t for t, _ in batch]), threshold, prototypes=prototypes, weight=IDENTITY_WEIGHT)


def train_track_labels(backbone, events_file: Path, out: Path, *, dim: int, grid: int, size: int, seed: int,
                       first: int, videos: int, video_s: float, epochs: int, threads: int, progress: bool = True,
                       log=print, reader=None, reader_sha256: str | None = None) -> dict | None:
    """The stage -> the labeler's ``info`` (None when the head gave no track to learn from: nothing written).
    ``reader``: the run's memory reader, when it has one (detections named by identity too; its file's
    ``reader_sha256`` is kept in the labeler's info, for --resume)."""
    from edge_runtime.file_hash import sha256_file
    from export.model.event_head import load_event_head

    head, meta = load_event_head(events_file, dim, grid)
    fps, threshold = head.ec.event_fps, float(meta["threshold"])
    chosen = label_videos(seed, first, videos, video_s, size)
    log(f"track labeler: {videos} training video{'s' * (videos != 1)} ({video_s:g} s each) at {fps:g} fps "
        f"through {events_file.name}, threshold {threshold:g}")
    extra = {"events_sha256": sha256_file(events_file), "events": events_file.name, "seed": seed, "first": first,
             "video_s": video_s, "reader_sha256": reader_sha256}
    return fit(head_detections(backbone, head, threshold, chosen, fps, progress=progress, log=log, reader=reader,
                               classes=list(meta["classes"])), fps, out,
               epochs=epochs, threads=threads, log=lambda m: log(f"track labeler: {m}"), extra=extra)
