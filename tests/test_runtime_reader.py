"""The runtime's memory reader: facts committed with each memory (batched over streams, constant in
size, in snapshots), answers equal to the PyTorch reader's, "not seen" for absent products on a real
stream, the heads still selectable, and the new fields through the API and the CLI."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from edge_runtime.backends.bundle import BundleError
from edge_runtime.checkout import CheckoutVideo, sample_queries
from edge_runtime.checkout.absent_queries import is_absent, sample_absent_queries
from edge_runtime.checkout.queries import engine_request
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.ingest import ingest_streams
from edge_runtime.engine.snapshot import SNAPSHOT_NAME
from edge_runtime.engine.stream_state import FACT_KEY, FACT_NAMES, MissingFacts
from edge_runtime.memory.token_memory import MEMORY_INPUTS
from edge_runtime.query import reader_query
from edge_runtime.query.reader_query import not_seen_below
from edge_runtime.query.reader_answers import confidence, p_seen, reader_answers
from edge_runtime.query.types import BY_NAME
from edge_runtime.serve.api import create_app
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.serve.streams import StreamError

READER_FILE = Path(__file__).resolve().parent.parent / "checkpoints" / "lvm-tiny-reader.safetensors"
SEED, VIDEO_S = 1000042, 600.0  # a held-out generator video: long enough for 5-minute windows without a product


def _frames(video: CheckoutVideo, fps: float, start: float = 0.0, end: float | None = None):
    ts, fr = zip(*video.frames(fps, start, end))
    return np.stack(fr), np.asarray(ts, np.float64)


@pytest.fixture(scope="module")
def streamed(tiny_bundle):
    """An engine (answers auto: the reader) that streamed the whole video, and the video."""
    torch.set_num_threads(1)
    with Engine(tiny_bundle, threads=1) as eng:
        video = CheckoutVideo(seed=SEED, duration_s=VIDEO_S, size=eng.frame_size)
        st = eng.new_stream()
        eng.ingest(st, *_frames(video, eng.fps))
        eng.flush(st)
        yield eng, st, video


def _requests(eng, video, queries):
    return [engine_request(q, video.object_crop(q.instance_id, size=eng.frame_size)
                           if q.type != "object" and q.instance_id is not None else None) for q in queries]


def _absent_and_present(video):
    ann = video.annotations()
    absent = sample_absent_queries(ann, 24, np.random.default_rng(0), types=("activity",), windows=("short",))
    present = [q for q in sample_queries(ann, 48, np.random.default_rng(1)) if q.type == "activity"]
    assert absent and all(is_absent(q) for q in absent) and present
    return absent, present


def test_bundle_carries_the_reader_and_auto_uses_it(streamed):
    eng, st, _ = streamed
    assert eng.answers_kind == "reader" and eng.bundle.reader is not None
    assert st.fact_specs is not None  # its streams keep the reader's facts


def test_facts_committed_with_each_memory_constant_in_size(tiny_bundle):
    with Engine(tiny_bundle, threads=1) as eng:
        video = CheckoutVideo(seed=SEED, duration_s=96.0, size=eng.frame_size)
        frames, times = _frames(video, eng.fps)
        st = eng.new_stream()
        empty = st.committed.facts
        assert set(empty) == set(FACT_NAMES) and not any(v.any() for v in empty.values())
        shapes = {k: (v.shape, v.dtype) for k, v in empty.items()}
        size = st.memory_bytes
        seen = []
        for i in range(0, len(frames), eng.clip_frames):
            assert eng.ingest(st, frames[i : i + eng.clip_frames], times[i : i + eng.clip_frames]) == 1
            c = st.committed
            assert {k: (v.shape, v.dtype) for k, v in c.facts.items()} == shapes
            assert st.memory_bytes == size
            seen.append(c.facts)
        # each commit has the facts of its own memory: a later commit does not change an earlier one's
        assert not np.array_equal(seen[0]["act_logits"], seen[-1]["act_logits"])
        assert seen[0]["ident"] is not seen[1]["ident"] and np.isfinite(seen[-1]["span"]).all()


def test_reader_runs_once_for_streams_committing_together(tiny_bundle):
    """Two streams' clips committed in one step: one reader call with two rows, each row's facts
    equal to that stream's alone."""
    with Engine(tiny_bundle, threads=1) as eng:
        calls = []
        real = eng.reader.infer
        eng.reader.infer = lambda feed, *a, **k: calls.append(feed["mem"].shape[0]) or real(feed, *a, **k)
        a, b = eng.new_stream(), eng.new_stream()
        va, vb = (CheckoutVideo(seed=s, duration_s=32.0, size=eng.frame_size) for s in (SEED, SEED + 1))
        fa, fb = _frames(va, eng.fps), _frames(vb, eng.fps)
        assert ingest_streams(eng, [(a, *fa), (b, *fb)]) == [2, 2]
        # each call: both memories, and with a timeline both committed clips cut into reader rows
        rows = 0 if eng.timeline is None else -(-eng.clip_frames // eng.timeline.frames_per_row)
        assert calls == [2 * (1 + rows)] * 2
        for eng_one, frames in ((a, fa), (b, fb)):
            alone = eng.new_stream()
            eng.ingest(alone, *frames)
            for k in FACT_NAMES:
                np.testing.assert_allclose(eng_one.committed.facts[k], alone.committed.facts[k], atol=1e-5, rtol=1e-4)


def test_engine_answers_equal_the_pytorch_reader(streamed):
    from export.model.reader import load_reader

    from edge_runtime.config import model_config_from_dict

    eng, st, video = streamed
    cfg = model_config_from_dict(eng.bundle.manifest["config"])  # with its training settings: the digest the reader names
    reader, answer, meta = load_reader(READER_FILE, cfg)
    sec = eng.bundle.reader
    # with the timeline track, answers read it beside the memory and carry the calibration fitted so
    cal_all = meta["timeline"]["calibration"] if eng.timeline is not None else meta["calibration"]
    assert sec["prior"] == pytest.approx(meta["prior"])
    assert all(sec["calibration"][t] == cal_all[t] for t in BY_NAME)
    assert sec["prior_weight"] == cal_all.get("prior_weight", meta.get("prior_weight"))
    assert sec.get("prior_weight_by_window") == cal_all.get("prior_weight_by_window")
    c = st.committed
    m = eng.cfg.stream.memory_tokens
    with torch.no_grad():
        # the commit keeps no copy of the memory's tokens (the facts stand for them): the device memory
        # holds what was committed until the next clip
        assert "mem" not in c.memory
        memory = st.memory.read()
        facts = reader(*(torch.from_numpy(memory[k]) for k in MEMORY_INPUTS), torch.from_numpy(c.svd_basis),
                       torch.from_numpy(c.svd_sv))
    for name, f in zip(FACT_NAMES, facts):
        np.testing.assert_allclose(c.facts[name][:m], f[0].numpy(), atol=2e-4, rtol=1e-3, err_msg=name)
    # the answer step reads every committed row: the memory's facts (checked above), then the timeline's
    rows = [torch.from_numpy(np.concatenate([f[0].numpy(), c.facts[n][m:]])) for n, f in zip(FACT_NAMES, facts)]
    t_all = torch.from_numpy(c.fact_t if c.fact_t is not None else c.memory["mem_t"][0])
    v_all = torch.from_numpy(c.fact_valid if c.fact_valid is not None else c.memory["mem_valid"][0])

    queries = sample_queries(video.annotations(), 12, np.random.default_rng(3))
    reqs = _requests(eng, video, queries)
    for r in reqs:  # both sides from the same crop tokens
        if r["object_image"] is not None:
            r["object_tokens"], r["object_image"] = eng.encode_images([r["object_image"]])[0], None
    got = eng.answer(st, reqs)
    P, d = eng.tokens_per_frame, eng.token_dim
    obj = torch.stack([torch.from_numpy(r["object_tokens"]) if r.get("object_tokens") is not None else torch.zeros(P, d)
                       for r in reqs])
    q_type = torch.tensor([BY_NAME[r["type"]].id for r in reqs])
    q_act = torch.tensor([r["activity"] if r["activity"] is not None else 0 for r in reqs])
    win = torch.tensor([[r["start"], r["end"]] for r in reqs], dtype=torch.float32)
    with torch.no_grad():
        sc, iv, kb, ev = answer(*rows, t_all, v_all, q_type, q_act, reader.embed_crop(obj), win)
    want = reader_answers([r["type"] for r in reqs], win.numpy(), sc.numpy(), iv.numpy(), kb.numpy(),
                          object_fps=eng.cfg.stream.object_fps, prior=meta["prior"],
                          prior_weight=sec["prior_weight"], prior_weight_by_window=sec.get("prior_weight_by_window"))
    for r, g, w, e, i in zip(reqs, got, want, ev.numpy(), iv.numpy()):
        assert g["answered_by"] == "reader" and g["status"] in ("answered", "not_seen")
        cal = cal_all[r["type"]]
        assert g["p_seen"] == pytest.approx(float(p_seen([e], cal, [r["activity"]])[0]), abs=2e-3)
        scores = [w["scores"]] if r["type"] == "activity" else None
        assert g["confidence"] == pytest.approx(float(confidence([e], i[None], cal, scores=scores,
                                                                 window_s=[r["end"] - r["start"]])[0]), abs=2e-3)
        assert (g["status"] == "not_seen") == (g["p_seen"] < not_seen_below(sec, r["type"]))
        if r["type"] == "activity":
            np.testing.assert_allclose(g["scores"], w["scores"], atol=1e-4)
        elif r["type"] == "time":
            np.testing.assert_allclose(g["intervals"], w["intervals"][: r["k"]], atol=2e-3)
        else:
            np.testing.assert_allclose(g["extent"], w["extent"], atol=2e-3)
            np.testing.assert_allclose(g["boxes"], w["boxes"], atol=1e-3)


def test_absent_products_are_not_seen_on_a_real_stream(streamed):
    eng, st, video = streamed
    absent, present = _absent_and_present(video)
    got_absent = eng.answer(st, _requests(eng, video, absent))
    got_present = eng.answer(st, _requests(eng, video, present))
    not_seen_absent = [a for a in got_absent if a["status"] == "not_seen"]
    not_seen_present = [a for a in got_present if a["status"] == "not_seen"]
    assert not_seen_absent, "no absent product was answered not_seen"
    assert len(not_seen_absent) / len(absent) > len(not_seen_present) / len(present)
    for a in not_seen_absent:
        assert a["p_seen"] < not_seen_below(eng.bundle.reader, "activity") and 0.0 <= a["confidence"] <= 1.0
        assert a["message"] and a["scores"] and a["ranked"]  # the content is still filled in


def test_partial_and_no_memory_windows_with_the_reader(streamed):
    eng, st, video = streamed
    crop = video.object_crop(video.annotations()["instances"][0]["instance_id"], size=eng.frame_size)
    part, none = eng.answer(st, [{"type": "time", "activity": 1, "object_image": crop, "start": 500, "end": 700},
                             {"type": "activity", "object_image": crop, "start": 800, "end": 900}])
    assert part["status"] in ("partial", "not_seen") and part["answered_spans"] == [[500.0, VIDEO_S]]
    assert all(500 <= s < e <= VIDEO_S for s, e, _ in part["intervals"])
    assert none["status"] == "no_memory" and none["answered_by"] == "reader" and none["p_seen"] is None


def test_heads_are_still_selectable(tiny_bundle, streamed):
    eng, st, video = streamed
    with Engine(tiny_bundle, threads=1, answers="heads") as heads:
        heads_s = heads.new_stream()
        assert heads.answers_kind == "heads" and heads.reader is None and heads_s.committed.facts is None
        heads.ingest(heads_s, *_frames(video, heads.fps, 0.0, 64.0))
        assert not any(k.startswith(FACT_KEY) for k in heads_s.state_dict())
        reqs = _requests(heads, video, sample_queries(video.annotations(), 3, np.random.default_rng(5)))
        for r in reqs:
            r["start"], r["end"] = 0.0, 64.0
        for a in heads.answer(heads_s, reqs):
            assert a["answered_by"] == "heads" and "confidence" not in a and "p_seen" not in a
            assert a["status"] in ("answered", "partial")
    with pytest.raises(ValueError, match="answers must be one of"):
        Engine(tiny_bundle, threads=1, answers="both")


def _heads_only_copy(bundle: Path, dest: Path) -> Path:
    """The same bundle without the reader pair: what an export without a reader file writes."""
    shutil.copytree(bundle, dest)
    man = json.loads((dest / "manifest.json").read_text())
    for g in ("reader", "answer"):
        (dest / man["graphs"].pop(g)["onnx"]).unlink()
    man["answers"] = {"object_extent": True, "kind": "heads"}
    (dest / "manifest.json").write_text(json.dumps(man))
    return dest


def test_reader_asked_of_a_bundle_without_one(tiny_bundle, tmp_path, capsys):
    from edge_runtime import cli

    plain = _heads_only_copy(tiny_bundle, tmp_path / "plain")
    with pytest.raises(BundleError, match="carries no memory reader") as err:
        Engine(plain, threads=1, answers="reader")
    assert "\n" not in str(err.value)
    with Engine(plain, threads=1) as auto:
        assert auto.answers_kind == "heads"
    code = cli.main(["run", "--bundle", str(plain), "--answers", "reader", "--source", "demo://", "--api", "none",
                     "--duration", "1", "--threads", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "carries no memory reader" in lines[0]


def test_runtime_config_answers_key(tmp_path):
    from edge_runtime.config import ConfigError
    from edge_runtime.cli.runtime_config import load_runtime_settings, override

    cfg = tmp_path / "r.yaml"
    cfg.write_text("answers: heads\n")
    assert load_runtime_settings(cfg).answers == "heads"
    assert override(load_runtime_settings(cfg), {"answers": "reader"}).answers == "reader"
    cfg.write_text("answers: maybe\n")
    with pytest.raises(ConfigError, match="answers"):
        load_runtime_settings(cfg)


def test_snapshot_round_trip_keeps_the_facts(streamed, tmp_path):
    eng, st, video = streamed
    rt = Runtime(eng, state_dir=tmp_path)
    try:
        rt.stream.load_state_dict(st.state_dict())
        saved = rt.snapshot()
    finally:
        rt.batcher.close()
    restored = Runtime(eng, state_dir=tmp_path)
    try:
        assert restored.restored_from is not None and Path(saved["path"]).is_file()
        for k in FACT_NAMES:
            np.testing.assert_array_equal(restored.stream.committed.facts[k], st.committed.facts[k])
        reqs = _requests(eng, video, sample_queries(video.annotations(), 4, np.random.default_rng(7)))
        strip = lambda answers: [{k: v for k, v in a.items() if k != "ood"} for a in answers]  # noqa: E731
        assert strip(eng.answer(restored.stream, reqs)) == strip(eng.answer(st, reqs))
    finally:
        restored.batcher.close()


def test_snapshot_without_facts_is_refused_and_kept(tiny_bundle, streamed, tmp_path):
    eng, st, video = streamed
    with Engine(tiny_bundle, threads=1, answers="heads") as heads:
        rt = Runtime(heads, state_dir=tmp_path)
        heads_s = rt.stream
        heads.ingest(heads_s, *_frames(video, heads.fps, 0.0, 32.0))
        rt.snapshot()
        rt.batcher.close()
        path = tmp_path / SNAPSHOT_NAME
        before = path.read_bytes()
        with pytest.raises(MissingFacts):
            eng.new_stream().load_state_dict(heads_s.state_dict())
        with pytest.raises(StreamError) as err:
            Runtime(eng, state_dir=tmp_path)
        msg = str(err.value)
        assert "\n" not in msg and "no reader facts" in msg and "--answers heads" in msg and err.value.status == 409
        assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_NAME]
        # a reader engine's snapshot restores into a heads engine: the facts are ignored
        back = heads.new_stream()
        back.load_state_dict(st.state_dict())
        assert back.coverage == st.coverage and back.committed.facts is None


def _png(img: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()).decode()


@pytest.fixture(scope="module")
def client(streamed):
    eng, st, _ = streamed
    rt = Runtime(eng)
    rt.stream.load_state_dict(st.state_dict())  # the streamed memory, facts included
    with TestClient(create_app(rt)) as c:
        yield c
    rt.batcher.close()


def _absent_not_seen(streamed):
    """An absent activity query the reader answers not_seen, and its crop."""
    eng, st, video = streamed
    absent, _ = _absent_and_present(video)
    reqs = _requests(eng, video, absent)
    for q, r, a in zip(absent, reqs, eng.answer(st, reqs)):
        if a["status"] == "not_seen":
            return q, r["object_image"]
    pytest.fail("no absent query was answered not_seen")


def test_api_answers_carry_the_judgement(client, streamed):
    q, crop = _absent_not_seen(streamed)
    spec = client.get("/openapi.json").json()
    answer_schema = spec["components"]["schemas"]["Answer"]["properties"]
    assert {"status", "confidence", "p_seen", "answered_by"} <= set(answer_schema)
    assert "not_seen" in answer_schema["status"]["enum"]
    assert client.get("/v1/status").json()["answers"] == "reader"
    r = client.post("/v1/query/activity", json={"object_image": _png(crop), "start": q.start, "end": q.end})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["status"] == "not_seen" and a["answered_by"] == "reader"
    assert a["p_seen"] < not_seen_below(streamed[0].bundle.reader, "activity")
    assert 0.0 <= a["confidence"] <= 1.0 and a["message"] and a["labels"]
    b = client.post("/v1/query/batch", json={"queries": [
        {"type": "object", "activity": 1, "start": 0, "end": 300},
        {"type": "time", "activity": 2, "object_image": _png(crop), "start": 900, "end": 1000}]}).json()["answers"]
    assert b[0]["answered_by"] == "reader" and 0.0 <= b[0]["confidence"] <= 1.0 and b[0]["tracks"]
    assert b[1]["status"] == "no_memory" and b[1]["confidence"] is None


def test_cli_prints_not_seen_and_confidence(client, streamed, tmp_path, monkeypatch, capsys):
    from edge_runtime import cli
    from edge_runtime.cli import query as cli_query

    q, crop = _absent_not_seen(streamed)
    img = tmp_path / "crop.png"
    cv2.imwrite(str(img), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))

    def http(method, url, body, token, timeout=60.0):  # the CLI's HTTP call, served by the test app
        path = url.split("8321", 1)[1]
        return client.request(method, path, json=body).json()

    monkeypatch.setattr(cli_query, "request_json", http)
    assert cli.main(["query", "activity", "--image", str(img), "--start", str(q.start), "--end", str(q.end)]) == 0
    out = capsys.readouterr().out
    assert "not seen: no evidence" in out and "activity answers need)" in out and "best guess" in out
    assert cli.main(["query", "object", "--activity", "1", "--start", "0", "--end", "300"]) == 0
    out = capsys.readouterr().out
    assert "confidence 0." in out or "confidence 1." in out or "not seen: " in out


def test_a_product_is_judged_by_its_likeliest_picture():
    """Per-picture reader answers of one catalog product merge into one: seen if any picture is."""
    from edge_runtime.query.by_product import combine

    base = {"answered_by": "reader", "coverage": {"start": 0.0, "end": 300.0, "covered_fraction": 1.0}, "gaps": []}
    back = {**base, "scores": [0.1, 0.2], "ranked": [1, 0], "status": "not_seen", "message": "no evidence",
            "p_seen": 0.2, "confidence": 0.05}
    front = {**base, "scores": [0.7, 0.1], "ranked": [0, 1], "status": "answered", "p_seen": 0.9, "confidence": 0.6}
    a = combine([back, front], "activity")
    assert a["status"] == "answered" and "message" not in a and (a["p_seen"], a["confidence"]) == (0.9, 0.6)
    assert a["scores"] == [0.7, 0.2] and a["ranked"] == [0, 1]
    both = combine([back, {**back, "p_seen": 0.3}], "activity")
    assert both["status"] == "not_seen" and both["p_seen"] == 0.3 and both["message"] == "no evidence"


def test_window_rows_keep_the_valid_rows_inside_any_window():
    t = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], np.float32)
    valid = np.array([1, 1, 0, 1, 1, 1], np.float32)
    got = reader_query.window_rows(t, valid, [(9.5, 21.0), (39.5, 40.0)])
    np.testing.assert_array_equal(got, [1, 4])  # 20 s is inside but invalid
    np.testing.assert_array_equal(reader_query.window_rows(t, valid, [(100.0, 200.0)]), [0])  # never empty


