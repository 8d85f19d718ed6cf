"""Shared fixtures. ``tiny_bundle``: ONE fp32 bundle per test session, from a freshly initialised
lvm-tiny LVMNet, built with ``lvm-export --skip-gate`` when that CLI works, otherwise (stopgap)
with ``export.onnx_graphs.export_graph`` and a manifest written here per engines/README.md.

Bundles are cached under .cache/test-bundles/<key> (key: the export code and the tiny config), so
a second local run skips the ~25 s export; CI starts from a fresh checkout and builds it once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cache_key() -> str:
    h = hashlib.sha256()
    for p in sorted((REPO / "export").glob("*.py")) + [REPO / "configs/models/lvm-tiny.yaml",
                                                       REPO / "edge_runtime/config.py"]:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest_stopgap(net, out: Path, ckpt: Path) -> None:
    import onnxruntime as ort

    from export.onnx_graphs import GRAPHS, export_graph

    types = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(uint8)": "uint8"}
    graphs = {}
    for spec in GRAPHS:
        path = export_graph(net, spec, out / f"{spec.name}.onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        io = lambda xs: [{"name": x.name, "shape": list(x.shape), "dtype": types[x.type]} for x in xs]  # noqa: E731
        graphs[spec.name] = {"onnx": path.name, "sha256": _sha(path), "inputs": io(sess.get_inputs()),
                             "outputs": io(sess.get_outputs()), "quantization": None, "plan": None}
    try:
        from edge_runtime.checkout import ACTIVITIES, PRODUCTS

        acts, prods = [getattr(a, "name", a) for a in ACTIVITIES], [getattr(p, "name", p) for p in PRODUCTS]
    except ImportError:
        acts, prods = [f"activity_{i}" for i in range(net.cfg.heads.num_activities)], []
    acts = list(acts)[: net.cfg.heads.num_activities]
    acts += [f"activity_{i}" for i in range(len(acts), net.cfg.heads.num_activities)]
    manifest = {"format": 1, "model": net.cfg.name, "precision": "fp32",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "config": net.cfg.to_dict(), "config_sha256": net.cfg.digest(),
                "checkpoint": {"path": str(ckpt), "sha256": _sha(ckpt)},
                "labels": {"activities": acts, "products": [str(p) for p in prods]},
                "graphs": graphs, "parity": None, "accuracy": None, "calibration": None,
                "tools": {}, "host": {}, "built_by": "tests/conftest.py stopgap"}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")


def build_tiny_bundle(dest: Path) -> tuple[Path, str]:
    """-> (bundle dir, how it was built)."""
    import torch

    from edge_runtime.config import resolve_model_config
    from export.checkpoint import save_checkpoint
    from export.model import LVMNet

    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = LVMNet(resolve_model_config("lvm-tiny")).eval()
    ckpt = save_checkpoint(net, dest / "lvm-tiny-init.safetensors")
    out = dest / "lvm-tiny-fp32"
    exe = shutil.which("lvm-export", path=str(Path(sys.executable).parent)) or shutil.which("lvm-export")
    if exe and (REPO / "export" / "cli_export.py").is_file() and not os.environ.get("LVM_TEST_STOPGAP_BUNDLE"):
        # parity on a 32 s clip and one timed run: the test bundle needs the graphs, not the report
        res = subprocess.run([exe, "--precision", "fp32", "--checkpoint", str(ckpt), "--out", str(out), "--skip-gate",
                              "--bench-runs", "1", "--calib", "demo://checkout?seed=1&duration=32", "--no-progress"],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
        if res.returncode == 0 and (out / "manifest.json").is_file():
            return out, "lvm-export --precision fp32 --skip-gate"
        sys.stderr.write(f"lvm-export failed (rc {res.returncode}); using the conftest stopgap: "
                         f"{(res.stderr or res.stdout).strip().splitlines()[-1:]}\n")
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest_stopgap(net, out, ckpt)
    return out, "stopgap: export_graph + conftest manifest"


@pytest.fixture(scope="session")
def tiny_bundle(request) -> Path:
    cache = REPO / ".cache" / "test-bundles" / _cache_key()
    done = cache / "lvm-tiny-fp32" / "manifest.json"
    if not done.is_file():
        for old in cache.parent.glob("*"):  # bundles of older export code
            if old.name != cache.name and not old.name.startswith(cache.name):
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _, how = build_tiny_bundle(tmp)
        (tmp / "BUILT_BY").write_text(how + "\n")
        try:
            os.replace(tmp, cache)
        except OSError:  # another session finished first
            shutil.rmtree(tmp, ignore_errors=True)
    how = (cache / "BUILT_BY").read_text().strip() if (cache / "BUILT_BY").is_file() else "?"
    request.config._tiny_bundle_how = how
    return cache / "lvm-tiny-fp32"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    how = getattr(config, "_tiny_bundle_how", None)
    if how:
        terminalreporter.write_line(f"test bundle (lvm-tiny fp32, fresh weights): {how}")
