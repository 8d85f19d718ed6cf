"""Engine: ingest -> clips -> sampler -> SVD -> commit; batched answers; coverage; state. These are
about the query heads (answers="heads"); the memory reader's answers: tests/test_runtime_reader.py."""
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.query.answers import encode_queries
from edge_runtime.engine.engine import Engine
from edge_runtime.query.check import QueryError
from edge_runtime.memory.svd import OnlineSVD

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    with Engine(tiny_bundle, threads=2, answers="heads") as e:
        yield e


def _frames(n, seed=0, size=112):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_cfg_labels_and_empty_state(engine):
    stream = engine.new_stream()
    assert engine.cfg.name == "lvm-tiny" and len(engine.labels) == engine.cfg.heads.num_activities
    assert stream.coverage == {"start": None, "end": None}
    assert stream.frames_processed == 0 and engine.backend == "onnxruntime"


def test_encode_resizes_other_sizes(engine):
    tok = engine.encode(_frames(2))
    assert tok.shape == (2, 49, 256) and tok.dtype == np.float32
    big = np.stack([np.kron(f, np.ones((2, 2, 1), np.uint8)) for f in _frames(2)])  # 224 px, same picture
    tok_big = engine.encode(big)
    assert tok_big.shape == (2, 49, 256)
    assert np.corrcoef(tok.ravel(), tok_big.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="uint8"):
        engine.encode(_frames(1).astype(np.float32))


def test_only_full_clips_commit_and_svd_matches_reference(engine):
    stream = engine.new_stream()
    T = engine.clip_frames
    frames = _frames(T + 5, seed=1)
    times = np.arange(T + 5, dtype=np.float64)
    assert engine.ingest(stream, frames[:10], times[:10]) == 0
    assert stream.coverage["end"] is None and stream.pending_frames == 10
    assert engine.ingest(stream, frames[10:], times[10:]) == 1
    assert stream.coverage == {"start": 0.0, "end": float(T)}
    assert stream.pending_frames == 5 and stream.frames_processed == T + 5
    # the SVD saw exactly the first clip's per-frame mean tokens
    ref = OnlineSVD(256, engine.cfg.svd.n_components, engine.cfg.svd.forgetting,
                    energy_cutoff=engine.cfg.svd.energy_cutoff)
    ref.update(engine.encode(frames[:T]).mean(axis=1))
    np.testing.assert_allclose(stream.svd.singular_values, ref.singular_values, rtol=1e-4)
    mem = stream.committed.memory
    assert mem["mem_valid"].sum() == engine.cfg.stream.memory_tokens
    assert engine.flush(stream) is True
    assert stream.coverage["end"] == float(T + 5) and stream.pending_frames == 0
    assert engine.flush(stream) is False


