"""The timeline track: clips cut into reader rows and thinned to each frame's strongest token, a FIFO of
constant size that keeps the newest, committed beside the memory and read by the answer step, in
snapshots and status; bundles whose timeline does not fit are refused in one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends.bundle import LONGEST_WINDOW_S, BundleError, load_bundle
from edge_runtime.checkout import CheckoutVideo, sample_queries
from edge_runtime.checkout.queries import engine_request
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.stream_state import MissingTimeline
from edge_runtime.memory.timeline import FACT_NAMES, Timeline, TimelineSpec, clip_rows, select
from edge_runtime.query.reader_query import tracks_read

REPO = Path(__file__).resolve().parent.parent
SPEC = TimelineSpec(per_frame=2, horizon_s=10.0, fps=1.0, memory_tokens=12, tokens_per_frame=4)  # rows of 3 frames


def _facts(rows: dict, rng) -> dict:
    R, m = rows["mem_valid"].shape
    return {"ident": rng.normal(size=(R, m, 3)).astype(np.float32), "act_logits": rng.normal(size=(R, m, 2)),
            "event_logit": rng.normal(size=(R, m)).astype(np.float32), "boxes": rng.random((R, m, 4)),
            "span": rng.random((R, m, 2))}


def test_a_clip_becomes_rows_of_whole_frames_and_each_frame_keeps_its_strongest_tokens():
    rng = np.random.default_rng(0)
    T, P, d = 7, 4, 5
    tokens = rng.normal(size=(T, P, d)).astype(np.float32)
    times = np.arange(T, dtype=np.float64) + 100.0
    rows = clip_rows(tokens, times, 5, SPEC)  # frames 5 and 6 are padding
    assert rows["mem"].shape == (3, 12, d)  # 7 frames in rows of 3
    np.testing.assert_array_equal(rows["mem"][1, :4], tokens[3])
    np.testing.assert_array_equal(rows["mem_p"][0], np.tile(np.arange(4), 3))
    assert rows["mem_valid"].sum() == 5 * P and rows["mem_valid"][1, 8:].sum() == 0 and rows["mem_valid"][2].sum() == 0
    facts = _facts(rows, rng)
    kept = select(facts, rows, SPEC)
    assert len(kept["t"]) == 5 * SPEC.per_frame and np.all(np.diff(kept["t"]) >= 0)
    assert set(kept) == set(FACT_NAMES) | {"t"}
    # row 0 keeps its 6 best tokens (2 per frame x 3 frames) by event logit: no better one is left out
    row0 = np.sort(facts["event_logit"][0])[::-1][:6]
    np.testing.assert_allclose(np.sort(kept["event_logit"][kept["t"] < 103])[::-1], row0)


def test_the_fifo_is_constant_in_size_keeps_the_newest_and_round_trips():
    shapes = {"ident": ((3,), np.float32), "act_logits": ((2,), np.float32), "event_logit": ((), np.float32),
              "boxes": ((4,), np.float32), "span": ((2,), np.float32)}
    tl = Timeline(SPEC, shapes)
    assert SPEC.capacity == 20 and tl.nbytes == 20 * (3 + 2 + 1 + 4 + 2 + 2) * 4
    size = tl.nbytes
    rng = np.random.default_rng(1)
    for start in range(0, 40, 4):  # 4 frames x 2 tokens a push: 80 tokens through a FIFO of 20
        t = np.repeat(np.arange(start, start + 4, dtype=np.float32), 2)
        tl.push({"ident": rng.normal(size=(8, 3)), "act_logits": rng.normal(size=(8, 2)),
                 "event_logit": rng.normal(size=8), "boxes": rng.random((8, 4)), "span": rng.random((8, 2)), "t": t})
    assert tl.nbytes == size
    assert tl.span() == (30.0, 39.0) and tl.status()["filled"] == 20 and tl.status()["fill"] == 1.0
    back = Timeline(SPEC, shapes)
    back.load_state_dict(tl.state_dict())
    assert back.head == tl.head and back.span() == tl.span()
    np.testing.assert_array_equal(back.facts["ident"], tl.facts["ident"])
    with pytest.raises(ValueError, match="no timeline .*bundle without the track"):
        Timeline(SPEC, shapes).load_state_dict({"reader.ident": np.zeros(3)})
    small = TimelineSpec(per_frame=1, horizon_s=10.0, fps=1.0, memory_tokens=12, tokens_per_frame=4)
    with pytest.raises(ValueError, match="holds 20 tokens, this bundle's 10|has shape"):
        Timeline(small, shapes).load_state_dict(tl.state_dict())


def test_which_tracks_an_answer_read():
    class Snap:
        timeline_span = (600.0, 2400.0)
    assert tracks_read(Snap, (2100.0, 2400.0)) == ["memory", "timeline"]
    assert tracks_read(Snap, (0.0, 300.0)) == ["memory"]  # older than the horizon: the memory alone
    Snap.timeline_span = None
    assert tracks_read(Snap, (0.0, 300.0)) == ["memory"]


@pytest.fixture(scope="module")
def streamed_timeline(tiny_bundle):
    if load_bundle(tiny_bundle, verify=False).timeline is None:
        pytest.skip("the shipped reader file carries no timeline calibration")
    with Engine(tiny_bundle, threads=1) as eng:
        video = CheckoutVideo(seed=1000042, duration_s=240.0, size=eng.frame_size)
        ts, fr = zip(*video.frames(eng.fps, 0.0, 200.0))
        st = eng.new_stream()
        eng.ingest(st, np.stack(fr), np.asarray(ts))
        eng.flush(st)
        yield eng, st, video


def test_commits_carry_the_timeline_beside_the_memory(streamed_timeline):
    eng, st, video = streamed_timeline
    c = st.committed
    m, L = eng.cfg.stream.memory_tokens, eng.timeline.capacity
    k = eng.timeline.per_frame
    assert k == 2 and L == 1800 * k and eng.timeline.horizon_s >= LONGEST_WINDOW_S
    assert all(c.facts[n].shape[0] == m + L for n in FACT_NAMES) and c.fact_t.shape == (m + L,)
    # per_frame tokens per frame streamed, from each row of 8 frames per_frame x its frames; memory rows first
    held = c.fact_t[m:][c.fact_valid[m:] > 0]
    assert len(held) == k * st.frames_processed == k * 200
    rows = np.floor(held * eng.fps / eng.timeline.frames_per_row)
    assert np.all(np.bincount(rows.astype(int)) == k * eng.timeline.frames_per_row)  # 200 frames = 25 rows of 8
    assert np.all(np.isin(np.round(held, 3), np.round(np.arange(200) / eng.fps, 3)))
    np.testing.assert_array_equal(c.fact_t[:m], c.memory["mem_t"][0])
    status = st.status()["timeline"]
    assert status["filled"] == k * 200 and status["tokens"] == L
    assert status["newest"] == pytest.approx(float(held.max())) and status["oldest"] == pytest.approx(float(held.min()))
    assert 192.0 <= status["newest"] <= 199.0  # a token of the last row of 8 frames
    reqs = [engine_request(q, video.object_crop(q.instance_id, size=eng.frame_size)
                           if q.type != "object" and q.instance_id is not None else None)
            for q in sample_queries(video.annotations(), 6, np.random.default_rng(2))]
    for a in eng.answer(st, reqs):
        assert a["read_from"] == ["memory", "timeline"] and a["answered_by"] == "reader"


def test_state_is_constant_in_size_and_snapshots_keep_the_timeline(streamed_timeline):
    eng, st, video = streamed_timeline
    size = st.memory_bytes
    other = eng.new_stream()
    other.load_state_dict(st.state_dict())
    assert other.memory_bytes == size
    c, o = st.committed, other.committed
    for n in FACT_NAMES:
        np.testing.assert_array_equal(o.facts[n], c.facts[n])
    np.testing.assert_array_equal(o.fact_t, c.fact_t)
    assert other.status()["timeline"] == st.status()["timeline"]
    ts, fr = zip(*video.frames(eng.fps, 200.0, 232.0))
    eng.ingest(other, np.stack(fr), np.asarray(ts))
    assert other.memory_bytes == size
    assert other.status()["timeline"]["filled"] == 232 * eng.timeline.per_frame


@pytest.fixture(scope="module")
def no_timeline_bundle(tiny_bundle, tmp_path_factory):
    """The test bundle's checkpoint and reader, exported as it is (conftest) but with --no-timeline."""
    if load_bundle(tiny_bundle, verify=False).timeline is None:
        pytest.skip("the shipped reader file carries no timeline calibration")
    from export.cli import export as cli_export

    out = tmp_path_factory.mktemp("no-timeline") / "bundle"
    # in-process: the test bundle's graphs and OOD statistics are reused (conftest); parity still runs
    rc = cli_export.main(["--precision", "fp32", "--out", str(out), "--skip-gate", "--bench-runs", "1",
                          "--calib", "demo://checkout?seed=1&duration=32", "--no-progress", "--no-events",
                          "--no-timeline"])
    assert rc == 0
    return out


