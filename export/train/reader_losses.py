"""The reader stage's losses (export/train/reader_stage.py): every fact of a batch of memories against
its targets from the annotations, identity against the batch's crops, and activity queries through
the answer step."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from export.model.reader import AnswerStep, MemoryReader
from export.train.losses import balanced_mean, giou
from export.train.reader_videos import ReaderVideo


def contrastive_identity(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the candidate crops plus "none" (logit 0) per token, every crop of the
    token's class a positive (-log of their summed softmax): the binary match of the answer step is
    this softmax restricted to one crop and "none", so ranking the crops against each other is what
    keeps false matches rare under the answer step's max-pooling over ~400 tokens."""
    full = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
    has = target.sum(1) > 0
    pos = torch.cat([target > 0, (~has)[:, None]], dim=1)
    ce = torch.logsumexp(full, dim=1) - torch.logsumexp(full.masked_fill(~pos, float("-inf")), dim=1)
    # tokens of no instance far outnumber the others: both halves weigh the same
    return ce[has].mean() + ce[~has].mean() if has.any() and (~has).any() else ce.mean()


def identity_loss(answer: AnswerStep, ident: torch.Tensor, cls: torch.Tensor, emb: torch.Tensor,
                  crop_cls: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """ident (n, E) token identities of classes ``cls`` (n,) (-1 none) against every crop of the batch
    ``emb`` (K, E) of classes ``crop_cls`` (K,): the crops of other videos are the hard negatives
    (other products) and more positives (the same product in another scene)."""
    ident, cls = ident[keep], cls[keep]
    lg = answer.match_logits(ident, emb).T  # (n, K)
    tg = (cls[:, None] == crop_cls[None, :]).float()
    return (balanced_mean(F.binary_cross_entropy_with_logits(lg, tg, reduction="none"), tg, torch.ones_like(tg))
            + contrastive_identity(lg, tg))


def activity_weights(videos: list[ReaderVideo], C: int, balance: float) -> torch.Tensor | None:
    """(C,) weight of an event token of each activity in the activity loss: share ** -balance, the shares
    counted over the training memories' event tokens, normalised so an event token weighs 1 on average
    (None for balance 0: every event token alike). Rare activities (put back, hand over) otherwise
    weigh a few per cent of the loss and are almost never named on new videos."""
    if balance <= 0:
        return None
    counts = torch.zeros(C)
    for v in videos:
        a = v.act[(v.act >= 0) & (v.valid > 0)]
        counts += torch.bincount(a, minlength=C)[:C].float()
    share = counts / counts.sum().clamp_min(1.0)
    w = torch.where(counts > 0, share.clamp_min(1e-6) ** -balance, torch.zeros(C))
    return w / (w * share).sum().clamp_min(1e-12)


def loss_queries(video: ReaderVideo, s: int) -> list:
    """The activity queries memory ``s`` of ``video`` is asked in the query loss: those it answers at
    runtime (absent ones included, their targets all zeros). The video's last memory answers every
    window, so 30-minute windows are trained on too (asking only windows a memory had seen whole left
    them out: activity on 30-minute windows 75.7 -> 78.4 on held-out seed 0 with them in)."""
    return [q for q in video.answerable(s) if q.type == "activity"]


def facts_loss(reader: MemoryReader, answer: AnswerStep, videos: list[ReaderVideo], pick: list[tuple[int, int]],
               rng: np.random.Generator, query_weight: float, queries_per_memory: int = 8, frame_tokens: int = 256,
               act_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Losses of one batch of memories ``pick`` = [(video, snapshot)]; ``act_weight`` (C,): an event
    token's weight in the activity loss by its activity (``activity_weights``)."""
    g = lambda k: torch.stack([getattr(videos[v], k)[s] for v, s in pick])
    mem = (g("tokens").float(), g("times"), g("patches"), g("valid"), g("basis"), g("sv"))
    ident, act_l, ev_l, boxes, span = reader(*mem)
    valid = mem[3]
    inst, act, box_t, span_t = g("inst"), g("act"), g("box"), g("span")
    terms = {}
    # identity: every memory token against every crop of the batch (same product class = positive)
    crops = torch.cat([videos[v].crop_tokens for v, _ in pick])
    crop_cls = torch.cat([videos[v].crop_cls for v, _ in pick])
    starts = np.cumsum([0] + [len(videos[v].crop_ids) for v, _ in pick])
    emb_all = reader.embed_crop(crops)
    emb = [emb_all[starts[b]: starts[b + 1]] for b in range(len(pick))]
    terms["identity"] = sum(identity_loss(answer, ident[b], inst[b], emb_all, crop_cls, valid[b] > 0)
                            for b in range(len(pick))) / len(pick)
    fl = []
    for b, (v, _) in enumerate(pick):
        vid = videos[v]
        j = torch.from_numpy(rng.choice(len(vid.frame_inst), frame_tokens, replace=False))
        fe = reader.token_ident(vid.frame_tokens[j].float())
        fl.append(identity_loss(answer, fe, vid.frame_inst[j], emb_all, crop_cls, torch.ones(len(j), dtype=torch.bool)))
    terms["identity_frames"] = sum(fl) / len(fl)
    is_ev = (act >= 0).float()
    onehot = F.one_hot(act.clamp_min(0), act_l.shape[-1]).float() * is_ev[..., None]
    bce = F.binary_cross_entropy_with_logits(act_l, onehot, reduction="none").sum(-1)
    w_act = valid if act_weight is None else valid * torch.where(act >= 0, act_weight[act.clamp_min(0)], 1.0)
    terms["activity"] = balanced_mean(bce, is_ev, w_act)
    terms["event"] = balanced_mean(F.binary_cross_entropy_with_logits(ev_l, is_ev, reduction="none"), is_ev, valid)
    has = (inst >= 0).float() * valid
    n = has.sum().clamp_min(1.0)
    terms["box"] = (((boxes - box_t).abs().sum(-1) * 5.0 + (1.0 - giou(boxes, box_t)) * 2.0) * has).sum() / n
    ne = (is_ev * valid).sum().clamp_min(1.0)
    terms["span"] = ((((span - span_t).abs() / reader.rc.span_scale_s).sum(-1)) * is_ev * valid).sum() / ne
    if query_weight > 0:
        ql, nq = 0.0, 0
        for b, (v, s) in enumerate(pick):
            vid = videos[v]
            if s >= len(vid.snap_end):  # a timeline row: no memory to ask
                continue
            qs = loss_queries(vid, s)
            if not qs:
                continue
            qs = [qs[i] for i in rng.choice(len(qs), min(queries_per_memory, len(qs)), replace=False)]
            pos = {int(i): j for j, i in enumerate(vid.crop_ids.tolist())}
            q_emb = emb[b][[pos[q.instance_id] for q in qs]]
            tgt = torch.zeros(len(qs), act_l.shape[-1])
            for j, q in enumerate(qs):
                tgt[j, list(q.gt_activities)] = 1.0
            sc, _, _, _ = answer(ident[b], act_l[b], ev_l[b], boxes[b], span[b], mem[1][b], valid[b],
                                 torch.zeros(len(qs), dtype=torch.int64), torch.zeros(len(qs), dtype=torch.int64),
                                 q_emb, torch.tensor([[q.start, q.end] for q in qs], dtype=torch.float32))
            ql = ql + F.binary_cross_entropy(sc.clamp(1e-4, 1 - 1e-4), tgt, reduction="sum") / act_l.shape[-1]
            nq += len(qs)
        if nq:
            terms["query"] = query_weight * ql / nq * 4.0
    return terms
