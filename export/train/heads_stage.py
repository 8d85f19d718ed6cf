"""Second training stage: the query heads alone, on the frozen sampler's own memories.

In stage 1 (export/train/joint_stage.py) every step runs the sampler over one clip per video and answers ~24
queries: 672 such steps left the activity answers on the class prior. Here the
sampler is frozen. Every training video is streamed through it once and the memory after every clip
is kept (lvm-tiny: 112 clips x 392 tokens per 30-minute video), so a heads step costs no sampler work
and takes a large batch of (query, memory) pairs. A query is paired with the memory after a random
clip at or after its window's end: the memory the heads read at run time, with the asked window more
or less compressed by what the stream brought later.

The identity loss (``train.identity_weight``) tells the heads which memory tokens show the queried
object: the token of the patch holding the centre of that instance's box while one of its events is
in progress (export/train/token_targets.py), from annotations ReST also has.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.checkout import Query
from edge_runtime.config import model_config_from_dict
from export.dataset.video_data import VideoData, attach_queries, backbone_digest, encode_video, load_dataset_video, render_video
from export.train.eta import StepETA
from export.train.losses import QUERY_TARGETS, query_loss_terms, token_activity_loss, token_loss
from export.model.lvmnet import LVMNet
from export.train.query_batch import build_query_batch
from export.train.streaming import MemoryStack, stream_clips
from export.train.token_targets import event_token_labels
from export.train.joint_stage import compact_memory, token_labels


@dataclass
class StageVideo(MemoryStack):
    """One training video as the heads stage sees it: the frozen sampler's memory after every clip,
    its queries and crops, and which frame tokens show which instance (no frames, no frame tokens)."""
    clip_end: np.ndarray     # (C,) seconds of stream each clip's memory has seen
    instances: torch.Tensor  # (N, P) int32 event-object instance per frame token, -1 none
    activities: torch.Tensor  # (N, P) int32 that event's activity, -1 none
    crop_tokens: dict[int, torch.Tensor]
    queries: list[Query]


@torch.no_grad()
def stage_video(net: LVMNet, data: VideoData) -> StageVideo:
    """Stream an encoded video (tokens and queries attached) through the frozen sampler."""
    cfg = net.cfg
    T, fps = cfg.stream.clip_frames, cfg.stream.fps
    net.eval()
    per = {k: [] for k in ("tokens", "times", "patches", "valid", "basis", "sv")}
    for _, mem, svd in stream_clips(net, data, "neural"):
        basis, sv = svd.padded()
        for k, t in zip(("tokens", "times", "patches", "valid"), mem):
            per[k].append(t[0].to(torch.float16) if k == "tokens" else t[0])
        per["basis"].append(basis.float())
        per["sv"].append(sv.float())
    n_clips = len(per["tokens"])
    inst, act = event_token_labels(data.annotations, data.times[: n_clips * T], cfg.backbone.grid)
    return StageVideo(**{k: torch.stack(v) for k, v in per.items()}, clip_end=(np.arange(n_clips) + 1) * T / fps,
                      instances=torch.from_numpy(inst), activities=torch.from_numpy(act),
                      crop_tokens=data.crop_tokens, queries=data.queries)


_WORKER: dict = {}


def _worker_init(cfg_dict: dict, state: dict, cache: str | None) -> None:
    torch.set_num_threads(1)
    cfg = model_config_from_dict(cfg_dict)
    net = LVMNet(cfg, backbone_init=False)
    net.load_state_dict(state, strict=False)  # backbone + sampler; the heads are not used here
    net.eval()
    _WORKER.update(net=net, cache=None if cache is None else Path(cache),
                   sha=backbone_digest(net.backbone))


@dataclass(frozen=True)
class DatasetVideoSpec:
    """A dataset video for the heads stage: the item (its video, annotation and crop files; small
    and picklable, so workers decode the file themselves), the queries to sample and their seed."""
    item: object             # export.dataset.DatasetItem
    queries: int
    query_seed: int


# (seed, look, seconds, queries) of a generated video, or a dataset video
VideoSpec = tuple[int, int, float, int] | DatasetVideoSpec


def _make_video(net: LVMNet, cache: Path | None, sha: str, spec: VideoSpec) -> StageVideo:
    cfg = net.cfg
    if isinstance(spec, DatasetVideoSpec):
        data = load_dataset_video(spec.item, cfg.backbone.image_size, cfg.stream.fps)
        n_queries, query_seed = spec.queries, spec.query_seed
    else:
        seed, look, video_s, n_queries = spec
        data = render_video(seed, video_s, cfg.backbone.image_size, cfg.stream.fps, look=look)
        query_seed = seed
    encode_video(net.backbone, data, cache=cache, backbone_sha=sha)
    attach_queries(data, n_queries, query_seed)
    return stage_video(net, data)


def _worker_video(spec: VideoSpec) -> StageVideo:
    return _make_video(_WORKER["net"], _WORKER["cache"], _WORKER["sha"], spec)


def stage_videos(net: LVMNet, specs: list[VideoSpec], workers: int = 1,
                 cache: Path | None = None, progress: bool = True) -> list[StageVideo]:
    """Per video a (seed, look, seconds, queries) spec of a generated one or a DatasetVideoSpec ->
    StageVideos, rendered or decoded, encoded and streamed in ``workers`` processes of one thread
    each (the work is many small ops: processes scale, threads do not)."""
    bar = tqdm(total=len(specs), desc="heads stage: videos", disable=not progress, leave=False)
    out: list[StageVideo] = []
    if workers <= 1:
        sha = backbone_digest(net.backbone)
        for spec in specs:
            out.append(_make_video(net, cache, sha, spec))
            bar.update(1)
    else:
        state = {k: v for k, v in net.state_dict().items() if not k.startswith("heads.")}
        args = (net.cfg.to_dict(), state, None if cache is None else str(cache))
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=args) as pool:
            for v in pool.map(_worker_video, specs):
                out.append(v)
                bar.update(1)
    bar.close()
    return out


def _pad(t: torch.Tensor, n: int, value=None) -> torch.Tensor:
    """``t`` with its first dimension grown to ``n``: rows of ``value``, or copies of its last row."""
    if t.shape[0] >= n:
        return t[:n]
    shape = (n - t.shape[0], *t.shape[1:])
    fill = t[-1:].expand(*shape) if value is None else t.new_full(shape, value)
    return torch.cat([t, fill])


def train_heads(net: LVMNet, videos: list[StageVideo], out_dir: Path, *, steps: int, batch: int, lr: float,
                identity_weight: float, token_activity_weight: float = 0.0, seed: int = 0, device: str = "cpu",
                progress: bool = True, say=None) -> dict:
    """Train ``net.heads`` for ``steps`` steps on the frozen sampler's memories of ``videos``;
    returns the last losses. The log goes on in OUT/train_log.jsonl with "stage": "heads"; ``say``
    gets the measured ETA after the first steps."""
    cfg, tc = net.cfg, net.cfg.train
    fps = cfg.stream.fps
    # videos of different lengths (a dataset's) are padded to the longest; a query only ever reads
    # memories of its own video's clips, so the padding is never read
    v_clips = np.array([len(v.clip_end) for v in videos])
    n_clips = int(v_clips.max())
    clip_end = max((v.clip_end for v in videos), key=len)
    mems = {k: torch.stack([_pad(getattr(v, k), n_clips) for v in videos]).to(device)
            for k in ("tokens", "times", "patches", "valid", "basis", "sv")}
    n_frames = max(v.instances.shape[0] for v in videos)
    instances = torch.stack([_pad(v.instances, n_frames, -1) for v in videos]).to(device)
    activities = torch.stack([_pad(v.activities, n_frames, -1) for v in videos]).to(device)
    queries = [q for v in videos for q in v.queries]
    crops = [v.crop_tokens for v in videos for _ in v.queries]
    q_video = [i for i, v in enumerate(videos) for _ in v.queries]
    if not queries:
        raise ValueError("heads stage: the videos have no queries")
    inst_ids = torch.tensor([-2 if q.instance_id is None else q.instance_id for q in queries], device=device)
    q_video_t = torch.tensor(q_video, device=device)
    # the first clip whose memory has seen the whole window (the last clip for a window that ends in
    # the video's last, partial clip, which the stream never writes)
    q_clips = v_clips[q_video]
    first = np.minimum(np.searchsorted(clip_end, np.array([q.end for q in queries]) - 1e-6), q_clips - 1)
    # equal lengths (generated videos): one bound, the random draws of a single-length run
    high = n_clips if (v_clips == n_clips).all() else q_clips

    heads = net.heads.to(device)
    heads.train()
    # dropout's draws seeded here: a run resumed after stage 1 draws the masks the run drew
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=1e-4)
    warm = min(100, max(steps // 10, 1))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
    rng = np.random.default_rng(seed)
    log = open(out_dir / "train_log.jsonl", "a")
    t0, last = time.time(), {}
    bar = tqdm(range(steps), desc="heads stage", disable=not progress, leave=False)
    eta = StepETA("lvm-train: heads stage", steps, say)
    for step in bar:
        eta.step()
        idx = rng.choice(len(queries), size=min(batch, len(queries)), replace=False)
        clip = rng.integers(first[idx], high if np.isscalar(high) else high[idx])
        idx_t, clip_t = torch.from_numpy(idx).to(device), torch.from_numpy(clip).to(device)
        vid = q_video_t[idx_t]
        # built per step: all queries' crop tokens at once would take Q x P x d floats (GBs)
        qb = build_query_batch([queries[i] for i in idx], [crops[i] for i in idx], cfg)
        q_in = {k: t.to(device) for k, t in qb.inputs.items()}
        mem = [mems["tokens"][vid, clip_t].float(), mems["times"][vid, clip_t], mems["patches"][vid, clip_t],
               mems["valid"][vid, clip_t]]
        per_q = compact_memory(mem, q_in["q_window"], heads.window_tol)
        out, aux = heads(*per_q, mems["basis"][vid, clip_t], mems["sv"][vid, clip_t], **q_in, return_aux=True)
        tg = {k: getattr(qb, k).to(device) for k in QUERY_TARGETS}
        terms = query_loss_terms(out, tg, tc)
        if token_activity_weight > 0:
            act = token_labels(activities, vid, per_q[1], per_q[2], fps)
            terms["token_activity"] = token_activity_weight * token_activity_loss(aux["token_activity"], act,
                                                                                  aux["keep"])
        if identity_weight > 0:
            has_obj = heads.given[q_in["q_type"], 1] > 0
            if has_obj.any():
                inst = token_labels(instances, vid[has_obj], per_q[1][has_obj], per_q[2][has_obj], fps)
                target = (inst == inst_ids[idx_t][has_obj][:, None]).to(torch.float32)
                terms["identity"] = identity_weight * token_loss(aux["identity"][has_obj], target,
                                                                 aux["keep"][has_obj])
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 9 or step == steps - 1:
            last = {k: round(float(v.detach()), 4) for k, v in terms.items()} | {"loss": round(float(loss.detach()), 4)}
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            log.write(json.dumps({"stage": "heads", "step": step + 1, **last,
                                  "lr": round(sched.get_last_lr()[0], 7), "time_s": round(time.time() - t0, 1)}) + "\n")
            log.flush()
    log.close()
    net.heads.to("cpu")
    return last