def test_answers_from_the_windows_rows_equal_answers_from_every_row(streamed):
    """The bundle's answer graph takes any number of rows; the engine feeds only those inside the asked
    windows. Every answer with evidence is the same as from all committed rows."""
    eng, st, video = streamed
    assert eng._window_rows  # the shipped export has a dynamic row axis
    snap = st.committed
    reqs = [eng.check_request(r) for r in _requests(eng, video, sample_queries(video.annotations(), 24,
                                                                                   np.random.default_rng(5)))]
    for r in reqs:
        if r["object_image"] is not None:
            r["object_tokens"], r["object_image"] = eng.encode_images([r["object_image"]])[0], None
    windows = [(r["start"], r["end"]) for r in reqs]
    shape = (eng.tokens_per_frame, eng.token_dim)
    outs = []
    for only in (False, True):
        feed = reader_query.reader_feed(reqs, windows, snap, eng._answer_dtypes, shape, only_windows=only)
        outs.append((len(feed["mem_t"]), {k: np.asarray(v) for k, v in eng.answerer.infer(feed).items()}))
    (n_all, full), (n_some, some) = outs
    assert n_some < n_all
    seen = full["evidence"] > 1e-6
    assert seen.sum() >= len(reqs) // 2
    for k in full:
        # rows summed in another order may round differently in the last bits: times are up to ~600 s
        np.testing.assert_allclose(some[k][seen], full[k][seen], rtol=1e-5, atol=1e-4, err_msg=k)


