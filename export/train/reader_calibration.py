"""The memory reader's answers on whole memories, and their calibration (used by the reader stage after
training, and by tools/accuracy/reader_eval.py): the weight of the class prior in activity answers,
per query window length, then per query type isotonic fits of p(seen) (present vs absent queries) on the answer
step's raw evidence (object and time answers: on a line per asked activity, ``fit_seen_model``), the p(seen)
below which an answer says "not seen" (``NOT_SEEN_PRESENT_SHARE``), p(right) of the evidence (activity) or
of the best answer's support (object, time; what events of what happened read), and p(right) of a logistic
score (``fit_right_model``: the answers' confidence) of the ranked answers' supports and length (object,
time) or of the evidence, the top two activity scores and the window's length (activity).
"""
from __future__ import annotations

import time
import numpy as np
import torch

from edge_runtime.checkout import Query
from edge_runtime.checkout.queries import WINDOWS
from edge_runtime.checkout.absent_queries import is_absent
from edge_runtime.checkout.metrics import score_query
from edge_runtime.memory.timeline import FACT_NAMES
from edge_runtime.backends.calibration_format import FEATURES_OF
from edge_runtime.query.reader_answers import (activity_features, evidence_logit, fit_calibration, model_score,
                                               p_seen, reader_answers, right_features, seen_score)
from edge_runtime.query.types import BY_NAME
from export.model.reader import AnswerStep, MemoryReader

TYPE_IDS = {name: row.id for name, row in BY_NAME.items()}  # the heads' type ids
PRIOR_WEIGHTS = (0.0, 1e-4, 0.01, 0.03, 0.1, 0.3, 1.0)
# Each query type says "not seen" below the p(seen) under which this share of the calibration videos'
# present answers fall: half the 10 % of present answers the product may wrongly call "not seen", the
# other half left for footage unlike the calibration videos (on held-out looks the share came out 1.0-1.8x
# the calibration's). A fixed p(seen) < 0.5 called 3 % of present answers "not seen" and caught only 30-38 %
# of absent object and time queries: their evidence overlaps more, so the cut has to sit higher there.
NOT_SEEN_PRESENT_SHARE = 0.05


@torch.no_grad()
def run_answer_step(reader: MemoryReader, answer: AnswerStep, mem, basis, sv, queries: list[Query],
                    crop_tokens: dict[int, torch.Tensor] | torch.Tensor, crop_ids=None, cfg=None, prior=None,
                    prior_weight: float = 1e-4, timeline: dict | None = None, prior_weight_by_window=None):
    """Facts of one memory (and ``timeline``'s tokens beside them: fact name -> (n, ...) and "t"),
    then every query -> (answer dicts, evidence (Q,), intervals (Q, K, 3), facts seconds, answer seconds)."""
    t0 = time.perf_counter()
    facts = [x[0] for x in reader(*mem, basis, sv)]
    mem_t, mem_valid = mem[1][0], mem[3][0]
    if timeline is not None:
        facts = [torch.cat([f, timeline[n]]) for f, n in zip(facts, FACT_NAMES)]
        mem_t = torch.cat([mem_t, timeline["t"]])
        mem_valid = torch.cat([mem_valid, torch.ones(len(timeline["t"]))])
    t1 = time.perf_counter()
    if isinstance(crop_tokens, dict):
        lookup = crop_tokens
    else:
        lookup = {int(i): crop_tokens[j] for j, i in enumerate(crop_ids.tolist())}
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    objs = torch.stack([lookup[q.instance_id].float() if q.instance_id is not None and q.type != "object"
                        else torch.zeros(P, d) for q in queries])
    q_emb = reader.embed_crop(objs)
    q_type = torch.tensor([TYPE_IDS[q.type] for q in queries])
    q_act = torch.tensor([q.activity_id if q.activity_id is not None and q.type != "activity" else 0 for q in queries])
    win = torch.tensor([[q.start, q.end] for q in queries], dtype=torch.float32)
    sc, iv, kb, ev = answer(*facts, mem_t, mem_valid, q_type, q_act, q_emb, win)
    t2 = time.perf_counter()
    ans = reader_answers([q.type for q in queries], win.numpy(), sc.numpy(), iv.numpy(), kb.numpy(),
                         object_fps=cfg.stream.object_fps, prior=prior, prior_weight=prior_weight,
                         prior_weight_by_window=prior_weight_by_window)
    return ans, ev.numpy(), iv.numpy(), t1 - t0, t2 - t1


def is_hit(q: Query, a: dict) -> bool:
    if is_absent(q):
        return False
    r = score_query(q, a).get("recall@1x")
    return r is not None and r >= 1.0 - 1e-9


