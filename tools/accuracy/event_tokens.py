"""TinyMem's captioner-free event tokens, built from this model's own predictions, measured against
the timeline's region tokens they are made from.

    python -m tools.accuracy.event_tokens --eval-seed 0 --videos 8 --json docs/lab/accuracy/event_tokens.json

An event token (TinyMem §3, without a captioner): for each frame at the model's fps, the frame's top-K
(activity, product class) pairs, each scored p(event) x p(activity) x p(class) on the best of the
frame's timeline tokens, with that token's time, box and event span. p(class) is the answer step's
own identity match (``id_scale``, ``id_bias``) of the token's identity embedding against the bundle's
product classes as drawn (``class_pictures``). So an event token is a function of the region tokens
the shipped timeline keeps: this measures what the compact form gives up.

Each held-out video (``engine_videos``: the queries ``lvm-eval`` asks, present ones) is streamed once
through the bundle (an Engine); the shipped answers and the event tokens' answers to the same
queries are scored side by side (R@1x):

- time (activity + product): the runs of event tokens of the asked activity and the product's likeliest
  class (its picture's best match), within ``GAP_S`` of each other, ranked by summed score; an
  interval spans its tokens' predicted event spans;
- activity (product): per activity, the best event token of the product's class in the window;
- object (activity): the best run's boxes, interpolated at the object rate.

Descriptions through a text encoder instead of label ids (``--text``, time queries): each pair is
written "<activity> <product>" from the bundle's label names and encoded by WordLlama (the runtime's
``ask`` encoder); a token weighs cos(query description, token description) ** gamma. Short
descriptions that share a product are close whatever the activity ("pick up cereal box" vs "scan
cereal box"), so the weights blur activities; as gamma grows the match tends to the label ids'.

"What happened" from event tokens: per frame the top pair, runs of one pair (gaps up to ``GAP_S``)
are events, kept when their summed score reaches ``EVENT_SUM``; scored as
``tools.accuracy.happened_eval`` scores ``what_happened`` (5-minute windows, same activity and
product, tIoU > 0.3), beside the shipped ``what_happened`` on the same videos.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

from tools.repo_paths import REPO

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PER_FRAME = 3          # event tokens per frame (top-K pairs)
GAP_S = 4.0            # tokens of one pair this close in time are one event
# what happened from event tokens: chosen on 4 videos of seed 1 (heldout_video(1, 0..3)), the best
# event F1 over token floors 0.3-0.7, gaps 4-12 s, summed-score floors 0-3: 0.754 (P 84.6, R 68.0)
EVENT_MIN = 0.4        # least per-frame score of a token taken into an event
EVENT_SUM = 1.0        # least summed score of an event
GAMMAS = (1, 4, 16, 64)
Ev = namedtuple("Ev", "activity product start end confidence")


def event_tokens(t, p_class, p_act, p_event, k: int = PER_FRAME) -> np.ndarray:
    """Timeline tokens (n,) at times ``t`` with p(class) (n, C), p(activity) (n, A), p(event) (n,) ->
    event tokens (frames x k, 5): [time, activity, class, score, index of the token it came from]."""
    score = p_event[:, None, None] * p_act[:, :, None] * p_class[:, None, :]  # (n, A, C)
    n_classes = score.shape[2]
    rows = []
    for ft in np.unique(t):
        idx = np.flatnonzero(t == ft)
        s = score[idx].reshape(len(idx), -1)
        best, tok = s.max(0), idx[s.argmax(0)]
        for j in np.argsort(-best, kind="stable")[:k]:
            a, c = divmod(int(j), n_classes)
            rows.append((ft, a, c, best[j], tok[j]))
    return np.asarray(rows, np.float64).reshape(-1, 5)


def runs(ev: np.ndarray, w: np.ndarray, span: np.ndarray, gap: float = GAP_S) -> list[tuple]:
    """Event tokens of weight ``w`` > 0 grouped in time (gaps up to ``gap``) -> [(start, end, summed
    weight, the group's rows of ``ev``)], start / end from the tokens' predicted event spans."""
    keep = w > 1e-6
    order = np.argsort(ev[:, 0], kind="stable")
    order = order[keep[order]]
    out, cur = [], []
    for i in list(order) + [None]:
        if i is not None and (not cur or ev[i, 0] - ev[cur[-1], 0] <= gap):
            cur.append(i)
            continue
        if cur:
            tok = ev[cur, 4].astype(int)
            out.append(((ev[cur, 0] - span[tok, 0]).min(), (ev[cur, 0] + span[tok, 1]).max(), float(w[cur].sum()),
                        ev[cur]))
        cur = [i] if i is not None else []
    return sorted(out, key=lambda r: -r[2])


def answer(q, ev, facts, q_class: int, n_act: int, object_fps: float, weight=None) -> dict:
    """One query answered from event tokens (label ids; ``weight`` overrides the time query's match)."""
    inw = (ev[:, 0] >= q.start - 0.5) & (ev[:, 0] <= q.end + 0.5)
    if q.type == "activity":
        sc = np.zeros(n_act)
        for a in range(n_act):
            sel = inw & (ev[:, 1] == a) & (ev[:, 2] == q_class)
            sc[a] = ev[sel, 3].max() if sel.any() else 0.0
        return {"scores": sc.tolist()}
    w = ev[:, 3] * (ev[:, 1] == q.activity_id) * inw
    if q.type == "time":
        w = w * (ev[:, 2] == q_class) if weight is None else ev[:, 3] * weight * inw
        got = runs(ev, w, facts["span"])[:3]
        return {"intervals": [[max(q.start, s), min(q.end, e), p] for s, e, p, _ in got] or [[q.start, q.end, 0.0]]}
    tracks = []
    for s, e, _, rows in runs(ev, w, facts["span"])[:3]:
        at = np.arange(np.ceil(max(s, q.start) * object_fps), np.floor(min(e, q.end) * object_fps) + 1) / object_fps
        at = at if len(at) else rows[:1, 0]
        boxes = facts["boxes"][rows[:, 4].astype(int)]
        tracks.append({"times": at.tolist(),
                       "boxes": np.stack([np.interp(at, rows[:, 0], boxes[:, j]) for j in range(4)], 1).tolist()})
    return {"tracks": tracks} if tracks else {"times": [], "boxes": []}


def happened_events(ev1: np.ndarray, facts, labels, classes) -> list[Ev]:
    """Events from the per-frame top pair (``ev1``: event tokens with k = 1)."""
    out = []
    for a in np.unique(ev1[:, 1]).astype(int):
        for c in np.unique(ev1[:, 2]).astype(int):
            w = ev1[:, 3] * (ev1[:, 1] == a) * (ev1[:, 2] == c) * (ev1[:, 3] >= EVENT_MIN)
            for s, e, total, _ in runs(ev1, w, facts["span"]):
                if total >= EVENT_SUM:
                    out.append(Ev(labels[a], classes[c], float(s), float(e), total))
    return out


def cells(records) -> dict:
    """R@1x (%) per query type and window."""
    out = {}
    for ty in ("activity", "object", "time"):
        row = {}
        for w in ("short", "medium", "long"):
            v = [r["recall@1x"] for r in records if r["type"] == ty and r["window"] == w and r["recall@1x"] is not None]
            row[w] = round(100 * float(np.mean(v)), 1) if v else None
        out[ty] = row
    return out


def window_counts(events, ann: dict, window_s: float = 300.0) -> np.ndarray:
    """[predicted, right, truth] of ``events(start, end)`` over the video's 5-minute windows."""
    from tools.accuracy.happened_eval import matched, truth

    out = np.zeros(3, np.int64)
    for s in np.arange(0.0, ann["duration_s"] - window_s + 1e-6, window_s):
        got = events(float(s), float(s + window_s))
        gt = truth(ann, float(s), float(s + window_s))
        out += (len(got), len(matched(got, gt)), len(gt))
    return out


def pr(counts: np.ndarray) -> dict:
    n_pred, right, n_gt = (int(x) for x in counts)
    p, r = right / max(n_pred, 1), right / max(n_gt, 1)
    return {"precision": round(100 * p, 1), "recall": round(100 * r, 1),
            "f1": round(2 * p * r / max(p + r, 1e-9), 3), "predicted": n_pred, "truth": n_gt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.event_tokens", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "engines" / "lvm-tiny-fp32"))
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "lvm-tiny.safetensors"))
    ap.add_argument("--reader", default=str(REPO / "checkpoints" / "lvm-tiny-reader.safetensors"))
    ap.add_argument("--eval-seed", type=int, default=0)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--queries", type=int, default=300, help="present queries per video")
    ap.add_argument("--per-frame", type=int, default=PER_FRAME, help="event tokens per frame")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.videos < 1 or args.per_frame < 1:
        ap.exit(2, f"{ap.prog}: --videos and --per-frame must be at least 1\n")

    import torch

    from edge_runtime.checkout.metrics import score_query
    from edge_runtime.checkout.queries import engine_request
    from edge_runtime.engine.engine import Engine
    from edge_runtime.query.ask.names import EncoderUnavailable, encoder
    from edge_runtime.query.class_pictures import class_pictures
    from edge_runtime.query.happened import what_happened
    from edge_runtime.query.slots import sigmoid
    from edge_runtime.query.types import BY_NAME
    from export.evaluate.scoring import engine_videos
    from export.model.checkpoint import load_checkpoint
    from export.model.reader import load_reader

    torch.set_num_threads(args.threads)
    try:
        net, _ = load_checkpoint(args.checkpoint)
        reader, step, _ = load_reader(args.reader, net.cfg)
    except (OSError, ValueError) as err:
        ap.exit(2, f"{ap.prog}: {err}\n")
    cfg = net.cfg
    scale, bias = float(step.id_scale.detach()), float(step.id_bias.detach())
    shipped_recs, event_recs = [], []
    text_recs: dict[int, list] = {g: [] for g in GAMMAS}
    cascade, from_tokens = np.zeros(3, np.int64), np.zeros(3, np.int64)
    t0 = time.perf_counter()
    with Engine(args.bundle, threads=args.threads) as eng, torch.no_grad():
        if eng.timeline is None:
            ap.exit(2, f"{ap.prog}: {args.bundle} has no timeline track to build event tokens from\n")
        labels = list(eng.labels)
        pictures = class_pictures(list(eng.products), eng.frame_size)
        classes = list(pictures)

        def embed(images):
            return reader.embed_crop(torch.from_numpy(eng.encode_images(images))).numpy()

        protos = [embed(pictures[c]) for c in classes]  # (pictures, E) per class

        def p_class(ident):  # (n, E) -> (n, C): the best picture of each class
            return np.stack([sigmoid(scale * ident @ p.T + bias).max(1) for p in protos], 1)

        try:
            enc = encoder()
            desc = [f"{labels[a].replace('_', ' ')} {classes[c].replace('_', ' ')}"
                    for a in range(len(labels)) for c in range(len(classes))]
            emb = np.asarray(enc.embed(desc, norm=True), np.float64)
            sim = emb @ emb.T
        except EncoderUnavailable as err:
            print(f"no text encoder ({err}): label ids only", flush=True)
            sim = None
        m = cfg.stream.memory_tokens
        size = cfg.backbone.image_size
        for i, v in enumerate(engine_videos(cfg, args.queries, seed=args.eval_seed, videos=args.videos)):
            stream = eng.new_stream()
            eng.ingest(stream, v.frames, v.times)
            eng.flush(stream)
            snap = stream.committed
            keep = np.asarray(snap.fact_valid[m:]) > 0
            facts = {k: np.asarray(x)[m:][keep] for k, x in snap.facts.items()}
            t = np.asarray(snap.fact_t[m:])[keep]
            pc = p_class(facts["ident"])
            ev = event_tokens(t, pc, sigmoid(facts["act_logits"]), sigmoid(facts["event_logit"].reshape(-1)),
                              args.per_frame)
            crops = {q.instance_id: v.crop(q.instance_id, size) for q in v.queries if q.instance_id is not None}
            q_class = {iid: int(np.argmax(p_class(embed([c]))[0])) for iid, c in crops.items()}
            reqs = [engine_request(q, crops.get(q.instance_id) if BY_NAME[q.type].takes_object else None)
                    for q in v.queries]
            for q, a in zip(v.queries, eng.answer(stream, reqs)):
                shipped_recs.append(score_query(q, a))
                c = q_class.get(q.instance_id, -1)
                event_recs.append(score_query(q, answer(q, ev, facts, c, len(labels), cfg.stream.object_fps)))
                if sim is not None and q.type == "time":
                    pair = (ev[:, 1] * len(classes) + ev[:, 2]).astype(int)
                    s = np.maximum(sim[q.activity_id * len(classes) + c, pair], 0.0)
                    for g in GAMMAS:
                        text_recs[g].append(score_query(q, answer(q, ev, facts, c, len(labels), 0.0, weight=s ** g)))
            tok_events = happened_events(event_tokens(t, pc, sigmoid(facts["act_logits"]),
                                                      sigmoid(facts["event_logit"].reshape(-1)), 1), facts, labels, classes)
            cascade += window_counts(lambda s, e: what_happened((eng, stream), None, (s, e)), v.annotations)
            from_tokens += window_counts(lambda s, e: [Ev(x.activity, x.product, max(x.start, s), min(x.end, e), x.confidence)
                                                       for x in tok_events if x.end > s and x.start < e], v.annotations)
            print(f"video {i + 1}/{args.videos} ({time.perf_counter() - t0:.0f} s)", flush=True)
    result = {
        "tool": "tools/accuracy/event_tokens.py", "bundle": Path(args.bundle).name,
        "videos": f"engine_videos(seed {args.eval_seed}, 0..{args.videos - 1}), {args.queries} present queries each",
        "per_frame": args.per_frame, "gap_s": GAP_S,
        "r_at_1x": {"shipped (memory + region tokens)": cells(shipped_recs), "event tokens, label ids": cells(event_recs)},
        "time_text_encoder": {f"gamma {g}": cells(text_recs[g])["time"] for g in GAMMAS if text_recs[g]},
        "what_happened": {"shipped what_happened": pr(cascade),
                          f"event tokens (token >= {EVENT_MIN}, event sum >= {EVENT_SUM})": pr(from_tokens)},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