def test_identical_reader_queries_run_once_and_get_the_same_answers(streamed, monkeypatch):
    """Queries asking the same (one crop sent twice, pixel for pixel) take one answer-graph row; each
    still gets its own k and fps, and a query that differs in anything keeps its own row."""
    eng, st, video = streamed
    crop = video.object_crop(next(iter(video.script.instances)), size=eng.frame_size)
    reqs = [{"type": "time", "start": 0, "end": 300, "activity": 3, "object_image": crop, "k": 2},
            {"type": "object", "start": 20, "end": 200, "activity": 1},
            {"type": "time", "start": 0, "end": 300, "activity": 3, "object_image": crop.copy(), "k": 3},
            {"type": "object", "start": 20, "end": 200, "activity": 1, "fps": 2},
            {"type": "time", "start": 0, "end": 300, "activity": 2, "object_image": crop},
            {"type": "activity", "start": 0, "end": 300, "object_image": crop}]
    alone = [eng.answer(st, [r])[0] for r in reqs]
    rows = []
    real = eng.answerer.infer
    monkeypatch.setattr(eng.answerer, "infer", lambda feed, outputs=None: rows.append(len(feed["q_type"]))
                        or real(feed, outputs))
    together = eng.answer(st, reqs)
    assert rows == [4]
    for a, b in zip(together, alone):
        for key in ("intervals", "boxes", "times", "scores", "p_seen", "confidence", "status"):
            if key in b:
                np.testing.assert_allclose(np.asarray(a[key], float) if key != "status" else 0,
                                           np.asarray(b[key], float) if key != "status" else 0,
                                           rtol=1e-5, atol=1e-5, err_msg=key)
                assert key != "status" or a[key] == b[key]
    assert len(together[0]["intervals"]) == 2 and len(together[2]["intervals"]) == 3
    assert len(together[3]["times"]) != len(together[1]["times"])
