"""The memory reader prototype (export/model/reader.py) and the benchmark's absent queries.

The reader turns a committed memory into per-token facts once; the answer step answers a query from
the facts alone. Here: absent queries really have "not seen" as their truth, both graphs run in ONNX
Runtime with the numbers of PyTorch, and the answer step depends only on the facts and the query."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_runtime.checkout import CheckoutVideo
from edge_runtime.checkout.absent_queries import is_absent, sample_absent_queries
from edge_runtime.config import resolve_model_config
from edge_runtime.query.reader_answers import calibrated, fit_calibration, reader_answers
from export.model.reader import AnswerStep, MemoryReader, ReaderConfig
from tools.accuracy.reader_eval import export_graphs


def _overlaps(a0, a1, b0, b1):
    return a0 <= b1 and a1 >= b0


def test_absent_queries_have_no_evidence_in_their_window():
    ann = CheckoutVideo(3, 900.0).annotations()
    qs = sample_absent_queries(ann, 60, np.random.default_rng(0))
    assert len(qs) == 60 and all(is_absent(q) for q in qs)
    assert {q.type for q in qs} == {"activity", "object", "time"}
    cls = {int(i["instance_id"]): int(i.get("class_id", i["instance_id"])) for i in ann["instances"]}
    tracks = {int(k): v for k, v in ann["boxes"].items()}
    for q in qs:
        over = [ev for ev in ann["events"] if ev["start"] < q.end and ev["end"] > q.start]
        if q.type == "activity":  # no instance of the asked product's class is in view
            same = [i for i in cls if cls[i] == cls[q.instance_id] and i in tracks]
            assert not any(_overlaps(tracks[i][0][0], tracks[i][-1][0], q.start, q.end) for i in same), q
        elif q.type == "object":  # the activity happens nowhere in the window
            assert not any(int(ev["activity_id"]) == q.activity_id for ev in over), q
        else:  # the product is in view, but nothing of its class undergoes the activity there
            assert not any(int(ev["activity_id"]) == q.activity_id and cls[int(ev["instance_id"])] == cls[q.instance_id]
                           for ev in over), q


@pytest.fixture(scope="module")
def reader_pair():
    torch.manual_seed(0)
    cfg = resolve_model_config("lvm-tiny")
    return cfg, MemoryReader(cfg).eval(), AnswerStep().eval()


def _memory(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    m, d, P, r = cfg.stream.memory_tokens, cfg.backbone.dim, cfg.backbone.tokens_per_frame, cfg.svd.n_components
    return (torch.randn(1, m, d, generator=g), torch.sort(torch.rand(1, m, generator=g) * 1800).values,
            torch.randint(0, P, (1, m), generator=g), torch.ones(1, m), torch.randn(1, r, d, generator=g),
            torch.rand(1, r, generator=g))


def test_facts_have_constant_shapes_and_unit_identities(reader_pair):
    cfg, reader, _ = reader_pair
    with torch.no_grad():
        ident, act, event, boxes, span = reader(*_memory(cfg))
    m = cfg.stream.memory_tokens
    assert ident.shape[:2] == act.shape[:2] == boxes.shape[:2] == span.shape[:2] == (1, m) and event.shape == (1, m)
    assert act.shape[2] == cfg.heads.num_activities and boxes.shape[2] == 4
    assert torch.allclose(ident.norm(dim=-1), torch.ones(1, m), atol=1e-5)
    assert ((boxes >= 0) & (boxes <= 1)).all()


def test_facts_do_not_depend_on_the_sign_lapack_gave_a_basis_row(reader_pair):
    cfg, reader, _ = reader_pair
    assert reader.rc.svd_sign
    mem = _memory(cfg)
    flipped = list(mem)
    flipped[4] = mem[4].clone()
    flipped[4][:, 1] *= -1.0  # the same summary: U and its row with the other sign span one subspace
    with torch.no_grad():
        same = [torch.allclose(a, b, atol=1e-5) for a, b in zip(reader(*mem), reader(*flipped))]
        old = MemoryReader(cfg, ReaderConfig.from_dict({"motion": reader.rc.motion})).eval()  # before the convention
        old.load_state_dict(reader.state_dict())
        moved = [torch.allclose(a, b, atol=1e-5) for a, b in zip(old(*mem), old(*flipped))]
    assert all(same) and not all(moved[1:])  # (identity reads the token alone: unchanged either way)


def test_both_graphs_run_in_onnx_runtime_as_in_pytorch(reader_pair):
    cfg, reader, answer = reader_pair
    r_sess, a_sess = export_graphs(reader, answer, cfg)
    mem = _memory(cfg, seed=1)
    names = ["mem", "mem_t", "mem_p", "mem_valid", "svd_basis", "svd_sv"]
    facts = r_sess.run(None, {n: x.numpy() for n, x in zip(names, mem)})
    with torch.no_grad():
        ref = reader(*mem)
    for got, want in zip(facts, ref):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    # three queries, one of each type, in one call: the answer step reads only the facts
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    q = {"q_type": np.array([0, 1, 2]), "q_activity": np.array([0, 2, 1]),
         "q_object": np.random.default_rng(0).standard_normal((3, P, d)).astype(np.float32),
         "q_window": np.array([[0, 300], [600, 1500], [100, 1800]], np.float32)}
    feed = {n: f[0] for n, f in zip(["ident", "act_logits", "event_logit", "boxes", "span"], facts)}
    feed |= {"mem_t": mem[1][0].numpy(), "mem_valid": mem[3][0].numpy(), **q}
    wanted = {i.name for i in a_sess.get_inputs()}  # facts the answer step does not read are pruned from its graph
    scores, intervals, keyboxes, evidence = a_sess.run(None, {k: v for k, v in feed.items() if k in wanted})
    with torch.no_grad():
        want = answer(*[torch.from_numpy(f[0]) for f in facts], mem[1][0], mem[3][0], torch.from_numpy(q["q_type"]),
                      torch.from_numpy(q["q_activity"]), reader.embed_crop(torch.from_numpy(q["q_object"])),
                      torch.from_numpy(q["q_window"]))
    for got, w in zip((scores, intervals, keyboxes, evidence), want):
        np.testing.assert_allclose(got, w.numpy(), atol=1e-4)
    assert scores.shape == (3, cfg.heads.num_activities) and evidence.shape == (3,)
    # every ranked interval lies inside its query's window
    for i, (s, e) in enumerate(q["q_window"]):
        iv = intervals[i][intervals[i][:, 2] > 0]
        assert ((iv[:, 0] >= s - 1e-3) & (iv[:, 1] <= e + 1e-3)).all(), (i, iv)


def test_confidence_map_is_monotone_and_fits_the_rate():
    rng = np.random.default_rng(0)
    ev = rng.uniform(0, 1, 2000)
    hit = rng.uniform(0, 1, 2000) < ev  # right answers as often as the evidence says
    fit = fit_calibration(ev, hit)
    p = calibrated(np.linspace(0, 1, 50), fit)
    assert np.all(np.diff(p) >= 0)
    assert abs(calibrated([0.8], fit)[0] - 0.8) < 0.1 and abs(calibrated([0.2], fit)[0] - 0.2) < 0.1


def test_not_seen_threshold_calls_at_most_the_share_of_present_answers_not_seen():
    """The cut sits where the given share of present answers' p(seen) lies below it: on fresh draws of
    the same answers about that share is under it, and never more on the answers it was chosen on."""
    from export.train.reader_calibration import not_seen_threshold

    rng = np.random.default_rng(1)
    p = rng.beta(5, 1, 4000)
    for share in (0.0, 0.05, 0.1):
        cut = not_seen_threshold(p, share)
        assert np.mean(p < cut) <= share
        assert abs(np.mean(rng.beta(5, 1, 20000) < cut) - share) < 0.01
    assert not_seen_threshold([0.9] * 50 + [0.2] * 5, 0.05) == 0.2  # ties at the cut stay seen
    assert not_seen_threshold([], 0.05) == 0.5


def test_no_confidence_block_smaller_than_min_block_even_at_the_top():
    """One right answer at the very top of the evidence, above 40 answers right a third of the time,
    is no reason for a confidence of 1: it joins its neighbours' block."""
    ev = np.r_[np.linspace(0.5, 0.9, 40), 0.99]
    hit = np.r_[np.arange(40) % 3 == 0, True]
    xs, ps = fit_calibration(ev, hit, min_block=5)
    assert max(ps) < 0.5
    assert calibrated([0.99], [xs, ps])[0] < 0.5


