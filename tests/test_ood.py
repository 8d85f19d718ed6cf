"""The out-of-distribution signal: score and window logic on synthetic tokens, bundles without
statistics (unknown, never an error), and real footage through an exported bundle."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.ood import (OOD_FILE, OODConfig, OODMonitor, fit_stats, load_stats, ood_from_bundle, save_stats,
                              window_means)
from edge_runtime.ood import frame_features as _features

P, D = 6, 8
FOOTAGE = Path.home() / ".cache" / "lvm-edge" / "footage" / "opencv-doc" / "examples" / "data"


def _tokens(rng, n, shift=0.0):
    """Frames whose tokens follow a fixed spatial pattern plus low-rank variation and noise."""
    pattern = np.linspace(-1, 1, P * D).reshape(P, D)
    dirs = np.random.default_rng(123).normal(size=(3, P, D))
    x = pattern + np.einsum("nk,kpd->npd", rng.normal(size=(n, 3)), dirs) + 0.1 * rng.normal(size=(n, P, D))
    if shift:
        x = x + shift * rng.normal(size=(1, P, D))  # another layout: a different spatial pattern
    return x.astype(np.float32)


def test_scores_in_distribution_near_one_and_shifted_high():
    rng = np.random.default_rng(0)
    stats = fit_stats(_features(_tokens(rng, 400)), components=3)
    inside = stats.scores(_tokens(rng, 200))
    outside = stats.scores(_tokens(rng, 200, shift=1.0))
    assert 0.5 < np.median(inside) < 2.0
    assert np.median(outside) > 10 * np.median(inside)
    # a constant offset of every token (a new colour, brighter light) is not a new layout
    assert abs(np.median(stats.scores(_tokens(rng, 200) + 3.0)) - np.median(inside)) < 0.5


def test_stats_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    stats = fit_stats(_features(_tokens(rng, 50)), components=4)
    save_stats(tmp_path / OOD_FILE, stats)
    back = load_stats(tmp_path / OOD_FILE)
    tok = _tokens(rng, 5)
    np.testing.assert_allclose(back.scores(tok), stats.scores(tok), rtol=1e-6)


def test_window_means():
    np.testing.assert_allclose(window_means(np.arange(5.0), 2), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(window_means(np.arange(3.0), 10), [1.0])
    assert len(window_means(np.zeros(0), 3)) == 0


def test_monitor_window_flags_and_recovers():
    rng = np.random.default_rng(2)
    stats = fit_stats(_features(_tokens(rng, 400)), components=3)
    mon = OODMonitor(OODConfig(stats, threshold=3.0, window=10, min_frames=4))
    assert mon.status()["flag"] is None and mon.status()["frames"] == 0
    mon.update(_tokens(rng, 3, shift=1.0))
    st = mon.status()
    assert st["flag"] is None and st["frames"] == 3 and "note" in st  # too few frames for a verdict
    mon.update(_tokens(rng, 20, shift=1.0))
    st = mon.status()
    assert st["flag"] is True and st["frames"] == 10 and st["window"] == 10 and st["score"] > st["threshold"]
    for frame in _tokens(rng, 10):  # one frame at a time, as the engine feeds it
        mon.update(frame)
    st = mon.status()
    assert st["flag"] is False and st["frames"] == 10  # the window holds only the last 10 frames
    assert mon._scores.shape == (10,)  # constant memory
    mon.reset()
    assert mon.status()["frames"] == 0


def test_bundle_without_stats_is_unknown(tmp_path):
    cfg = SimpleNamespace(backbone=SimpleNamespace(tokens_per_frame=P, dim=D))
    old = SimpleNamespace(manifest={"format": 1}, path=tmp_path, cfg=cfg)
    config, note = ood_from_bundle(old)
    assert config is None and "no OOD statistics" in note
    mon = OODMonitor.for_bundle(old)
    mon.update(np.zeros((2, P, D), np.float32))  # ignored, never an error
    assert mon.status() == {"score": None, "threshold": None, "flag": None, "frames": 0, "window": None,
                            "note": note}
    # listed but damaged: unknown with the reason, never an error
    (tmp_path / OOD_FILE).write_bytes(b"not safetensors")
    bad = SimpleNamespace(manifest={"ood": {"file": OOD_FILE, "feature": "centered_tokens", "threshold": 1.0,
                                            "window_frames": 10}}, path=tmp_path, cfg=cfg)
    config, note = ood_from_bundle(bad)
    assert config is None and "unusable" in note and "\n" not in note


def _engine(bundle_dir):
    from edge_runtime.engine import Engine

    return Engine(bundle_dir, backend="onnxruntime", threads=2)


def test_old_bundle_engine_answers_with_unknown_ood(tiny_bundle, tmp_path):
    old = tmp_path / "old-bundle"
    shutil.copytree(tiny_bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    m.pop("ood", None)
    (old / "manifest.json").write_text(json.dumps(m))
    (old / OOD_FILE).unlink(missing_ok=True)
    eng = _engine(old)
    T = eng.clip_frames
    eng.ingest(np.zeros((T, eng.frame_size, eng.frame_size, 3), np.uint8), np.arange(T, dtype=float))
    (a,) = eng.answer([{"type": "activity", "start": 0, "end": T}])
    assert a["ood"]["flag"] is None and "no OOD statistics" in a["ood"]["note"]
    assert eng.ood_status() == a["ood"]


def _stream(engine, uri, max_frames=None):
    from edge_runtime.sources import open_source

    with open_source(uri, target_fps=engine.fps, size=engine.frame_size) as src:
        frames = [(f.t, f.image) for f, _ in zip(src, range(max_frames or 10**9))]
    engine.reset()
    engine.ingest(np.stack([im for _, im in frames]), np.array([t for t, _ in frames]))
    return engine.ood_status()


def test_street_scene_flagged_checkout_not(tiny_bundle):
    # the shipped model (untrained weights put the street scene at the threshold's edge)
    vtest = FOOTAGE / "vtest.avi"
    if not vtest.is_file():
        pytest.skip(f"{vtest} missing (tools/fetch_footage.sh fetches the opencv-doc videos)")
    eng = _engine(tiny_bundle)
    assert eng.bundle.manifest["ood"]["file"] == OOD_FILE
    checkout = _stream(eng, "demo://checkout?seed=1000000&duration=90&look=teal")
    street = _stream(eng, str(vtest))
    assert checkout["flag"] is False, checkout
    assert street["flag"] is True, street
    film = FOOTAGE / "Megamind.avi"
    if film.is_file():
        assert _stream(eng, str(film))["flag"] is True
    street = _stream(eng, str(vtest))
    (a,) = eng.answer([{"type": "activity", "start": 0, "end": 30}])
    assert a["ood"]["flag"] is True


def test_leave_one_look_out_threshold():
    from export.ood_stats import fit_ood

    rng = np.random.default_rng(3)
    looks = [_tokens(rng, 60) + c for c in (0.0, 1.0, -1.0, 2.0)]  # looks differ by colour, not layout
    fit = fit_ood(looks, window_samples=10, window_frames=30, components=3, min_frames=5,
                  videos=[{"look": i} for i in range(4)])
    assert set(fit.heldout_look_quantiles) == {"look 0", "look 1", "look 2", "look 3"}
    assert fit.threshold == pytest.approx(max(fit.heldout_look_quantiles.values()), rel=0.2)
    assert fit.frames == 240 and fit.window_frames == 30 and fit.min_frames == 5
    new_look = window_means(fit.stats.scores(_tokens(rng, 60) + 5.0), 10)
    street = window_means(fit.stats.scores(_tokens(rng, 60, shift=1.0)), 10)
    assert new_look.max() < fit.threshold < street.min()
    m = fit.manifest("abc")
    assert m["file"] == OOD_FILE and m["sha256"] == "abc" and m["threshold"] > 0
