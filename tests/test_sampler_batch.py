"""The sampler serves many camera streams in one call: its graph has a batch axis ``n_streams`` (one
row per stream), each row is computed on its own, and bundles from before (a fixed batch of 1)
still load. Uses the session's tiny bundle; nothing here exports again."""
import json
import shutil

import numpy as np
import onnx
import pytest

from edge_runtime.backends.bundle import load_bundle
from edge_runtime.file_hash import sha256_file
from edge_runtime.memory.clip_step import clip_inputs

ort = pytest.importorskip("onnxruntime")

MEMORY = ("mem", "mem_t", "mem_p", "mem_valid")
CLIP = ("clip", "clip_t", "clip_p")
OUTPUTS = ("new_mem", "new_mem_t", "new_mem_p", "new_mem_valid")


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _kept(t, p, valid) -> set:
    return {(a, b) for a, b, v in zip(t.tolist(), p.tolist(), valid.tolist()) if v > 0.5}


def _clip(cfg, rng, t0: float) -> dict:
    T, P, d = cfg.stream.clip_frames, cfg.backbone.tokens_per_frame, cfg.backbone.dim
    times = (t0 + np.arange(T) / cfg.stream.fps).astype(np.float32)
    return dict(zip(CLIP, clip_inputs(rng.standard_normal((T, P, d)).astype(np.float32), times)))


def _streams(cfg, sess, n: int):
    """``n`` streams at different stages: stream i has already folded i clips (stream 0 starts empty),
    each its own footage at its own time; -> (memory feeds, the next clip of each)."""
    m, d = cfg.stream.memory_tokens, cfg.backbone.dim
    clip_s = cfg.stream.clip_frames / cfg.stream.fps
    rng = np.random.default_rng(3)
    mems, clips = [], []
    for i in range(n):
        mem = {"mem": np.zeros((1, m, d), np.float32), "mem_t": np.zeros((1, m), np.float32),
               "mem_p": np.zeros((1, m), np.int64), "mem_valid": np.zeros((1, m), np.float32)}
        t0 = 100.0 * i
        for _ in range(i):
            out = sess.run(list(OUTPUTS), {**mem, **_clip(cfg, rng, t0)})
            mem = dict(zip(MEMORY, out))
            t0 += clip_s
        mems.append(mem)
        clips.append(_clip(cfg, rng, t0))
    return mems, clips