def test_right_model_learns_that_a_close_runner_up_makes_an_answer_doubtful():
    """Time answers whose second-ranked event is almost as supported as the first are right half the
    time, clear ones nearly always: the fitted model weighs the runner-up's support against the answer
    and the confidence tells the two apart, where the support alone (equal for both) cannot."""
    from edge_runtime.backends.calibration_format import RIGHT_FEATURES
    from edge_runtime.query.reader_answers import confidence, right_features
    from export.train.reader_calibration import fit_right_model

    rng = np.random.default_rng(0)
    n = 3000
    p1 = rng.uniform(0.3, 0.9, n)
    close = rng.uniform(0, 1, n) < 0.5
    p2 = np.where(close, p1 * 0.95, p1 * 0.1)
    iv = np.zeros((n, 5, 3))
    iv[:, 0] = np.c_[np.zeros(n), np.full(n, 4.0), p1]
    iv[:, 1, 2] = p2
    hit = rng.uniform(0, 1, n) < np.where(close, 0.5, 0.95)
    model = fit_right_model(right_features(iv), hit, RIGHT_FEATURES)
    assert model["features"] == ["support", "next_support", "log1p_length_s"]
    assert model["weights"][1] < 0 < model["weights"][0]
    curve = fit_calibration(right_features(iv) @ model["weights"] + model["bias"], hit)
    fit = {"right": fit_calibration(p1, hit), "right_model": {**model, "right": curve}}
    conf = confidence(p1, iv, fit)
    assert abs(conf[close].mean() - 0.5) < 0.08 and abs(conf[~close].mean() - 0.95) < 0.05
    # without a model (calibrations fitted before it) a time answer's curve reads its best interval's
    # support, an activity answer's (its scores given) its evidence
    assert confidence([0.8], iv[:1], {"right": [[0.0, 1.0], [0.0, 1.0]]})[0] == pytest.approx(iv[0, 0, 2])
    assert confidence([0.8], iv[:1], {"right": [[0.0, 1.0], [0.0, 1.0]]}, scores=[[0.5]])[0] == pytest.approx(0.8)
    # too few wrong answers to fit from: no model
    assert fit_right_model(right_features(iv[:100]), np.ones(100, bool), RIGHT_FEATURES) is None
    # a feature all but constant over the answers (a small calibration split: every window alike) gets no
    # weight; divided by its spread it got thousands and decided every confidence
    near = right_features(iv).copy()
    near[:, 2] += rng.normal(0, 1e-7, n)
    wobbly = fit_right_model(near, hit, RIGHT_FEATURES)
    assert wobbly["weights"][2] == 0 and abs(wobbly["bias"]) < 50