def calibrate(reader, answer, videos: list, cfg, prior, timeline=None) -> dict:
    """On three memories of each calibration video (``videos``: the reader stage's ``ReaderVideo``
    items, not imported here since that module imports this one): the weight of the class prior in
    activity answers (the best activity R@1x over ``PRIOR_WEIGHTS``: pooled, and per window length
    as ``prior_weight_by_window``, which the answers then use), then per query type fits of
    p(seen) (present vs absent) and p(right), isotonic, and for every type a ``right_model``
    (``fit_right_model``) with its own p(right) curve. ``timeline`` (a TimelineSpec; the videos then
    carry their frame tokens): the answers read the timeline beside each memory, as the runtime does."""
    from export.train.timeline_tokens import video_timeline, window_tokens

    tracks = {}
    if timeline is not None:
        for v in videos:
            tracks[id(v)] = video_timeline(reader, v.video_tokens, v.video_times, v.basis[-1:], v.sv[-1:], cfg, timeline)
    tl_at = lambda v, s: (window_tokens(tracks[id(v)], float(v.snap_end[s]), timeline.horizon_s)  # noqa: E731
                          if timeline is not None else None)
    runs = []
    for v in videos:
        # three memories of each video (a third, two thirds, the end): each query is asked of every one
        # that has seen its whole window, so the fits see ~2x the answers of the final memory alone
        n = len(v.snap_end)
        for s in sorted({(n - 1) // 3, 2 * (n - 1) // 3, n - 1}):
            mem = (v.tokens[s:s + 1].float(), v.times[s:s + 1], v.patches[s:s + 1], v.valid[s:s + 1])
            qs = v.answerable(s)
            if qs:
                runs.append((v, s, mem, qs))
    # activity R@1x of each prior weight, per window length: the prior knows more about a long window
    # (most products go through the common activities) than a short one, where the evidence decides
    recall: dict[float, dict[float, list[float]]] = {pw: {} for pw in PRIOR_WEIGHTS}
    for pw in PRIOR_WEIGHTS:
        for v, s, mem, qs in runs:
            aq = [q for q in qs if q.type == "activity" and not is_absent(q)]
            if not aq:  # a memory early in a video may have seen no activity query's whole window
                continue
            ans, _, _, _, _ = run_answer_step(reader, answer, mem, v.basis[s:s + 1], v.sv[s:s + 1], aq,
                                              v.crop_tokens, v.crop_ids, cfg, prior, pw, tl_at(v, s))
            for q, a in zip(aq, ans):
                recall[pw].setdefault(_window_of(q), []).append(score_query(q, a)["recall@1x"])
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0  # noqa: E731
    pooled = {pw: mean([r for rs in recall[pw].values() for r in rs]) for pw in PRIOR_WEIGHTS}
    best = max(PRIOR_WEIGHTS, key=lambda pw: (pooled[pw] - 1e-9 * PRIOR_WEIGHTS.index(pw)))  # ties: the first
    best = (best, pooled[best])
    by_window = [[w, max(PRIOR_WEIGHTS, key=lambda pw: (mean(recall[pw].get(w, [])) - 1e-9 * PRIOR_WEIGHTS.index(pw)))]
                 for w in sorted({w for r in recall.values() for w in r})]
    ev, sup, act, seen, hit, types = [], [], [], [], [], []
    feats: dict[str, list] = {t: [] for t in TYPE_IDS}  # per query type, its right model's features
    for v, s, mem, qs in runs:
        ans, e, iv, _, _ = run_answer_step(reader, answer, mem, v.basis[s:s + 1], v.sv[s:s + 1], qs, v.crop_tokens,
                                           v.crop_ids, cfg, prior, best[0], tl_at(v, s), by_window)
        x_iv = right_features(iv)
        for i, (q, a, x) in enumerate(zip(qs, ans, e)):
            ev.append(x)
            sup.append(x if q.type == "activity" else iv[i, 0, 2])
            act.append(-1 if q.activity_id is None else q.activity_id)
            seen.append(0.0 if is_absent(q) else 1.0)
            hit.append(1.0 if is_hit(q, a) else 0.0)
            types.append(q.type)
            feats[q.type].append(activity_features([x], [a["scores"]], [q.end - q.start])[0]
                                 if q.type == "activity" else x_iv[i])
    ev, sup, act, seen, hit, types = (np.asarray(x) for x in (ev, sup, act, seen, hit, types))
    out = {"prior_weight": best[0], "calib_activity_r1": round(best[1], 4), "prior_weight_by_window": by_window,
           "calib_activity_r1_by_window": {str(w): round(mean(recall[pw].get(w, [])), 4) for w, pw in by_window}}
    for t in TYPE_IDS:
        k = types == t
        names = FEATURES_OF.get(t)
        x = np.asarray(feats[t], np.float64).reshape(-1, len(names)) if names else None
        model = fit_right_model(x, hit[k], names) if names else None
        seen_fit = fit_calibration(ev[k], seen[k])
        # "right": p(right) of the best interval's support, which events of what happened read
        out[t] = {"seen": seen_fit, "right": fit_calibration(sup[k], hit[k]),
                  "queries": int(k.sum()), "absent": int((seen[k] == 0).sum())}
        seen_model = fit_seen_model(ev[k], act[k], seen[k], cfg.heads.num_activities) if t != "activity" else None
        if seen_model is not None:
            out[t]["seen_model"] = seen_model
        present = k & (seen == 1)  # the cut on the p(seen) answers will read: the model's, else the curve's
        out[t]["not_seen_below"] = not_seen_threshold(p_seen(ev[present], out[t], act[present]))
        if model is not None:  # p(right) of the model's score: isotonic too, so its blocks keep their rates honest
            out[t]["right_model"] = {**model, "right": fit_calibration(model_score(x, model), hit[k])}
    return out


def not_seen_threshold(p_present, share: float = NOT_SEEN_PRESENT_SHARE, default: float = 0.5) -> float:
    """The p(seen) below which at most ``share`` of present answers (their calibrated ``p_present``) fall:
    the least value with no more than that share strictly under it (``default`` without present answers)."""
    p = np.sort(np.asarray(p_present, np.float64))
    if len(p) == 0:
        return default
    return float(np.floor(p[int(np.floor(share * len(p)))] * 1e6) / 1e6)  # rounded down: none more under it


def fit_seen_model(evidence, activity, seen, n_activities: int) -> dict | None:
    """p(seen) of object or time answers on their asked activity's own line (``seen_score``): a
    logistic fit of present (``seen`` 1) vs absent on the logit of the evidence, with an intercept and
    a slope for each activity beside the shared ones (an activity too rare in the calibration answers to
    move the fit keeps the shared line), then isotonic -> a calibration's "seen_model", or None with too
    few present or absent answers."""
    a = np.asarray(activity, np.int64)
    logit = evidence_logit(evidence)
    onehot = (a[:, None] == np.arange(n_activities)[None]).astype(np.float64)
    names = ["logit"] + [f"at_{i}" for i in range(n_activities)] + [f"logit_at_{i}" for i in range(n_activities)]
    model = fit_right_model(np.column_stack([logit, onehot, onehot * logit[:, None]]), seen, names, l2=1e-2)
    if model is None:
        return None
    w, C = model["weights"], n_activities
    lines = [[round(model["bias"] + w[1 + i], 6), round(w[0] + w[1 + C + i], 6)] for i in range(C)]
    out = {"by_activity": lines}
    out["seen"] = fit_calibration(seen_score(evidence, a, out), seen)
    return out


def fit_right_model(features: np.ndarray, hit: np.ndarray, names, l2: float = 1e-3, min_each: int = 20) -> dict | None:
    """Logistic regression of right (``hit``) on the features ``names`` (torch's L-BFGS on standardised
    features, a light L2 penalty; weights returned for the raw features) -> a calibration's
    "right_model", or None with fewer than ``min_each`` right or wrong answers to fit from."""
    y = np.asarray(hit, np.float64)
    if len(y) == 0 or min(y.sum(), len(y) - y.sum()) < min_each:
        return None
    x = np.asarray(features, np.float64)
    # a feature (nearly) constant over the calibration answers says nothing there, and divided by its
    # spread it would get a weight of thousands that decides every other answer: it gets none
    spread = x.std(0)
    mu, sd = x.mean(0), np.where(spread > 1e-4 * (1.0 + np.abs(x.mean(0))), spread, np.inf)
    X, Y = torch.tensor((x - mu) / sd), torch.tensor(y)
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        out = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + l2 * (w * w).sum()
        out.backward()
        return out
    opt.step(loss)
    weights = w.detach().numpy() / sd
    return {"features": list(names), "weights": [round(float(v), 6) for v in weights],
            "bias": round(float(b.detach()) - float((weights * mu).sum()), 6)}


def _window_of(q: Query) -> float:
    """The query's window length, as the benchmark's nearest named window (seconds)."""
    length = q.end - q.start
    return min(WINDOWS.values(), key=lambda w: abs(np.log(w) - np.log(max(length, 1e-3))))


def class_prior(videos: list, C: int) -> list[float]:
    hits, n = np.zeros(C), 0
    for v in videos:
        for q in v.queries:
            if q.type == "activity" and not is_absent(q):
                hits[list(q.gt_activities)] += 1
                n += 1
    return (hits / max(n, 1)).tolist()