def test_times_must_increase(engine):
    stream = engine.new_stream()
    engine.ingest(stream, _frames(2), [0.0, 1.0])
    with pytest.raises(ValueError, match="not after"):
        engine.ingest(stream, _frames(1), [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        engine.ingest(stream, _frames(2), [5.0, 4.0])


def test_gaps_are_recorded_and_reported_per_window(engine):
    stream = engine.new_stream()
    T = engine.clip_frames
    t = np.concatenate([np.arange(T), 100 + np.arange(T)]).astype(float)
    engine.ingest(stream, _frames(2 * T, seed=2), t)
    assert stream.gaps == [(float(T), 100.0)]
    crop = _frames(1, seed=3)[0]
    a = engine.answer(stream, [{"type": "activity", "start": 0, "end": 200, "object_image": crop}])[0]
    cov = a["coverage"]
    assert cov["start"] == 0.0 and cov["end"] == 100.0 + T
    assert cov["covered_fraction"] == pytest.approx((2 * T) / 200.0)
    assert a["gaps"] == [[float(T), 100.0]]
    b = engine.answer(stream, [{"type": "activity", "start": 300, "end": 400, "object_image": crop}])[0]
    assert b["coverage"] == {"start": None, "end": None, "covered_fraction": 0.0}
    assert b["status"] == "no_memory" and "scores" not in b and "ranked" not in b


def test_answers_every_type_in_one_heads_call(engine, monkeypatch):
    stream = engine.new_stream()
    engine.ingest(stream, _frames(3 * engine.clip_frames, seed=4), np.arange(3 * engine.clip_frames, dtype=float))
    calls = []
    real = engine.heads.infer

    def counting(feed, outputs=None):
        calls.append(feed["q_type"].tolist())
        return real(feed, outputs)

    monkeypatch.setattr(engine.heads, "infer", counting)
    crop = _frames(1, seed=5, size=60)[0]
    reqs = [{"type": "activity", "start": 0, "end": 40, "object_image": crop},
            {"type": "object", "start": 2, "end": 6, "activity": 1},
            {"type": "object", "start": 2, "end": 6, "activity": engine.labels[2], "fps": 2},
            {"type": "time", "start": 0, "end": 48, "activity": 3, "object_image": crop, "k": 4},
            {"type": "time", "start": 0, "end": 48, "activity": 3, "object_tokens": engine.encode_images([crop])[0]}]
    ans = engine.answer(stream, reqs)
    assert calls == [[0, 1, 1, 2]]  # the two time queries ask the same (image or its tokens): one row
    C = engine.cfg.heads.num_activities
    assert len(ans[0]["scores"]) == C and sorted(ans[0]["ranked"]) == list(range(C))
    assert all(0 < s < 1 for s in ans[0]["scores"])
    assert ans[0]["ranked"][0] == int(np.argmax(ans[0]["scores"]))
    # object answers: boxes at the window's object_fps (or the query's fps) frames inside the extent
    for a, fps in ((ans[1], 5.0), (ans[2], 2.0)):
        lo, hi, p = a["extent"]
        assert 2.0 <= lo < hi <= 6.0 and 0 <= p <= 1
        grid = 2.0 + np.arange(int(4 * fps) + 1) / fps
        assert a["times"] and all(np.isclose(grid, t).any() for t in a["times"])
        assert len(a["times"]) == 1 or all(lo - 1e-9 <= t <= hi + 1e-9 for t in a["times"])
        assert len(a["boxes"]) == len(a["times"]) and all(len(b) == 4 for b in a["boxes"])
    assert len(ans[3]["intervals"]) == 4 and len(ans[4]["intervals"]) == 3
    for s, e, p in ans[3]["intervals"]:
        assert 0 <= s <= e <= 48 and 0 <= p <= 1
    # an image and its tokens give the same answer
    np.testing.assert_allclose(ans[3]["intervals"][:3], ans[4]["intervals"], rtol=1e-5)
    for a in ans:
        assert {"coverage", "gaps"} <= set(a)


def test_answers_match_a_direct_heads_call(engine):
    stream = engine.new_stream()
    engine.ingest(stream, _frames(2 * engine.clip_frames, seed=6), np.arange(2 * engine.clip_frames, dtype=float))
    tok = engine.encode(_frames(1, seed=7))[0]
    a = engine.answer(stream, [{"type": "activity", "start": 0, "end": 30, "object_tokens": tok}])[0]
    c = engine.cfg
    hb = encode_queries(["activity"], [(0.0, 30.0)], [None], [tok], fps=c.stream.fps,
                        max_queries=c.heads.window_queries, tokens_shape=(49, 256))
    st = stream.svd.state_dict()
    out = engine.heads.infer({**stream.committed.memory, "svd_basis": st["svd_basis"][None].astype(np.float32),
                              "svd_sv": st["svd_singular_values"][None].astype(np.float32), **hb.as_feed()})
    ref = 1 / (1 + np.exp(-out["activity_logits"][0].astype(np.float64)))
    np.testing.assert_allclose(a["scores"], ref, rtol=1e-5)


def test_identical_queries_run_once_and_get_the_same_answers(engine, monkeypatch):
    stream = engine.new_stream()
    engine.ingest(stream, _frames(3 * engine.clip_frames, seed=8), np.arange(3 * engine.clip_frames, dtype=float))
    crop, other = _frames(1, seed=9, size=60)[0], _frames(1, seed=11, size=60)[0]
    reqs = [{"type": "time", "start": 0, "end": 48, "activity": 3, "object_image": crop, "k": 2},
            {"type": "object", "start": 2, "end": 30, "activity": 1},
            {"type": "time", "start": 0, "end": 48, "activity": 3, "object_image": crop.copy(), "k": 4},
            {"type": "object", "start": 2, "end": 30, "activity": 1, "fps": 2},
            {"type": "time", "start": 0, "end": 48, "activity": 3, "object_image": other}]
    alone = [engine.answer(stream, [r])[0] for r in reqs]  # every crop encoded: later calls reuse its tokens
    rows, encoded = [], []
    real_infer, real_encode = engine.heads.infer, engine.backbone.infer
    monkeypatch.setattr(engine.heads, "infer", lambda feed, outputs=None: rows.append(len(feed["q_type"]))
                        or real_infer(feed, outputs))
    monkeypatch.setattr(engine.backbone, "infer", lambda feed, outputs=None: encoded.append(len(feed["frames"]))
                        or real_encode(feed, outputs))
    together = engine.answer(stream, reqs)
    assert rows == [3] and encoded == []
    # same numbers as asked one by one; k and fps still apply per request
    for a, b in zip(together, alone):
        np.testing.assert_allclose(np.asarray(a.get("intervals") or a["boxes"], float),
                                   np.asarray(b.get("intervals") or b["boxes"], float), rtol=1e-5, atol=1e-6)
    assert len(together[0]["intervals"]) == 2 and len(together[2]["intervals"]) == 4
    assert together[0]["intervals"] == together[2]["intervals"][:2]
    assert len(together[3]["times"]) != len(together[1]["times"])
    assert together[4]["intervals"] != together[0]["intervals"][:3]


@pytest.mark.parametrize("req, msg", [
    ({"type": "where", "start": 0, "end": 1}, "type must be one of"),
    ({"type": "activity", "start": 5, "end": 1}, "must be before end"),
    ({"type": "activity", "start": 0}, "missing 'end'"),
    ({"type": "activity", "start": "x", "end": 1}, "must be numbers"),
    ({"type": "object", "start": 0, "end": 1, "activity": 99}, "out of range"),
    ({"type": "object", "start": 0, "end": 1, "activity": "dancing"}, "unknown activity 'dancing'"),
    ({"type": "object", "start": 0, "end": 1, "activity": 1, "fps": -1}, "fps must be positive"),
    ({"type": "object", "start": 0, "end": 1e9, "activity": 1}, "boxes asked"),
    ({"type": "time", "start": 0, "end": 1, "activity": 1, "k": 0}, "k must be"),
    ({"type": "activity", "start": 0, "end": 1, "object_image": np.zeros((4, 4), np.uint8)}, "RGB image"),
    ({"type": "activity", "start": 0, "end": 1, "object_tokens": np.zeros((3, 3))}, "object_tokens must be"),
])
def test_bad_requests_are_query_errors(engine, req, msg):
    with pytest.raises(QueryError, match=msg):
        engine.answer(engine.new_stream(), [req])


def test_state_dict_roundtrip_and_constant_memory(engine, tiny_bundle):
    stream = engine.new_stream()
    bytes0 = stream.memory_bytes
    T = engine.clip_frames
    engine.ingest(stream, _frames(T + 3, seed=8), np.arange(T + 3, dtype=float))
    engine.ingest(stream, _frames(T, seed=9), 50 + np.arange(T, dtype=float))
    assert stream.memory_bytes == bytes0
    sd = stream.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in sd.values())
    crop = _frames(1, seed=10)[0]
    q = [{"type": "activity", "start": 0, "end": 70, "object_image": crop}]
    before = engine.answer(stream, q)[0]
    with Engine(tiny_bundle, answers="heads") as other:
        other_s = other.new_stream()
        other_s.load_state_dict(sd)
        assert other_s.coverage == stream.coverage and other_s.gaps == stream.gaps
        assert other_s.pending_frames == stream.pending_frames and other_s.last_time == stream.last_time
        np.testing.assert_allclose(other.answer(other_s, q)[0]["scores"], before["scores"], rtol=1e-5)
        # the restored pending frames complete a clip exactly like the original would
        more = _frames(T, seed=11)
        engine.ingest(stream, more, 100 + np.arange(T, dtype=float))
        other.ingest(other_s, more, 100 + np.arange(T, dtype=float))
        np.testing.assert_array_equal(other_s.committed.memory["mem_t"], stream.committed.memory["mem_t"])
        with pytest.raises(ValueError, match="does not fit"):
            other_s.load_state_dict({**sd, "pending_tokens": sd["pending_tokens"][:2]})
        assert other_s.coverage == {"start": None, "end": None}  # a failed load leaves a clean engine


def test_queries_read_the_commit_not_the_buffers_being_written(engine):
    stream = engine.new_stream()
    engine.ingest(stream, _frames(engine.clip_frames, seed=12), np.arange(engine.clip_frames, dtype=float))
    snap = stream.committed
    mem_before = {k: v.copy() for k, v in snap.memory.items()}
    engine.ingest(stream, _frames(engine.clip_frames, seed=13), engine.clip_frames + np.arange(engine.clip_frames, dtype=float))
    assert stream.committed is not snap
    for k, v in snap.memory.items():
        np.testing.assert_array_equal(v, mem_before[k])  # an old commit never changes under a query


def test_engine_matches_the_pytorch_reference(tiny_bundle):
    """The device path (ONNX graphs, numpy SVD, ping-pong memory) answers like export.evaluate.scoring does."""
    pytest.importorskip("torch")
    try:
        from export.model.checkpoint import load_checkpoint
        from export.dataset.video_data import attach_queries, encode_video, render_video
        from export.evaluate.scoring import answer_video
    except ImportError as err:
        pytest.skip(f"export reference unavailable ({err})")
    net, _ = load_checkpoint(REPO / "checkpoints" / "lvm-tiny.safetensors")
    # a whole number of clips: the engine answers only what its memory covers, the reference
    # answers every window, so both must cover the same stream
    data = attach_queries(encode_video(net.backbone, render_video(11, 192, 112, 1.0), keep_frames=True), 9, 0)
    import torch
    with torch.no_grad():  # float32 tokens, as the engine has (export.dataset.video_data caches float16)
        data.tokens = net.backbone(torch.from_numpy(data.frames))
    ref = answer_video(net, data)
    with Engine(tiny_bundle, threads=2, answers="heads") as e:
        es = e.new_stream()
        e.ingest(es, data.frames, data.times)
        got = e.answer(es, [{"type": q.type, "start": q.start, "end": q.end,
                         "activity": q.activity_id if q.type != "activity" else None,
                         "object_image": data.video.object_crop(q.instance_id, size=112)
                         if q.type != "object" and q.instance_id is not None else None, "k": 3}
                        for q in data.queries])
    # The SVD summary is the same numpy code on both paths, fed by ORT's backbone tokens here and by
    # torch's there: LAPACK may give a basis row the opposite sign for inputs that differ by float
    # rounding (one of its 10 rows in a run here), and the heads read the
    # rows as tokens. That moves scores and boxes by up to ~4e-3.
    for q, a, b in zip(data.queries, ref, got):
        if q.type == "activity":
            np.testing.assert_allclose(b["scores"], a["scores"], atol=6e-3)
        elif q.type == "object":
            # the extent is the best interval of the start/end logits: a near-equal one may win in the
            # other runtime, so compare its probability, and the boxes at the frames both answers hold
            np.testing.assert_allclose(b["extent"][2], a["extent"][2], atol=1e-3)
            at_a = {round(t, 6): box for t, box in zip(a["times"], a["boxes"])}
            shared = [(at_a[round(t, 6)], box) for t, box in zip(b["times"], b["boxes"]) if round(t, 6) in at_a]
            if shared:  # 6e-3 of the frame: under a pixel at 112 px
                np.testing.assert_allclose([x for _, x in shared], [x for x, _ in shared], atol=6e-3)
        else:  # near-equal interval probabilities may swap places: compare the probabilities
            np.testing.assert_allclose(np.array(b["intervals"])[:, 2], np.array(a["intervals"])[:, 2], atol=1e-3)


def test_heads_calls_stay_within_their_activation_budget(tiny_bundle):
    """Every query row attends over its own copy of the memory: lvm-edge's 3,000 tokens take ~0.7 GB
    a row, so a batch of 64 would exhaust a kiosk box; its queries go one row per call."""
    from edge_runtime.query.answers import heads_rows_per_call
    from edge_runtime.config import load_model_config

    configs = Path(__file__).resolve().parent.parent / "configs" / "models"
    tiny, edge = (load_model_config(configs / f"{n}.yaml") for n in ("lvm-tiny", "lvm-edge"))
    assert heads_rows_per_call(tiny) == 64 and heads_rows_per_call(edge) == 1
    assert heads_rows_per_call(tiny, budget=1) == 1  # never zero
    eng = Engine(tiny_bundle, max_queries_per_call=256)
    try:
        assert eng.max_queries_per_call == 64
    finally:
        eng.close()