def test_activity_confidence_reads_the_ranking_not_only_the_evidence():
    """Activity answers of a clearly seen product (high evidence) whose top two activities score alike
    are right half the time, those with a clear winner nearly always: the activity model reads the
    scores' margin, so its confidence tells them apart where the evidence (equal for both) cannot; a
    runtime whose bundle names other features for activity refuses it."""
    from edge_runtime.backends.calibration_format import ACTIVITY_FEATURES, right_model_problem
    from edge_runtime.query.reader_answers import activity_features, confidence
    from export.train.reader_calibration import fit_right_model

    rng = np.random.default_rng(1)
    n = 3000
    ev = rng.uniform(0.6, 0.9, n)
    close = rng.uniform(0, 1, n) < 0.5
    scores = rng.uniform(0.0, 0.1, (n, 6))
    scores[:, 2] = 0.8
    scores[:, 4] = np.where(close, 0.79, 0.2)
    win = rng.choice([300.0, 900.0, 1800.0], n)
    hit = rng.uniform(0, 1, n) < np.where(close, 0.5, 0.95)
    x = activity_features(ev, scores, win)
    assert x[0].tolist() == pytest.approx([ev[0], 0.8, scores[0, 4], np.log1p(win[0])])
    model = fit_right_model(x, hit, ACTIVITY_FEATURES)
    assert model["features"] == list(ACTIVITY_FEATURES) and model["weights"][2] < 0
    fit = {"right": fit_calibration(ev, hit),
           "right_model": {**model, "right": fit_calibration(x @ model["weights"] + model["bias"], hit)}}
    conf = confidence(ev, None, fit, scores=scores, window_s=win)
    assert abs(conf[close].mean() - 0.5) < 0.08 and abs(conf[~close].mean() - 0.95) < 0.05
    assert right_model_problem(fit["right_model"], "activity") is None
    assert "for time answers" in right_model_problem(fit["right_model"], "time")