@pytest.mark.slow  # a whole export of the --no-timeline variant (no_timeline_bundle; the next test shares it)
def test_a_bundle_without_the_track_loads_and_its_snapshots_are_refused_by_one_with_it(
        no_timeline_bundle, streamed_timeline):
    eng, _, video = streamed_timeline
    with Engine(no_timeline_bundle, threads=1) as plain:
        assert plain.timeline is None and plain.answers_kind == "reader"
        ts, fr = zip(*video.frames(plain.fps, 0.0, 32.0))
        plain_st = plain.new_stream()
        plain.ingest(plain_st, np.stack(fr), np.asarray(ts))
        assert plain_st.committed.facts["ident"].shape[0] == plain.cfg.stream.memory_tokens
        q = next(q for q in sample_queries(video.annotations(), 12, np.random.default_rng(0)) if q.type == "activity")
        got = plain.answer(plain_st, [engine_request(q, video.object_crop(q.instance_id, size=plain.frame_size))])[0]
        assert got["read_from"] == ["memory"]
        with pytest.raises(MissingTimeline) as err:
            eng.new_stream().load_state_dict(plain_st.state_dict())
        assert "\n" not in str(err.value) and "no timeline" in str(err.value)


@pytest.mark.slow  # no_timeline_bundle
def test_a_snapshot_without_the_track_is_refused_by_a_run_with_it_and_kept_as_it_is(
        no_timeline_bundle, tiny_bundle, tmp_path):
    from edge_runtime.serve.pipeline import Runtime
    from edge_runtime.serve.streams import StreamError

    with Engine(no_timeline_bundle, threads=1) as plain:
        rt = Runtime(plain, state_dir=tmp_path)
        rt.start("demo://checkout?seed=1&duration=32")
        assert rt.wait(120)
        rt.stop()
    before = (tmp_path / "snapshot.npz").read_bytes()
    with Engine(tiny_bundle, threads=1) as with_track:
        if with_track.timeline is None:
            pytest.skip("the test bundle keeps no timeline")
        with pytest.raises(StreamError) as err:
            Runtime(with_track, state_dir=tmp_path)
    assert err.value.status == 409 and "run the bundle without the timeline that wrote it" in str(err.value)
    assert (tmp_path / "snapshot.npz").read_bytes() == before and not list(tmp_path.glob("*.corrupt-*"))


