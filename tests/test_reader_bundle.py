"""Bundles with the memory reader: the reader + answer graph pair, the manifest's answers section, and
lvm-export's --reader (--no-reader and the reader's FP16 form: test_export). ``tiny_bundle`` is the
shipped checkpoint exported with its reader (checkpoints/lvm-tiny-reader.safetensors beside
checkpoints/lvm-tiny.safetensors)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_runtime.backends.bundle import BundleError, load_bundle
from edge_runtime.config import resolve_model_config
from edge_runtime.memory.timeline import TimelineSpec
from export.cli import export as cli_export
from export.model.reader import load_reader, save_reader
from export.onnx.reader_graphs import ANSWER, FACTS, READER, graph_module, real_feeds

ort = pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "checkpoints" / "lvm-tiny.safetensors"
READER_FILE = REPO / "checkpoints" / "lvm-tiny-reader.safetensors"
FAST = ["--skip-gate", "--bench-runs", "1", "--calib", "demo://checkout?seed=1&duration=32", "--no-progress",
        "--threads", "1"]


def _manifest(b):
    return json.loads((Path(b) / "manifest.json").read_text())


def _edit(path, fn):
    m = _manifest(path)
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _one_line(msg: str) -> str:
    assert "\n" not in msg.strip() and "Traceback" not in msg and len(msg) < 400, msg
    return msg


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture()
def copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_bundle_loads_with_both_graphs_and_kind_reader(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert list(b.graphs) == ["backbone", "sampler", "heads", "reader", "answer"]
    assert b.answers_kind == "reader"
    r = b.reader
    _, _, meta = load_reader(READER_FILE, resolve_model_config("lvm-tiny"))
    assert r["format"] == "lvm-reader/1" and r["config"] == meta["reader_config"]
    # with its timeline track, the answers read it and carry the calibration fitted that way
    cal = meta["timeline"]["calibration"] if b.timeline is not None else meta["calibration"]
    assert r["prior"] == pytest.approx(meta["prior"]) and r["not_seen_below"] == 0.5
    assert r["prior_weight"] == pytest.approx(cal["prior_weight"])
    assert r["trained"] == meta["train"]
    assert set(r["calibration"]) == {"activity", "object", "time"}
    assert all(r["calibration"][t]["seen"] == cal[t]["seen"] for t in r["calibration"])
    import hashlib
    assert r["file_sha256"] == hashlib.sha256(READER_FILE.read_bytes()).hexdigest()
    # the graphs' declared axes: streams for the reader, queries for the answer step
    E, C, K, S = r["config"]["embed"], b.cfg.heads.num_activities, r["config"]["ranked"], r["config"]["keyframes"]
    shape = {t.name: t.shape for g in ("reader", "answer") for t in b.graphs[g].outputs}
    assert shape["ident"] == ("streams", b.cfg.stream.memory_tokens, E)
    assert shape["activity_scores"] == ("queries", C) and shape["keyboxes"] == ("queries", K, S, 4)
    # the exporter's own parity, on example inputs and the calibration stream's memories
    par = _manifest(tiny_bundle)["parity"]
    for g in ("reader", "answer"):
        assert par[g]["max_abs_scaled"] <= 1e-4 and par[g]["calls"] >= 2, (g, par[g])
    assert par["reader"]["streams_batch"]["max_abs"] <= 1e-4 and par["reader"]["streams_batch"]["streams"] >= 3
    assert par["frames"]["reader_calls"] >= 1
    lat = _manifest(tiny_bundle)["latency_cpu"]
    assert lat["reader"]["median_ms"] > 0 and lat["answer"]["median_ms"] > 0


def test_runners_open_the_reader_pair(tiny_bundle):
    from edge_runtime.backends.bundle_runners import open_runners

    runners, backend, _ = open_runners(load_bundle(tiny_bundle), "onnxruntime", 1)
    try:
        assert set(runners) == {"backbone", "sampler", "heads", "reader", "answer"} and backend == "onnxruntime"
    finally:
        for r in runners.values():
            r.deactivate()


def test_onnx_matches_pytorch_on_real_memories(tiny_bundle):
    """Independently of the exporter's numbers: a real stream through the bundle's own backbone and
    sampler, its committed memories read by the ONNX reader and by PyTorch, queries answered by both."""
    from export.onnx.calibration import build_feeds, read_frames
    from export.onnx.reader_graphs import ReaderFile

    torch.set_num_threads(1)
    cfg = resolve_model_config("lvm-tiny")
    reader, answer, meta = load_reader(READER_FILE, cfg)
    bundle = load_bundle(tiny_bundle, verify=False)
    spec = TimelineSpec.from_manifest(bundle.timeline, cfg) if bundle.timeline is not None else None
    rf = ReaderFile(READER_FILE, str(READER_FILE), "", reader, answer, meta, spec)
    cal = read_frames("demo://checkout?seed=3&duration=48", cfg, max_frames=48)
    feeds = build_feeds(cal, cfg, tiny_bundle, threads=1, head_every=1)
    assert len(feeds.heads) >= 2
    r_feeds, a_feeds = real_feeds(feeds.heads, tiny_bundle / "reader.onnx", threads=1, timeline=spec)
    assert any(f["mem_valid"].sum() > 100 for f in r_feeds)  # real, filled memories
    sess_r, sess_a = _session(tiny_bundle / "reader.onnx"), _session(tiny_bundle / "answer.onnx")
    r_mod, a_mod = graph_module(rf, READER), graph_module(rf, ANSWER)
    # all memories in ONE reader call (streams axis) vs PyTorch
    stacked = {n: np.concatenate([f[n] for f in r_feeds]) for n in READER.inputs}
    got = sess_r.run(list(FACTS), stacked)
    with torch.no_grad():
        want = r_mod(*(torch.from_numpy(stacked[n]) for n in READER.inputs))
    for name, g, w in zip(FACTS, got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0, err_msg=name)
    for af in a_feeds:
        for q in (1, len(af["q_type"])):  # the queries axis at one and at a full batch
            feed = {k: (v[:q] if k.startswith("q_") else v) for k, v in af.items()}
            got = sess_a.run(list(ANSWER.outputs), feed)
            with torch.no_grad():
                want = a_mod(*(torch.from_numpy(feed[n]) for n in ANSWER.inputs))
            for name, g, w in zip(ANSWER.outputs, got, want):
                assert g.shape[0] == q
                scale = max(1.0, float(np.abs(w.numpy()).max()))
                assert np.abs(g - w.numpy()).max() <= 1e-4 * scale, name
    assert {int(t) for af in a_feeds for t in af["q_type"]} == {0, 1, 2}


@pytest.mark.parametrize("mutate, expect", [
    (lambda m: m["answers"]["reader"]["config"].update(embed=16), "a bundle whose reader does not match its config"),
    (lambda m: m["answers"]["reader"]["config"].update(ranked=5), "a bundle whose reader does not match its config"),
    (lambda m: m["answers"]["reader"]["config"].update(keyframes=8), "a bundle whose reader does not match its config"),
    (lambda m: m["answers"]["reader"].update(prior=[0.5] * 3), "a bundle whose reader does not match its config"),
    (lambda m: m["graphs"]["answer"]["outputs"][0].update(shape=["queries", 7]),
     "a bundle whose reader does not match its config"),
    (lambda m: m["graphs"].pop("answer"), "lacks the answer graph"),
    (lambda m: m["answers"].update(kind="heads"), "lists the reader and answer graph(s) but answers.kind is heads"),
    (lambda m: m["answers"].update(kind="oracle"), "answers.kind 'oracle' is not one of heads, reader"),
    (lambda m: m["answers"].pop("reader"), "answers.reader is missing"),
    (lambda m: m["answers"]["reader"]["calibration"].pop("time"), "answers.reader.calibration needs"),
    (lambda m: m["answers"]["reader"]["calibration"]["time"].update(
        right_model={"features": ["support", "margin"], "weights": [1.0, 1.0], "bias": 0.0}),
     "answers.reader.calibration.time: right_model must read the features"),
    (lambda m: m["answers"]["reader"]["calibration"]["object"].update(
        right_model={"features": ["support", "next_support", "log1p_length_s"], "weights": [1.0, "x", 1.0], "bias": 0}),
     "answers.reader.calibration.object: right_model needs 3 finite weights and a finite bias"),
    (lambda m: m["answers"]["reader"]["calibration"]["time"].update(
        right_model={"features": ["support", "next_support", "log1p_length_s"], "weights": [1.0, 0.0, 1.0], "bias": 0}),
     "answers.reader.calibration.time: right_model needs its right curve"),
    (lambda m: m["answers"]["reader"]["calibration"]["time"].update(seen_model={"by_activity": [[0.0, 1.0]] * 3,
                                                                               "seen": [[0.0, 1.0], [0.0, 1.0]]}),
     "answers.reader.calibration.time: seen_model needs an [intercept, slope] pair for each of the model's 8 activities"),
    (lambda m: m["answers"]["reader"]["calibration"]["object"].update(seen_model={"by_activity": [[0.0, 1.0]] * 8}),
     "answers.reader.calibration.object: seen_model needs its seen curve"),
    (lambda m: m["answers"]["reader"]["calibration"]["activity"].update(seen_model={"by_activity": [[0.0, 1.0]] * 8}),
     "answers.reader.calibration.activity: seen_model is for object and time answers"),
    (lambda m: m["answers"]["reader"]["calibration"]["object"].update(not_seen_below=1.5),
     "answers.reader.calibration.object.not_seen_below must be a number in 0..1, got 1.5"),
    (lambda m: m["graphs"]["reader"]["outputs"].pop(), "reader graph lacks output(s) span"),
    (lambda m: m["answers"]["reader"].update(prior_weight_by_window=[[300, 1.0], [0, 0.3]]),
     "answers.reader.prior_weight_by_window needs [window seconds > 0, weight >= 0] pairs"),
    (lambda m: m["answers"]["reader"].update(prior_weight_by_window={"300": 1.0}),
     "answers.reader.prior_weight_by_window needs [window seconds > 0, weight >= 0] pairs"),
])
def test_manifest_disagreeing_with_the_reader_graphs_is_one_line(copy, mutate, expect):
    _edit(copy, mutate)
    with pytest.raises(BundleError) as e:
        load_bundle(copy, verify=False)
    assert expect in _one_line(str(e.value))


def test_heads_bundle_without_kind_still_loads(copy):
    """A bundle written before answers.kind existed: heads, no reader graphs."""
    def old(m):
        m["answers"] = {"object_extent": True}
        for g in ("reader", "answer"):
            m["graphs"].pop(g)
    _edit(copy, old)
    b = load_bundle(copy)
    assert b.answers_kind == "heads" and b.reader is None and list(b.graphs) == ["backbone", "sampler", "heads"]


def _bad_export(capsys, tmp_path, *extra):
    rc = cli_export.main(["--precision", "fp32", "--checkpoint", str(SHIPPED), "--out", str(tmp_path / "b"),
                          *FAST, *map(str, extra)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert not (tmp_path / "b").exists()
    return _one_line(err)


def test_a_file_that_is_not_a_reader_exits_2(capsys, tmp_path):
    err = _bad_export(capsys, tmp_path, "--reader", SHIPPED)  # the heads checkpoint given as a reader
    assert "not a reader file" in err and "lvm-reader/1" in err
    assert "no such file" in _bad_export(capsys, tmp_path, "--reader", tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    assert "not a readable safetensors file" in _bad_export(capsys, tmp_path, "--reader", junk)


def _shipped_reader_with(tmp_path, **meta_changes):
    """The shipped reader's weights saved with some of its metadata changed."""
    reader, answer, meta = load_reader(READER_FILE, resolve_model_config("lvm-tiny"))
    other = tmp_path / "other-reader.safetensors"
    save_reader(other, reader, answer, {**{k: v for k, v in meta.items() if k not in ("format", "reader_config")},
                                        **meta_changes})
    return other