def test_prior_weight_follows_the_window_length():
    from edge_runtime.query.reader_answers import prior_weight_for

    table = [[300.0, 0.0], [900.0, 0.1], [1800.0, 1.0]]
    assert prior_weight_for(1800.0, 0.3) == 0.3  # one weight for every window without a table
    assert [prior_weight_for(w, 0.3, table) for w in (60, 300, 500, 600, 900, 1300, 1800, 36000)] == \
        [0.0, 0.0, 0.0, 0.1, 0.1, 1.0, 1.0, 1.0]  # nearest length on a log scale
    scores = np.zeros((2, 3))
    prior = [0.2, 0.9, 0.5]
    short, long = reader_answers(["activity"] * 2, np.array([[0.0, 300.0], [0.0, 1800.0]]), scores + [[0.3, 0, 0]],
                                 None, None, object_fps=5.0, prior=prior, prior_weight=0.3, prior_weight_by_window=table)
    assert short["ranked"][0] == 0 and long["ranked"][0] == 1  # the prior outweighs the evidence on long windows only


def test_answers_carry_rounded_boxes_and_times():
    """Boxes to 4 decimals, times to the millisecond, p to 6: what goes out as JSON stays short."""
    import json

    rng = np.random.default_rng(0)
    iv = np.array([[[10.123456789, 14.987654321, 0.912345678], [30.0, 31.5, 0.5], [50.0, 52.0, 0.25]]] * 2,
                  np.float32)
    kb = rng.random((2, 3, 16, 4)).astype(np.float32)
    obj, tim = reader_answers(["object", "time"], np.array([[0.3, 60.0]] * 2), np.zeros((2, 3)), iv, kb,
                              object_fps=3.0)
    assert obj["extent"] == [10.123, 14.988, 0.912346] and tim["intervals"][0] == obj["extent"]
    assert obj["times"][:2] == [10.3, 10.633] and all(t == round(t, 3) for t in obj["times"])
    assert all(0.0 <= v <= 1.0 and v == round(v, 4) for b in obj["boxes"] for v in b)
    assert len(json.dumps(obj["boxes"])) <= 36 * len(obj["boxes"])  # "[0.xxxx, 0.xxxx, 0.xxxx, 0.xxxx], " at most