def test_bundle_sampler_has_a_stream_axis(tiny_bundle):
    b = load_bundle(tiny_bundle)
    g = b.graphs["sampler"]
    assert [t.shape[0] for t in g.inputs + g.outputs] == ["n_streams"] * 11
    assert b.sampler_batches_streams
    model = onnx.load(str(g.onnx), load_external_data=False)
    for vi in list(model.graph.input) + list(model.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "n_streams", vi.name
    # the rest of the memory's shape stays fixed, and the heads still read one memory
    assert g.inputs[0].shape[1:] == (b.cfg.stream.memory_tokens, b.cfg.backbone.dim)
    assert b.graphs["heads"].inputs[0].shape[0] == 1
    sb = b.manifest["parity"]["sampler"]["streams_batch"]  # checked by lvm-export on its parity inputs
    assert sb["streams"] >= 2 and sb["topm_recall"] == 1.0 and sb["kept_feature_max_abs"] == 0.0


def test_three_streams_in_one_call_match_each_alone(tiny_bundle):
    b = load_bundle(tiny_bundle)
    sess = _session(b.graphs["sampler"].onnx)
    mems, clips = _streams(b.cfg, sess, 3)
    alone = [sess.run(list(OUTPUTS), {**mem, **clip}) for mem, clip in zip(mems, clips)]
    batch = {n: np.concatenate([{**mem, **clip}[n] for mem, clip in zip(mems, clips)]) for n in MEMORY + CLIP}
    together = sess.run(list(OUTPUTS), batch)
    assert [o.shape[0] for o in together] == [3] * 4
    kept = []
    for i, single in enumerate(alone):
        row = [o[i : i + 1] for o in together]
        for a, c in zip(single, row):
            np.testing.assert_allclose(c, a, rtol=0, atol=1e-4)
        assert _kept(row[1][0], row[2][0], row[3][0]) == _kept(single[1][0], single[2][0], single[3][0])
        kept.append(int(single[3].sum()))
    # the three really were different streams: an empty memory keeps only clip tokens, fuller ones differ
    assert len({frozenset(np.unique(a[1]).tolist()) for a in alone}) == 3 and min(kept) > 0


def _static_copy(tiny_bundle, dest):
    """A copy of the bundle as exported before streams: the sampler's batch axis fixed at 1 in the
    graph and in the manifest (its hash updated, as lvm-export wrote it)."""
    shutil.copytree(tiny_bundle, dest)
    model = onnx.load(str(dest / "sampler.onnx"))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1  # replaces the dim_param
    onnx.save(model, str(dest / "sampler.onnx"))
    mpath = dest / "manifest.json"
    man = json.loads(mpath.read_text())
    g = man["graphs"]["sampler"]
    for t in g["inputs"] + g["outputs"]:
        t["shape"][0] = 1
    g["sha256"] = sha256_file(dest / "sampler.onnx")
    mpath.write_text(json.dumps(man))
    return dest


def test_bundle_from_before_streams_still_loads(tiny_bundle, tmp_path):
    old = load_bundle(_static_copy(tiny_bundle, tmp_path / "old"))
    g = old.graphs["sampler"]
    assert [t.shape[0] for t in g.inputs] == [1] * 7 and not old.sampler_batches_streams
    # and it computes what the batched graph computes for one stream
    new = load_bundle(tiny_bundle)
    mems, clips = _streams(new.cfg, _session(new.graphs["sampler"].onnx), 2)
    feed = {**mems[1], **clips[1]}
    before = _session(g.onnx).run(list(OUTPUTS), feed)
    for a, c in zip(before, _session(new.graphs["sampler"].onnx).run(list(OUTPUTS), feed)):
        np.testing.assert_array_equal(a, c)


def test_dynamic_int8_sampler_is_not_batched(tiny_bundle, tmp_path):
    """Per-call activation quantisation takes its scale over the whole batch: streams would change
    one another's memory, so such a bundle is run one stream per call."""
    dest = shutil.copytree(tiny_bundle, tmp_path / "int8")
    mpath = dest / "manifest.json"
    man = json.loads(mpath.read_text())
    man["graphs"]["sampler"]["quantization"] = {"mode": "dynamic"}
    mpath.write_text(json.dumps(man))
    assert not load_bundle(dest).sampler_batches_streams


def test_fp16_and_static_int8_keep_the_axis_and_row_independence(tiny_bundle, tmp_path):
    """The reduced-precision graphs derive from the FP32 ONNX and are calibrated on batch-1 feeds."""
    from export.onnx.int8_quant import STATIC_OPS_TRANSFORMER, activation_matmuls, quantize_int8_static
    from export.onnx.precision import convert_fp16, prepare, selection_path

    b = load_bundle(tiny_bundle)
    src = b.graphs["sampler"].onnx
    sess = _session(src)
    mems, clips = _streams(b.cfg, sess, 3)
    feeds = [{**mem, **clip} for mem, clip in zip(mems, clips)]
    fp16, _ = convert_fp16(onnx.load(str(src)))
    onnx.save(fp16, str(tmp_path / "fp16.onnx"))
    prepared = prepare(onnx.load(str(src)))
    onnx.save(prepared, str(tmp_path / "prepared.onnx"))
    quantize_int8_static(tmp_path / "prepared.onnx", tmp_path / "int8.onnx", feeds[:2], op_types=STATIC_OPS_TRANSFORMER,
                         exclude=selection_path(prepared) | activation_matmuls(prepared))
    batch = {n: np.concatenate([f[n] for f in feeds]) for n in MEMORY + CLIP}
    for name in ("fp16.onnx", "int8.onnx"):
        model = onnx.load(str(tmp_path / name))
        io = list(model.graph.input) + list(model.graph.output)
        assert {vi.type.tensor_type.shape.dim[0].dim_param for vi in io} == {"n_streams"}, name
        s = _session(tmp_path / name)
        together = s.run(list(OUTPUTS), batch)
        for i, f in enumerate(feeds):
            single = s.run(list(OUTPUTS), f)
            kept_alone = _kept(single[1][0], single[2][0], single[3][0])
            assert _kept(together[1][i], together[2][i], together[3][i]) == kept_alone, name
            np.testing.assert_allclose(together[0][i : i + 1], single[0], rtol=0, atol=1e-4)