def test_a_reader_for_another_config_exits_2(capsys, tmp_path):
    err = _bad_export(capsys, tmp_path, "--reader", _shipped_reader_with(tmp_path, config_sha256="0" * 64))
    assert "reader trained for model config 000000000000" in err


def test_a_reader_trained_on_another_checkpoints_memories_exits_2(capsys, tmp_path):
    """A run folder retrained (or a run cut short) keeps the old reader beside the new checkpoint: its
    recorded checkpoint hash tells them apart."""
    err = _bad_export(capsys, tmp_path, "--reader", _shipped_reader_with(tmp_path, checkpoint_sha256="a" * 64))
    assert "trained on the memories of another checkpoint (sha256 aaaaaaaaaaaa" in err and "--no-reader" in err


def test_fp16_budget_of_the_reader_graphs():
    from export.onnx.reader_graphs import fp16_failure

    def par(mean, mx, scale):
        return {"outputs": {"intervals": {"mean_abs": mean, "max_abs": mx, "ref_max_abs": scale}}}

    assert fp16_failure(par(3e-5, 3e-4, 359.0)) is None  # what lvm-tiny's FP16 answer graph measures
    assert "'intervals'" in fp16_failure(par(3e-5, 30.0, 359.0))  # one anchor moved an interval by 30 s
    assert fp16_failure(par(0.01, 0.01, 0.5)) is not None  # below unit scale, the bound is absolute
    assert "batched call" in fp16_failure({"outputs": {}, "streams_batch": {"max_abs": 1.0}})