def _facts(m=40, E=32, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ident = torch.nn.functional.normalize(torch.randn(m, E, generator=g), dim=-1)
    return (ident, torch.full((m, C), -6.0), torch.full((m,), -6.0), torch.rand(m, 4, generator=g).sort(-1).values,
            torch.full((m, 2), 2.0), torch.linspace(0, 1800, m), torch.ones(m))


def test_activity_evidence_is_the_best_identity_match_in_the_window():
    answer = AnswerStep().eval()
    ident, act, ev, boxes, span, t, valid = _facts()
    q = ident[10:11]  # the product shown by token 10 (t = 461.5 s); no activity anywhere
    win_in, win_out = torch.tensor([[400.0, 500.0]]), torch.tensor([[1000.0, 1300.0]])
    with torch.no_grad():
        got = [answer(ident, act, ev, boxes, span, t, valid, torch.tensor([0]), torch.tensor([0]), q, w)[3]
               for w in (win_in, win_out)]
        p_match = torch.sigmoid(answer.match_logits(ident[10:11], q))[0, 0]
    # seen in its window however unlikely any activity is; not seen where it is absent
    assert abs(float(got[0][0]) - float(p_match)) < 1e-6
    assert float(got[1][0]) < 0.5 * float(got[0][0])


def test_seen_model_reads_each_activity_on_its_own_line():
    """Activity 0's present answers have strong evidence and its absent ones middling; activity 1's present
    ones have the middling evidence: one curve for both cannot call activity 0's absent answers "not
    seen" without dropping activity 1's present ones, a line per activity can."""
    from edge_runtime.query.reader_answers import p_seen, seen_score
    from export.train.reader_calibration import fit_seen_model, not_seen_threshold

    rng = np.random.default_rng(0)
    n = 4000
    act = rng.integers(0, 2, n)
    seen = rng.uniform(0, 1, n) < 0.75
    centre = np.where(seen, np.where(act == 0, 3.0, 0.0), np.where(act == 0, 0.0, -3.0))
    ev = 1.0 / (1.0 + np.exp(-(centre + rng.normal(0, 0.7, n))))
    model = fit_seen_model(ev, act, seen.astype(float), 8)
    assert len(model["by_activity"]) == 8 and model["by_activity"][2] == model["by_activity"][7]  # unseen: shared
    fit = {"seen": fit_calibration(ev, seen.astype(float)), "seen_model": model}
    shared = np.clip(calibrated(ev, fit["seen"]), 0, 1)
    own = p_seen(ev, fit, act)

    def caught(p):  # absent answers under the cut that keeps 95 % of present ones
        cut = not_seen_threshold(p[seen])
        return float((p[~seen] < cut).mean())
    assert caught(own) > caught(shared) + 0.2
    assert np.all(np.diff(seen_score([0.2, 0.5, 0.8], [0, 0, 0], model)) > 0)  # more evidence, likelier seen
    with pytest.raises(ValueError, match="reads its asked activity"):
        p_seen(ev, fit)
    assert p_seen([0.3], {"seen": [[0.0, 1.0], [0.0, 1.0]]})[0] == pytest.approx(0.3)  # no model: the curve


def test_object_support_needs_an_event_in_progress():
    answer = AnswerStep().eval()
    ident, act, ev, boxes, span, t, valid = _facts()
    act[20:24, 3] = 6.0  # tokens 20-23 look like activity 3 ...
    args = (torch.tensor([1]), torch.tensor([3]), torch.zeros(1, ident.shape[1]), torch.tensor([[0.0, 1800.0]]))
    with torch.no_grad():
        no_event = answer(ident, act, ev, boxes, span, t, valid, *args)[3]
        ev[20:24] = 6.0  # ... and an event is in progress there
        event = answer(ident, act, ev, boxes, span, t, valid, *args)[3]
    assert float(no_event[0]) < 0.01 and float(event[0]) > 0.9


def test_object_and_time_evidence_is_the_mean_of_the_best_tokens():
    """One stray token of the asked activity is weaker evidence than an event several tokens hold;
    a reader file from before ``evidence_top`` reads the best token alone, and a feed of fewer rows
    than ``evidence_top`` counts the missing ones as zero, as the whole memory's out-of-window rows are."""
    ident, act, ev, boxes, span, t, valid = _facts()
    act[20, 3], ev[20] = 6.0, 6.0
    args = (torch.tensor([1]), torch.tensor([3]), torch.zeros(1, ident.shape[1]))
    whole = torch.tensor([[0.0, 1800.0]])
    with torch.no_grad():
        stray = AnswerStep().eval()(ident, act, ev, boxes, span, t, valid, *args, whole)[3]
        old = AnswerStep(ReaderConfig.from_dict({})).eval()(ident, act, ev, boxes, span, t, valid, *args, whole)[3]
        few = AnswerStep().eval()(ident[19:22], act[19:22], ev[19:22], boxes[19:22], span[19:22], t[19:22],
                                  valid[19:22], *args, whole)[3]
        act[21:24, 3], ev[21:24] = 6.0, 6.0
        event = AnswerStep().eval()(ident, act, ev, boxes, span, t, valid, *args, whole)[3]
    p = float(torch.sigmoid(torch.tensor(6.0)) ** 2)
    assert ReaderConfig().evidence_top == 4 and ReaderConfig.from_dict({}).evidence_top == 1
    with pytest.raises(ValueError, match="evidence_top must be a whole number of tokens >= 1, got 0"):
        ReaderConfig.from_dict({"evidence_top": 0})
    assert float(stray[0]) == pytest.approx(p / 4, rel=1e-3) and float(old[0]) == pytest.approx(p, rel=1e-3)
    assert float(few[0]) == pytest.approx(float(stray[0]), rel=1e-3)
    assert float(event[0]) == pytest.approx(p, rel=1e-3)


def test_ranked_answers_at_a_near_tie_are_marked_undecided():
    """Two events of the asked activity with support equal to float rounding: which ranks first is
    a coin toss between correct implementations, so export parity must not compare that answer; a
    clear winner is compared, and so is every rank of a query with nothing in its window."""
    answer = AnswerStep().eval()
    ident, act, ev, boxes, span, t, valid = _facts()
    act[[10, 30], 3] = 6.0
    ev[[10, 30]] = 6.0
    q = (torch.tensor([1, 1]), torch.tensor([3, 3]), torch.zeros(2, ident.shape[1]),
         torch.tensor([[0.0, 1800.0], [1790.0, 1795.0]]))
    with torch.no_grad():
        tied, _ = answer.decided(ident, act, ev, boxes, span, t, valid, *q)
        ev[30] = 5.0  # token 10 now clearly first
        clear, supported = answer.decided(ident, act, ev, boxes, span, t, valid, *q)
        out = answer(ident, act, ev, boxes, span, t, valid, *q)
        act[:, 3] = -30.0  # support ~1e-13 everywhere: nothing found, its place is rounding's
        weak, weak_supported = answer.decided(ident, act, ev, boxes, span, t, valid, *q)
    assert tied.shape == (2, answer.rc.ranked)
    assert not tied[0].any()  # the first answer is at the tie, and every later one follows from it
    assert bool(clear[0, 0]) and abs(float(out[1][0, 0, 0]) - (float(t[10]) - 2.0)) < 1.0
    assert tied[1].all() and clear[1].all()  # an empty window answers alike whatever is "best"
    assert supported.all() and not weak[0].any() and not weak_supported[0].any()
    assert weak[1].all() and weak_supported[1].all()


def test_identity_loss_takes_any_crop_of_the_class_as_the_match():
    from export.train.reader_losses import contrastive_identity

    # one token of class 7 against crops of classes [7, 7, 9]: matching the second crop of its class
    # is as right as matching the first; matching the other class is wrong
    target = torch.tensor([[1.0, 1.0, 0.0]])
    second = contrastive_identity(torch.tensor([[-8.0, 8.0, -8.0]]), target)
    first = contrastive_identity(torch.tensor([[8.0, -8.0, -8.0]]), target)
    wrong = contrastive_identity(torch.tensor([[-8.0, -8.0, 8.0]]), target)
    assert float(second) < 0.01 and abs(float(second) - float(first)) < 1e-6 and float(wrong) > 5.0


def test_activity_weights_lift_rare_activities_and_keep_the_mean():
    from types import SimpleNamespace

    from export.train.reader_losses import activity_weights

    # 90 event tokens of activity 0, 10 of activity 2, none of 1; -1 = no event; one invalid token of 2
    act = torch.tensor([[0] * 90 + [2] * 10 + [-1] * 50 + [2]])
    valid = torch.ones_like(act, dtype=torch.float32)
    valid[0, -1] = 0.0
    v = SimpleNamespace(act=act, valid=valid)
    assert activity_weights([v], 3, 0.0) is None
    w = activity_weights([v], 3, 0.5)
    share = torch.tensor([0.9, 0.0, 0.1])
    assert float(w[1]) == 0.0  # an activity with no token weighs nothing (none to weigh)
    assert abs(float((w * share).sum()) - 1.0) < 1e-6  # an event token weighs 1 on average
    assert abs(float(w[2] / w[0]) - 3.0) < 1e-5  # (0.1 / 0.9) ** -0.5


def test_the_last_memory_answers_every_query_of_its_video():
    """Calibration asks each memory the queries it can answer: whole windows it has seen, and on the
    video's last memory (1,792 s of a 30-minute video: its last 8 frames never fill a clip) every query,
    so 30-minute windows are calibrated too."""
    from types import SimpleNamespace

    from export.train.reader_videos import ReaderVideo

    q = lambda s, e: SimpleNamespace(start=s, end=e)  # noqa: E731
    qs = [q(0, 300), q(1200, 1500), q(1500, 1800), q(0, 1800)]
    v = SimpleNamespace(snap_end=np.array([32.0, 1504.0, 1792.0]), queries=qs)
    assert ReaderVideo.answerable(v, 0) == []
    assert ReaderVideo.answerable(v, 1) == qs[:2]
    assert ReaderVideo.answerable(v, 2) == qs


def test_the_query_loss_asks_the_last_memory_the_30_minute_activity_windows():
    """Training asks what the runtime answers: the last memory's 30-minute activity queries are in the
    query loss, other types are not, and an earlier memory gets only windows it has seen whole."""
    from types import SimpleNamespace

    from export.train.reader_losses import loss_queries
    from export.train.reader_videos import ReaderVideo

    q = lambda t, s, e: SimpleNamespace(type=t, start=s, end=e)  # noqa: E731
    qs = [q("activity", 0, 300), q("time", 0, 300), q("activity", 0, 1800), q("object", 0, 1800)]
    v = SimpleNamespace(snap_end=np.array([320.0, 1792.0]), queries=qs)
    v.answerable = lambda s: ReaderVideo.answerable(v, s)
    assert loss_queries(v, 0) == [qs[0]]
    assert loss_queries(v, 1) == [qs[0], qs[2]]


def test_the_preparation_estimate_waits_for_a_video_the_token_cache_lacked(tmp_path):
    """Stage 1's videos come from the token cache at a fraction of a new video's cost: the reader stage's
    estimate is priced on the first video that was rendered and encoded (a new cache file), and the
    videos come back in order, each built once."""
    from export.train.reader_videos import prepare_in_order

    built, said = [], []

    def build(a, b):
        for k in range(a, b):
            if k >= 2:   # videos 0 and 1 were cached by stage 1; the rest are encoded and cached now
                (tmp_path / f"{k}.safetensors").write_bytes(b"")
        built.extend(range(a, b))
        return list(range(a, b))

    def log(m):
        said.append((m, list(built)))

    assert prepare_in_order(build, 6, tmp_path, log, "reader stage: 6 videos") == list(range(6))
    assert built == list(range(6)) and len(said) == 1
    # logged once video 2, the first one encoded, was ready
    assert said[0][1] == [0, 1, 2] and said[0][0].startswith("reader stage: 6 videos (~")
    built.clear()
    said.clear()
    assert prepare_in_order(build, 4, None, log, "x") == list(range(4))   # no cache: after the first one
    assert built == list(range(4)) and said[0][1] == [0]
