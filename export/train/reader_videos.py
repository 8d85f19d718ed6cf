"""The reader stage's videos: each training video streamed once through the frozen sampler, its
memories (after every ``every``-th clip) and a few clips' timeline rows kept with every token's
targets from the annotations (the instance under the token's patch, its activity, box and event
span), its crops, its present and absent queries, and frame tokens for the identity loss.
Calibration videos also keep every frame's tokens, for the timeline the runtime would build.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.checkout import Query
from edge_runtime.checkout.absent_queries import sample_absent_queries
from export.dataset.video_data import (
    VideoData,
    attach_queries,
    backbone_digest,
    encode_video,
    load_dataset_video,
    render_video,
)
from export.model.lvmnet import LVMNet
from export.train.streaming import MemoryStack, stream_clips
from export.train.token_targets import token_fact_targets

FRAME_POS = 12000  # frame tokens kept per video for the identity loss (as many negatives)
# clips per training video whose timeline rows (edge_runtime/memory/timeline.py) are trained on beside
# its memories: 28 clips = 56 rows, about as many as the memories kept (every 2nd clip of a 30-min video)
TIMELINE_CLIPS = 28


@dataclass
class ReaderVideo(MemoryStack):
    """The frozen sampler's memories of one video (every ``every``-th clip and the last) with each
    memory token's targets, the video's crops and its queries."""
    snap_end: np.ndarray     # (S,) seconds of stream each memory has seen
    inst: torch.Tensor       # (S, m) int64: the product class under the token (-1 none)
    act: torch.Tensor        # (S, m) int64
    box: torch.Tensor        # (S, m, 4)
    span: torch.Tensor       # (S, m, 2)
    crop_ids: torch.Tensor   # (K,) instance ids
    crop_cls: torch.Tensor   # (K,) their product classes
    crop_tokens: torch.Tensor  # (K, P, d)
    queries: list[Query]     # present and absent
    frame_tokens: torch.Tensor  # (n, d) float16: frame tokens (any frame, not only the memory's) for identity
    frame_inst: torch.Tensor    # (n,) their product class, -1 none
    # calibration videos only: every frame's tokens (N, P, d) float16 and times, for the timeline track
    video_tokens: torch.Tensor | None = None
    video_times: np.ndarray | None = None

    def answerable(self, s: int) -> list[Query]:
        """The queries memory ``s`` can answer: those whose window it has seen whole, and on the video's
        last memory every query. A stream's last partial clip never commits (the runtime answers from
        the memory a 30-minute video leaves at 1,792 s), so without the last memory's exception no
        30-minute window would ever be asked of a 30-minute video."""
        if s == len(self.snap_end) - 1:
            return list(self.queries)
        return [q for q in self.queries if q.end <= self.snap_end[s] + 1e-6]


@torch.no_grad()
def reader_video(net: LVMNet, data: VideoData, every: int, absent_share: float, seed: int,
                 keep_video: bool = False, timeline_rows: int = 0) -> ReaderVideo:
    """``timeline_rows``: clips whose timeline rows are added after the memories (0: none)."""
    from edge_runtime.memory.timeline import clip_rows
    from export.train.timeline_tokens import default_timeline

    cfg = net.cfg
    T, fps = cfg.stream.clip_frames, cfg.stream.fps
    inst_map, act_map, box_map, span_map = token_fact_targets(data.annotations, data.times, cfg.backbone.grid)
    # identity is learnt per product class: instances of one class look alike (what the absent queries
    # assume too), and instance-level targets called the same look a match here and a miss there
    cls_of = {int(i["instance_id"]): int(i.get("class_id", i["instance_id"])) for i in data.annotations["instances"]}
    lut = np.full(max(cls_of, default=0) + 2, -1, np.int64)
    for i, c in cls_of.items():
        lut[i] = c
    inst_map = np.where(inst_map >= 0, lut[np.clip(inst_map, 0, len(lut) - 1)], -1)
    per = {k: [] for k in ("tokens", "times", "patches", "valid", "basis", "sv", "inst", "act", "box", "span")}
    ends = []
    n_clips = len(data.times) // T
    net.eval()
    # the timeline's rows (whole frames of one clip, as the runtime cuts them) of a few clips, read
    # with the SVD state of their own commit: the reader learns the dense, mostly empty rows too
    spec = default_timeline(cfg) if timeline_rows else None
    row_clips = set(np.random.default_rng(seed + 31).choice(n_clips, min(timeline_rows, n_clips), replace=False).tolist()) \
        if spec is not None and n_clips else set()
    rows_per = []
    for c, mem, svd in stream_clips(net, data, "neural"):
        if c in row_clips:
            basis, sv = svd.padded()
            rows = clip_rows(data.tokens[c * T:(c + 1) * T].float().numpy(), np.asarray(data.times[c * T:(c + 1) * T]),
                             T, spec)
            for r in range(len(rows["mem"])):
                rows_per.append((rows["mem"][r], rows["mem_t"][r], rows["mem_p"][r], rows["mem_valid"][r],
                                 basis.float(), sv.float()))
        if c % every and c != n_clips - 1:
            continue
        t, p = mem[1][0], mem[2][0]
        frame = torch.from_numpy(np.clip(np.searchsorted(data.times, t.numpy() - 0.5 / fps), 0, len(data.times) - 1))
        basis, sv = svd.padded()
        for k, v in (("tokens", mem[0][0].to(torch.float16)), ("times", t), ("patches", p), ("valid", mem[3][0]),
                     ("basis", basis.float()), ("sv", sv.float()),
                     ("inst", torch.from_numpy(inst_map)[frame, p]), ("act", torch.from_numpy(act_map)[frame, p]),
                     ("box", torch.from_numpy(box_map)[frame, p]), ("span", torch.from_numpy(span_map)[frame, p])):
            per[k].append(v)
        ends.append((c + 1) * T / fps)
    for tok, t, p, valid, basis, sv in rows_per:  # after the memories: indices >= len(snap_end)
        t, p = torch.from_numpy(t), torch.from_numpy(p)
        frame = torch.from_numpy(np.clip(np.searchsorted(data.times, t.numpy() - 0.5 / fps), 0, len(data.times) - 1))
        for k, v in (("tokens", torch.from_numpy(tok).to(torch.float16)), ("times", t), ("patches", p),
                     ("valid", torch.from_numpy(valid)), ("basis", basis), ("sv", sv),
                     ("inst", torch.from_numpy(inst_map)[frame, p]), ("act", torch.from_numpy(act_map)[frame, p]),
                     ("box", torch.from_numpy(box_map)[frame, p]), ("span", torch.from_numpy(span_map)[frame, p])):
            per[k].append(v)
    ids = sorted(data.crop_tokens)
    n_absent = int(round(len(data.queries) * absent_share / max(1e-9, 1 - absent_share)))
    absent = sample_absent_queries(data.annotations, n_absent, np.random.default_rng(seed + 7919), crop_ids=ids)
    # identity is appearance only, so every frame token can teach it: all tokens showing an instance (up to
    # ``FRAME_POS``) and as many others
    rng = np.random.default_rng(seed)
    flat = inst_map[: len(data.tokens)].reshape(-1)
    pos, neg = np.flatnonzero(flat >= 0), np.flatnonzero(flat < 0)
    pick = np.concatenate([rng.choice(pos, min(FRAME_POS, len(pos)), replace=False),
                           rng.choice(neg, min(FRAME_POS, len(neg)), replace=False)])
    return ReaderVideo(**{k: torch.stack(v) for k, v in per.items()}, snap_end=np.asarray(ends),
                       crop_ids=torch.tensor(ids), crop_cls=torch.tensor([cls_of.get(i, -1) for i in ids]),
                       crop_tokens=torch.stack([data.crop_tokens[i].float() for i in ids]),
                       queries=list(data.queries) + absent,
                       frame_tokens=data.tokens.reshape(-1, data.tokens.shape[-1])[torch.from_numpy(pick)].clone(),
                       frame_inst=torch.from_numpy(flat[pick]),
                       video_tokens=data.tokens if keep_video else None,
                       video_times=np.asarray(data.times) if keep_video else None)


def _cached_files(cache) -> int:
    return sum(1 for _ in Path(cache).glob("*.safetensors")) if cache is not None and Path(cache).is_dir() else 0


def prepare_in_order(build: Callable[[int, int], list], n: int, cache, log: Callable[[str], None],
                     what: str) -> list:
    """``build(a, b)`` -> the videos a..b-1 of ``n``, prepared in order; once one was rendered (or decoded)
    and encoded, ``log`` says how long the rest will take at its cost. A video whose tokens the cache held
    (stage 1's) costs a fraction of that, so the estimate waits for the first one the cache lacked (a new
    file in ``cache``; without a cache every video is encoded)."""
    out: list = []
    k = 0
    while k < n:
        t, before = time.time(), _cached_files(cache)
        out += build(k, k + 1)
        k += 1
        if cache is None or _cached_files(cache) > before:
            took = time.time() - t
            log(f"{what} (~{took * (n - k) / 60:.1f} min more to prepare at {took:.1f} s a video)")
            break
    return out + (build(k, n) if k < n else [])


def make_videos(net: LVMNet, specs: list[tuple[int, int]], video_s: float, queries: int, every: int,
                absent_share: float, desc: str, progress: bool = True, cache=None,
                keep_video: bool = False, timeline_rows: int = 0) -> list[ReaderVideo]:
    cfg = net.cfg
    sha = backbone_digest(net.backbone)
    out = []
    for seed, look in tqdm(specs, desc=desc, leave=False, disable=not progress):
        data = render_video(seed, video_s, cfg.backbone.image_size, cfg.stream.fps, look=look)
        encode_video(net.backbone, data, cache=cache, backbone_sha=sha)
        attach_queries(data, queries, seed)
        out.append(reader_video(net, data, every, absent_share, seed, keep_video, timeline_rows))
    return out


def make_dataset_videos(net: LVMNet, items: list, queries: int, every: int, absent_share: float, seed: int,
                        cache, desc: str, progress: bool = True, keep_video: bool = False,
                        timeline_rows: int = 0) -> list[ReaderVideo]:
    """Dataset items (export.dataset.DatasetItem, ``(index, item)`` pairs) decoded as lvm-train decodes
    them, their tokens from the cache where present. Queries are seeded per item index the way
    lvm-train seeds the same video's queries (``seed * 1009 + index``). ``keep_video`` and
    ``timeline_rows`` as for ``make_videos``: the timeline track is trained and calibrated on a
    dataset as on generated videos."""
    cfg = net.cfg
    sha = backbone_digest(net.backbone)
    two_clips = 2 * cfg.stream.clip_frames
    out = []
    for i, item in tqdm(items, desc=desc, leave=False, disable=not progress):
        data = load_dataset_video(item, cfg.backbone.image_size, cfg.stream.fps)
        if len(data.times) < two_clips:
            from export.dataset import DatasetError
            raise DatasetError(f"{item.video}: {len(data.times)} frames at {cfg.stream.fps:g} fps, fewer than two "
                               f"clips ({two_clips}): too short to train on")
        encode_video(net.backbone, data, cache=cache, backbone_sha=sha)
        qseed = seed * 1009 + i
        attach_queries(data, queries, qseed)
        out.append(reader_video(net, data, every, absent_share, qseed, keep_video, timeline_rows))
    return out