def test_the_checkpoints_own_reader_for_another_config_exits_2(capsys, tmp_path):
    """The default lookup finds a companion reader that does not fit: refused, saying how to go on."""
    cfg = resolve_model_config("lvm-tiny")
    shutil.copyfile(SHIPPED, tmp_path / "mine.safetensors")
    reader, answer, meta = load_reader(READER_FILE, cfg)
    save_reader(tmp_path / "mine-reader.safetensors", reader, answer,
                {**{k: v for k, v in meta.items() if k not in ("format", "reader_config")}, "config_sha256": "f" * 64})
    rc = cli_export.main(["--precision", "fp32", "--checkpoint", str(tmp_path / "mine.safetensors"),
                          "--out", str(tmp_path / "b"), *FAST])
    err = _one_line(capsys.readouterr().err.strip())
    assert rc == 2 and "mine-reader.safetensors (the checkpoint's reader)" in err and "--no-reader" in err, err


def test_fp32_failure_names_the_output_over_its_bound():
    """The message names the output that breaks the bound with its own difference and scale, not the
    graph's largest difference (here the intervals', in seconds, which is within its bound)."""
    from export.onnx.parity import fp32_failures

    p = {"answer": {"max_abs": 2.87e-3, "max_abs_scaled": 1.5e-3, "outputs": {
        "intervals": {"max_abs": 2.87e-3, "max_abs_scaled": 8e-6, "ref_max_abs": 359.0},
        "keyboxes": {"max_abs": 1.5e-3, "max_abs_scaled": 1.5e-3, "ref_max_abs": 0.9}}}}
    (msg,) = fp32_failures(p)
    assert "keyboxes" in msg and "1.50e-03" in msg and "2.87e-03" not in msg