def _with_manifest(src: Path, dest: Path, edit) -> Path:
    shutil.copytree(src, dest)
    m = json.loads((dest / "manifest.json").read_text())
    edit(m)
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_a_timeline_that_does_not_fit_is_refused_in_one_line(tiny_bundle, tmp_path):
    if load_bundle(tiny_bundle, verify=False).timeline is None:
        pytest.skip("the shipped reader file carries no timeline calibration")

    def more_tokens(m):
        m["answers"]["reader"]["timeline"]["tokens"] = 900

    def short(m):
        tl = m["answers"]["reader"]["timeline"]
        tl.update(horizon_s=600.0, tokens=600 * tl["per_frame"])

    for name, edit, words in (("tokens", more_tokens, "timeline does not match its config"),
                              ("short", short, "cannot hold the longest query window")):
        with pytest.raises(BundleError) as err:
            load_bundle(_with_manifest(tiny_bundle, tmp_path / name, edit), verify=False)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_lvm_export_refuses_a_timeline_shorter_than_the_longest_window(tmp_path, capsys):
    from export.cli import export as cli_export
    from export.model.reader import load_reader, save_reader
    from export.model.checkpoint import load_checkpoint

    net, _ = load_checkpoint(REPO / "checkpoints" / "lvm-tiny.safetensors")
    reader, answer, meta = load_reader(REPO / "checkpoints" / "lvm-tiny-reader.safetensors", net.cfg)
    meta["timeline"] = {"per_frame": 1, "horizon_s": 600.0, "calibration": meta["calibration"]}
    meta.pop("reader_config", None)
    meta.pop("format", None)
    path = tmp_path / "short-reader.safetensors"
    save_reader(path, reader, answer, meta)
    rc = cli_export.main(["--precision", "fp32", "--reader", str(path), "--out", str(tmp_path / "b"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "cannot hold the longest query window (1800 s)" in err and "--no-timeline" in err
    assert not (tmp_path / "b").exists()


def test_the_timeline_of_a_video_is_read_in_calls_sized_by_the_attention_and_chunking_changes_nothing():
    """Calibration reads a whole video's timeline rows: lvm-edge's 2,950-token rows go one a call
    (30 in one call took 15.7 GB), lvm-tiny's 32; how the rows are split does not change the track."""
    import torch

    import export.train.timeline_tokens as tt
    from edge_runtime.config import load_model_config
    from export.model.reader import MemoryReader, ReaderConfig

    tiny, edge = (load_model_config(REPO / "configs" / "models" / f"{n}.yaml") for n in ("lvm-tiny", "lvm-edge"))
    assert tt.reader_rows_per_call(tiny, 4) == 32 and tt.reader_rows_per_call(edge, 4) == 1
    assert tt.reader_rows_per_call(tiny, 4, budget=1) == 1  # never zero
    torch.manual_seed(0)
    reader = MemoryReader(tiny, ReaderConfig()).eval()
    rng = np.random.default_rng(0)
    n = 3 * tiny.stream.clip_frames
    tokens = torch.from_numpy(rng.normal(size=(n, tiny.backbone.tokens_per_frame, tiny.backbone.dim)).astype(np.float32))
    times = np.arange(n, dtype=np.float64)
    basis = torch.from_numpy(rng.normal(size=(1, tiny.svd.n_components, tiny.backbone.dim)).astype(np.float32))
    sv = torch.rand(1, tiny.svd.n_components)
    spec = tt.default_timeline(tiny)
    whole = tt.video_timeline(reader, tokens, times, basis, sv, tiny, spec)
    one_by_one = tt.video_timeline(reader, tokens, times, basis, sv, tiny, spec, call_budget=1)  # a row a call
    assert len(whole["t"]) == 2 * n
    for k in whole:
        np.testing.assert_allclose(one_by_one[k].numpy(), whole[k].numpy(), rtol=1e-4, atol=1e-5)
