"""Bundle manifest checks: against the contract, the files, and the host -- one line each."""
import json
import shutil

import pytest

from edge_runtime.backends.bundle import BundleError, load_bundle
from edge_runtime.backends.host import HostInfo, choose_backend, plan_mismatch


@pytest.fixture()
def copy(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def test_good_bundle_loads(tiny_bundle):
    b = load_bundle(tiny_bundle)
    # the shipped checkpoint's reader travels with it: the optional reader + answer pair is there
    assert b.cfg.name == "lvm-tiny" and set(b.graphs) == {"backbone", "sampler", "heads", "reader", "answer"}
    assert len(b.labels["activities"]) == b.cfg.heads.num_activities
    assert b.bundle_id.startswith("lvm-tiny-fp32@")
    assert load_bundle(tiny_bundle).bundle_id == b.bundle_id


@pytest.mark.parametrize("mutate, expect", [
    (lambda m: m.update(format=2), "manifest format 2, this runtime reads format 1"),
    (lambda m: m["config"]["stream"].update(clip_framez=3), "unknown key 'stream.clip_framez'"),
    (lambda m: m["graphs"].pop("heads"), "graph 'heads' missing"),
    (lambda m: m["graphs"]["sampler"]["inputs"].pop(0), "sampler graph lacks input(s) mem"),
    (lambda m: m["graphs"]["backbone"]["inputs"][0].update(dtype="float32"), "backbone input 'frames' is float32"),
    (lambda m: m["labels"].update(activities=["a", "b"]), "labels.activities has 2 names"),
    (lambda m: m["config"]["stream"].update(memory_tokens=100), "but the config 'lvm-tiny' needs [1,100,256]"),
])
def test_foreign_or_broken_manifest_is_one_line(copy, mutate, expect):
    _edit(copy, mutate)
    with pytest.raises(BundleError) as e:
        load_bundle(copy)
    assert expect in _one_line(e)


def test_training_settings_from_a_newer_trainer_do_not_block_loading(copy, tiny_bundle):
    _edit(copy, lambda m: m["config"]["train"].update(some_future_setting=1))
    assert load_bundle(copy).bundle_id == load_bundle(tiny_bundle).bundle_id


def test_missing_manifest_and_folder(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(BundleError, match="not a bundle .no manifest.json"):
        load_bundle(tmp_path / "half")
    (tmp_path / "run").mkdir()
    for name in ("lvm-tiny.safetensors", "checkpoint.safetensors", "backbone.safetensors"):  # as lvm-train leaves it
        (tmp_path / "run" / name).write_bytes(b"x")
    with pytest.raises(BundleError, match="a training run's folder .it holds lvm-tiny.safetensors.*lvm-export --checkpoint"):
        load_bundle(tmp_path / "run")
    (tmp_path / "cut").mkdir()  # a bundle copied without its manifest: not taken for a training run
    for name in ("backbone.onnx", "ood.safetensors"):
        (tmp_path / "cut" / name).write_bytes(b"x")
    with pytest.raises(BundleError, match="its graphs are there but manifest.json is missing"):
        load_bundle(tmp_path / "cut")
    (tmp_path / "half" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(tmp_path / "half")


def test_changed_graph_file_is_caught_by_its_sha(copy):
    with open(copy / "heads.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError) as e:
        load_bundle(copy)
    assert "heads.onnx does not match its sha256" in _one_line(e)
    (copy / "heads.onnx").unlink()
    with pytest.raises(BundleError, match="heads.onnx listed in the manifest is missing"):
        load_bundle(copy)


def _with_plans(m, trt="10.3.0", cc="8.7", gpu="Orin"):
    for name, g in m["graphs"].items():
        g["plan"] = {"path": f"{name}.plan", "sha256": "", "tensorrt": trt, "gpu": gpu,
                     "compute_capability": cc, "jetpack": "6.0"}


def test_plan_mismatch_says_what_differs(copy):
    _edit(copy, _with_plans)
    for name in ("backbone", "sampler", "heads"):
        (copy / f"{name}.plan").write_bytes(b"plan")
    b = load_bundle(copy)
    orin = HostInfo("aarch64", "1.18", ["CPUExecutionProvider"], "10.3.0", "Orin", "8.7", "L4T 36.3")
    assert plan_mismatch(b, orin) is None
    ada = HostInfo("x86_64", "1.31", ["CPUExecutionProvider"], "10.7.0", "RTX 4090", "8.9", None)
    msg = plan_mismatch(b, ada)
    assert msg == ("plans built with TensorRT 10.3.0, host has 10.7.0; plans built for compute capability 8.7 "
                   "(Orin), host GPU is 8.9 (RTX 4090)")
    no_trt = HostInfo("x86_64", "1.31", ["CPUExecutionProvider"], None, None, None, None)
    assert plan_mismatch(b, no_trt) == "TensorRT is not installed on this host"
    assert choose_backend(b, "auto", orin) == ("tensorrt", None)
    backend, note = choose_backend(b, "auto", ada)
    assert backend == "onnxruntime" and "TensorRT 10.3.0, host has 10.7.0" in note
    with pytest.raises(BundleError) as e:
        choose_backend(b, "tensorrt", ada)
    assert "cannot use TensorRT: plans built with TensorRT 10.3.0" in _one_line(e)
    assert choose_backend(b, "onnxruntime", ada) == ("onnxruntime", None)


def test_onnx_only_bundle_on_auto_uses_onnxruntime_quietly(tiny_bundle):
    b = load_bundle(tiny_bundle)
    host = HostInfo("x86_64", "1.31", ["CPUExecutionProvider"], None, None, None, None)
    assert choose_backend(b, "auto", host) == ("onnxruntime", None)
    with pytest.raises(BundleError, match="no TensorRT plan for backbone, sampler, heads"):
        choose_backend(b, "tensorrt", host)
    with pytest.raises(BundleError, match="unknown backend"):
        choose_backend(b, "openvino", host)
