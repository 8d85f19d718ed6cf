"""Evaluation with the ReST metrics (Recall@1x / @3x per query type) on held-out generator videos or
a dataset split's video files.

One scoring path for every model source: the PyTorch model (neural / random / oracle memories) and
a bundle run by the device runtime (``evaluate_engine``, used by lvm-export's accuracy gate) both
produce answers through ``edge_runtime.query.answers`` and are scored by ``edge_runtime.checkout.metrics``.

Samplers:
- neural: the trained sampler, one pass over the stream;
- random: uniformly random memory tokens (LVM-Net A.3.1) — i.i.d. random keys, keep the top m,
  which is a uniform random m-subset of everything seen, in one pass;
- oracle: query-aware — per query, the memory is rebuilt from the asked window alone (m tokens:
  m / P frames spread evenly over the window's frames), what per-query re-processing would see.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.query.answers import HeadBatch, decode_answers
from edge_runtime.query.types import BY_NAME
from edge_runtime.checkout import Query, heldout_video
from edge_runtime.checkout.queries import engine_request
from edge_runtime.checkout.metrics import aggregate, score_query
from edge_runtime.checkout.seen_metrics import seen_report
from export.dataset.video_data import VideoData, attach_queries, backbone_digest, encode_video, load_dataset_video, render_video
from export.model.lvmnet import LVMNet
from export.train.query_batch import build_query_batch
from export.train.streaming import stream_memory
from export.model.svd_torch import TorchOnlineSVD

SAMPLERS = ("neural", "random", "oracle")
HEAD_OUTPUTS = ("activity_logits", "boxes", "start_logits", "end_logits")


def dataset_video(item, cfg, queries: int, seed: int, i: int, progress: bool = False,
                  absent_share: float = 0.0) -> VideoData:
    """Video ``i`` of an evaluation on a dataset split: the file decoded at the model's size and fps,
    frames kept, with ``queries`` sampled from its annotations -- seeded like the generator's
    video ``i``, so lvm-eval and the accuracy gate ask the same questions of the same split
    (``absent_share``: absent queries added, the present ones unchanged)."""
    v = load_dataset_video(item, cfg.backbone.image_size, cfg.stream.fps, progress=progress)
    return attach_queries(v, queries, heldout_video(seed, i)[0], absent_share)


def engine_videos(cfg, queries: int, seed: int = 0, *, items: list | None = None, videos: int = 4,
                  video_s: float = 1800.0, absent_share: float = 0.0, progress: bool = False) -> list[VideoData]:
    """The videos ``evaluation_videos`` gives (same seeds, looks and present queries), with their
    frames and no tokens, for a runtime Engine to encode itself; ``absent_share``: absent queries added."""
    out = []
    for i in range(len(items) if items is not None else videos):
        if items is not None:
            out.append(dataset_video(items[i], cfg, queries, seed, i, progress=progress, absent_share=absent_share))
        else:
            s, look = heldout_video(seed, i)
            v = render_video(s, video_s, cfg.backbone.image_size, cfg.stream.fps, look=look, progress=progress)
            out.append(attach_queries(v, queries, s, absent_share))
    return out


def evaluation_videos(net: LVMNet, queries: int, seed: int = 0, *, items: list | None = None, videos: int = 4,
                      video_s: float = 1800.0, cache=None, progress: bool = False) -> list[VideoData]:
    """The videos an evaluation scores, with tokens from ``net``'s backbone (``cache``: token cache
    dir) and ``queries`` queries each. ``items`` (a dataset split's DatasetItems): those files;
    otherwise ``videos`` held-out generator videos of ``video_s`` seconds (``heldout_video``: new
    seeds, even i in the looks training never saw, odd i in training looks)."""
    cfg = net.cfg
    sha = backbone_digest(net.backbone) if cache is not None else None
    out = []
    for i in range(len(items) if items is not None else videos):
        if items is not None:
            v = dataset_video(items[i], cfg, queries, seed, i, progress=progress)
        else:
            s, look = heldout_video(seed, i)
            v = attach_queries(render_video(s, video_s, cfg.backbone.image_size, cfg.stream.fps, look=look,
                                            progress=progress), queries, s)
        out.append(encode_video(net.backbone, v, cache=cache, backbone_sha=sha))
    return out


def oracle_memory(net: LVMNet, data: VideoData, q: Query):
    """m tokens from the asked window alone: m / P frames evenly over the window's frames."""
    cfg = net.cfg
    P, m = cfg.backbone.tokens_per_frame, cfg.stream.memory_tokens
    inside = np.flatnonzero((data.times >= q.start) & (data.times <= q.end))
    n_frames = m // P
    pick = inside[np.linspace(0, len(inside) - 1, n_frames).round().astype(int)] if len(inside) else np.zeros(0, int)
    mem = net.empty_memory(1)
    if len(pick):
        tok = data.tokens[pick].float().reshape(1, -1, cfg.backbone.dim)
        ct, cp = net.clip_coords(torch.from_numpy(data.times[pick]).float()[None])
        n = tok.shape[1]
        mem[0][:, :n], mem[1][:, :n], mem[2][:, :n], mem[3][:, :n] = tok, ct, cp, 1.0
    return mem


def run_heads(net, mems, svd: TorchOnlineSVD, qb, svd_tokens: bool = True) -> dict[str, np.ndarray]:
    """The heads' outputs (numpy, by name) for the query batch ``qb`` on the memories ``mems``."""
    basis, sv = svd.padded()
    if not svd_tokens:  # the MeMSVD ablation: the heads see an all-zero summary
        basis, sv = torch.zeros_like(basis), torch.zeros_like(sv)
    out = net.heads(*mems, basis[None], sv[None], **qb.inputs)
    return {k: v.numpy() for k, v in zip(HEAD_OUTPUTS, out)}


def head_batch(qb) -> HeadBatch:
    """The query batch ``qb``'s inputs as the runtime's HeadBatch (what decode_answers reads)."""
    return HeadBatch(**{k: v.numpy() for k, v in qb.inputs.items()})


@torch.no_grad()
def answer_video(net: LVMNet, data: VideoData, sampler: str = "neural", seed: int = 0, *, object_extent: bool = True,
                 chunk: int = 64, svd_tokens: bool = True) -> list[dict]:
    net.eval()
    cfg = net.cfg
    mem, svd = stream_memory(net, data, "random" if sampler == "random" else "neural", seed)
    answers: list[dict] = []
    for i in range(0, len(data.queries), chunk):
        qs = data.queries[i : i + chunk]
        qb = build_query_batch(qs, [data.crop_tokens] * len(qs), cfg)
        if sampler == "oracle":
            per = [oracle_memory(net, data, q) for q in qs]
            mems = tuple(torch.cat([p[j] for p in per]) for j in range(4))
        else:
            mems = mem
        out = run_heads(net, mems, svd, qb, svd_tokens)
        answers.extend(decode_answers(head_batch(qb), out, object_fps=cfg.stream.object_fps,
                                      object_extent=object_extent))
    return answers


def score(queries: list[Query], answers: list[dict]) -> dict:
    return aggregate([score_query(q, a) for q, a in zip(queries, answers)])


def evaluate_model(net: LVMNet, videos: list[VideoData], sampler: str = "neural", seed: int = 0,
                   progress: bool = True, object_extent: bool = True, svd_tokens: bool = True) -> dict:
    """``svd_tokens=False``: the heads read an all-zero online-SVD summary (what MeMSVD adds, measured)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    queries, answers = [], []
    for v in tqdm(videos, desc=f"eval ({sampler})", disable=not progress, leave=False):
        answers.extend(answer_video(net, v, sampler, seed, object_extent=object_extent, svd_tokens=svd_tokens))
        queries.extend(v.queries)
    res = score(queries, answers)
    res["memory_tokens"] = net.cfg.stream.memory_tokens
    res["queries"] = len(queries)
    res["sampler"] = sampler
    return res


def engine_answers(engine, video: VideoData) -> list[dict]:
    """A runtime Engine's answers to ``video``'s queries, after streaming the video's frames through it
    from a fresh memory (object crops encoded by the engine itself, as on the device)."""
    stream = engine.new_stream()
    engine.ingest(stream, video.frames, video.times)
    size = engine.cfg.backbone.image_size
    return engine.answer(stream, [engine_request(q, video.crop(q.instance_id, size)
                                         if BY_NAME[q.type].takes_object and q.instance_id is not None else None)
                          for q in video.queries])


def evaluate_engine(engine_factory: Callable[[], object], videos: list[VideoData], progress: bool = True,
                    per_query: bool = False) -> dict:
    """Score a device-runtime Engine (ONNX / TensorRT bundle) on the same videos and queries.

    ``videos`` must carry frames (not encoded with torch) and queries; the engine encodes frames
    and object crops itself, exactly as on the device. Beside the recalls: ``not_seen``, per query
    type how absent and present queries were answered and how calibrated the answers' confidence is
    (edge_runtime/checkout/seen_metrics.py), and ``answered_by``, how many answers each kind gave.
    ``per_query``: also every query's own Recall@1x (``query_records``), for a paired comparison of
    two bundles on the same queries (the accuracy gate)."""
    queries, answers = [], []
    engine = engine_factory()
    for v in tqdm(videos, desc="eval (engine)", disable=not progress, leave=False):
        answers.extend(engine_answers(engine, v))
        queries.extend(v.queries)
    res = score(queries, answers)
    res["memory_tokens"] = engine.cfg.stream.memory_tokens
    res["queries"] = len(queries)
    res["not_seen"] = seen_report(queries, answers)
    by: dict[str, int] = {}
    for a in answers:
        k = str(a.get("answered_by", "unknown"))
        by[k] = by.get(k, 0) + 1
    res["answered_by"] = by
    if per_query:
        res["per_query"] = query_records(queries, answers)
    return res


def query_records(queries: list[Query], answers: list[dict]) -> list[dict]:
    """Per query: its id, type, window, Recall@1x and its subject -- the video and the instance or
    activity it asks about: queries on one subject share an answer (an activity query's classes are
    those of its instance, whatever the window), so they change together."""
    out = []
    for q, a in zip(queries, answers):
        r = score_query(q, a, ks=(1,))
        out.append({"qid": r["qid"], "type": r["type"], "window": r["window"], "recall@1x": r["recall@1x"],
                    "subject": f"{q.video_id}/{q.instance_id}/{q.activity_id}"})
    return out