def test_keyboxes_have_their_own_fp32_bound():
    """Box weights depend on times in seconds since the stream began: 1.5e-4 is float32 rounding there,
    1.5e-3 is not."""
    from export.onnx.parity import fp32_failures

    def answer(kb):
        return {"answer": {"max_abs": kb, "max_abs_scaled": kb, "outputs": {
            "intervals": {"max_abs": 1e-3, "max_abs_scaled": 3e-6, "ref_max_abs": 359.0},
            "keyboxes": {"max_abs": kb, "max_abs_scaled": kb, "ref_max_abs": 0.9},
            "evidence": {"max_abs": 2e-5, "max_abs_scaled": 2e-5, "ref_max_abs": 0.7}}}}
    assert fp32_failures(answer(1.5e-4)) == []
    (msg,) = fp32_failures(answer(1.5e-3))
    assert "keyboxes max abs diff 1.50e-03 > 0.001" in msg
    bad = answer(1.5e-4)
    bad["answer"]["outputs"]["evidence"].update(max_abs=2e-4, max_abs_scaled=2e-4)
    (msg,) = fp32_failures(bad)
    assert "evidence" in msg and "> 0.0001" in msg


def test_answer_parity_compares_ranked_answers_clear_of_a_tie():
    """An answer that PyTorch chose at a near-tie may rank differently in ONNX Runtime: its intervals
    and keyboxes are left out of the comparison, the rest still count, and too many ties fail."""
    from export.onnx.parity import dense_diff, fp32_failures
    from export.onnx.reader_graphs import ANSWER

    ref = [np.zeros((2, 3)), np.zeros((2, 2, 3)), np.zeros((2, 2, 4, 4)), np.zeros(2)]
    out = [r.copy() for r in ref]
    out[1][0, 1] = 30.0  # rank 2 of query 0: another event's interval
    out[2][0, 1] = 0.5
    decided = np.array([[True, False], [True, True]])
    d = dense_diff(ANSWER, {}, ref, out, decided)
    assert d["intervals"]["max_abs"] == 0.0 and d["keyboxes"]["max_abs"] == 0.0
    assert dense_diff(ANSWER, {}, ref, out)["keyboxes"]["max_abs"] == 0.5
    out[3][1] = 0.3  # evidence is no ranked output: always compared
    assert dense_diff(ANSWER, {}, ref, out, decided)["evidence"]["max_abs"] == pytest.approx(0.3)

    def parity(tied):
        return {"answer": {"max_abs": 0.0, "max_abs_scaled": 0.0, "outputs": {}, "ranked_answers": 100,
                           "ranked_at_tie": tied, "ranked_unsupported": 300}}
    assert fp32_failures(parity(5)) == []  # answers with no support are not ties
    (msg,) = fp32_failures(parity(40))
    assert "40 of 100 ranked answers with support at a near-tie" in msg
