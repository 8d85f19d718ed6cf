"""The out-of-distribution signal: score and window logic on synthetic tokens, bundles without
statistics (unknown, never an error), and real footage through an exported bundle."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.memory.ood import (OOD_FILE, OODConfig, OODMonitor, fit_stats, load_stats, ood_from_bundle, save_stats,
                              window_means)
from edge_runtime.memory.ood import frame_features as _features

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
    from edge_runtime.engine.engine import Engine

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
    stream = eng.new_stream()
    eng.ingest(stream, np.zeros((T, eng.frame_size, eng.frame_size, 3), np.uint8), np.arange(T, dtype=float))
    (a,) = eng.answer(stream, [{"type": "activity", "start": 0, "end": T}])
    assert a["ood"]["flag"] is None and "no OOD statistics" in a["ood"]["note"]
    assert stream.ood.status() == a["ood"]


def _stream(engine, uri, max_frames=None):
    """A fresh stream of ``uri``'s frames."""
    from edge_runtime.sources import open_source

    with open_source(uri, target_fps=engine.fps, size=engine.frame_size) as src:
        frames = [(f.t, f.image) for f, _ in zip(src, range(max_frames or 10**9))]
    stream = engine.new_stream()
    engine.ingest(stream, np.stack([im for _, im in frames]), np.array([t for t, _ in frames]))
    return stream


def test_street_scene_flagged_checkout_not(tiny_bundle):
    # the shipped model (untrained weights put the street scene at the threshold's edge)
    vtest = FOOTAGE / "vtest.avi"
    if not vtest.is_file():
        pytest.skip(f"{vtest} missing (tools/fetch_footage.sh fetches the opencv-doc videos)")
    eng = _engine(tiny_bundle)
    assert eng.bundle.manifest["ood"]["file"] == OOD_FILE
    checkout = _stream(eng, "demo://checkout?seed=1000000&duration=90&look=teal").ood.status()
    street = _stream(eng, str(vtest))
    assert checkout["flag"] is False, checkout
    assert street.ood.status()["flag"] is True, street.ood.status()
    film = FOOTAGE / "Megamind.avi"
    if film.is_file():
        assert _stream(eng, str(film)).ood.status()["flag"] is True
    (a,) = eng.answer(street, [{"type": "activity", "start": 0, "end": 30}])
    assert a["ood"]["flag"] is True


def test_leave_one_look_out_threshold():
    from export.evaluate.ood_stats import fit_ood

    rng = np.random.default_rng(3)
    looks = [_tokens(rng, 60) + c for c in (0.0, 1.0, -1.0, 2.0)]  # looks differ by colour, not layout
    fit = fit_ood(looks, window_samples=10, window_frames=30, components=3, min_frames=5,
                  videos=[{"look": i} for i in range(4)], feature="centered_tokens")
    assert set(fit.heldout_look_quantiles) == {"look 0", "look 1", "look 2", "look 3"}
    assert fit.threshold == pytest.approx(max(fit.heldout_look_quantiles.values()), rel=0.2)
    assert fit.frames == 240 and fit.window_frames == 30 and fit.min_frames == 5
    new_look = window_means(fit.stats.scores(_tokens(rng, 60) + 5.0), 10)
    street = window_means(fit.stats.scores(_tokens(rng, 60, shift=1.0)), 10)
    assert new_look.max() < fit.threshold < street.min()
    m = fit.manifest("abc")
    assert m["file"] == OOD_FILE and m["sha256"] == "abc" and m["threshold"] > 0
    assert m["feature"] == "centered_tokens"


def test_raw_token_feature_keeps_what_centring_removes(tmp_path):
    """lvm-export's feature (the raw tokens): a scene whose tokens all moved far (a street, to a
    backbone that maps every non-product patch near "none") is flagged, which centring cannot see;
    the threshold still covers looks that differ as much as the training looks do. Saved and loaded
    through the manifest's feature name; an unknown name is unusable, in one line."""
    from export.evaluate.ood_stats import FEATURE, fit_ood

    rng = np.random.default_rng(4)
    looks = [_tokens(rng, 60) + c for c in (0.0, 0.3, -0.3, 0.6)]
    fit = fit_ood(looks, window_samples=10, window_frames=30, components=3, min_frames=5,
                  videos=[{"look": i} for i in range(4)])
    assert FEATURE == "tokens" and fit.stats.feature == "tokens" and fit.manifest("x")["feature"] == "tokens"
    moved = _tokens(rng, 60) + 4.0  # the same layout, every token elsewhere
    assert window_means(fit.stats.scores(moved), 10).min() > fit.threshold
    assert window_means(fit.stats.scores(_tokens(rng, 60) + 0.2), 10).max() < fit.threshold
    centred = fit_ood(looks, window_samples=10, window_frames=30, components=3, min_frames=5,
                      videos=[{"look": i} for i in range(4)], feature="centered_tokens")
    assert window_means(centred.stats.scores(moved), 10).max() < centred.threshold
    save_stats(tmp_path / OOD_FILE, fit.stats)
    np.testing.assert_allclose(load_stats(tmp_path / OOD_FILE, "tokens").scores(moved[:3]),
                               fit.stats.scores(moved[:3]), rtol=1e-5)
    P, D = moved.shape[1:]
    cfg = SimpleNamespace(backbone=SimpleNamespace(tokens_per_frame=P, dim=D))
    for feature, ok in (("tokens", True), ("centered_tokens", True), ("pixels", False)):
        b = SimpleNamespace(manifest={"ood": {"file": OOD_FILE, "feature": feature, "threshold": 1.0,
                                              "window_frames": 10}}, path=tmp_path, cfg=cfg)
        config, note = ood_from_bundle(b)
        assert (config is not None) == ok, note
        if ok:
            assert config.stats.feature == feature
        else:
            assert "'pixels'" in note and "\n" not in note


# --- statistics fitted on a dataset folder's train split (lvm-export --data) ---------------------

def _split(root, split="train"):
    from export.dataset.eval_data import DataSplit

    return DataSplit.open(root, split)


@pytest.fixture(scope="module")
def ood_dataset(tmp_path_factory):
    """Two train videos of 120 s (40 frames each at the 3 s stride) and one test video, as mp4 files."""
    from export.dataset.render import like_eval, like_train, render_dataset

    root = tmp_path_factory.mktemp("oodds") / "shop"
    render_dataset(root, like_train([0, 1]) + like_eval([0]), duration_s=120.0, size=112, fps=1.0,
                   progress=False, say=lambda s: None)
    return root


@pytest.fixture
def backbone_dir(tiny_bundle, tmp_path):
    """A folder holding only the session bundle's backbone graph: the fit writes its file there."""
    d = tmp_path / "bundle"
    d.mkdir()
    shutil.copy(Path(tiny_bundle) / "backbone.onnx", d / "backbone.onnx")
    return d


def _cfg():
    from edge_runtime.config import resolve_model_config

    return resolve_model_config("lvm-tiny")


def _usable(bundle_dir, section):
    cfg = _cfg()
    return ood_from_bundle(SimpleNamespace(manifest={"ood": section}, path=bundle_dir, cfg=cfg))


def test_dataset_fit_leaves_one_video_out(ood_dataset, backbone_dir):
    from export.evaluate.ood_stats import ood_step, write_bundle_ood

    train = _split(ood_dataset)
    stems = [it.stem for it in train.items]
    assert ood_step(train) == (f"OOD statistics (train split of {ood_dataset} through the bundle's backbone)", 2)
    notes: list[str] = []
    m = write_bundle_ood(backbone_dir, _cfg(), train=train, notes=notes)
    assert notes == []
    assert m["fitted_on"] == {"dataset": str(ood_dataset), "split": "train", "videos": stems}
    assert [(v["stem"], v["frames"], v["stride_s"]) for v in m["videos"]] == [(s, 40, 3.0) for s in stems]
    assert m["frames"] == 80 and set(m["left_out_video_q"]) == set(stems) and "left_out_look_q" not in m
    assert "train-split video" in m["threshold_rule"]
    assert m["threshold"] >= max(m["left_out_video_q"].values()) * 0.9 > 0
    config, note = _usable(backbone_dir, m)
    assert note is None and config.threshold == pytest.approx(m["threshold"])
    # the footage it was fitted on is not "unlike the training footage"
    from export.onnx.cpu_latency import cpu_session
    from export.evaluate.ood_stats import backbone_tokens, dataset_frames

    session = cpu_session(backbone_dir / "backbone.onnx", 2)
    for _, frames in dataset_frames(train.items, _cfg()):
        assert window_means(config.stats.scores(backbone_tokens(session, frames)), 20).max() < config.threshold


def test_dataset_fit_one_video_is_cut_in_halves(ood_dataset, backbone_dir, tmp_path):
    from export.evaluate.ood_stats import write_bundle_ood

    one = tmp_path / "one"
    shutil.copytree(ood_dataset, one)
    items = _split(ood_dataset).items
    (one / "splits.yaml").write_text(f"train: [{items[0].stem}]\ntest: [{items[1].stem}]\n")
    m = write_bundle_ood(backbone_dir, _cfg(), train=_split(one), notes=[])
    assert m["fitted_on"]["videos"] == [items[0].stem] and m["frames"] == 40
    assert set(m["left_out_half_q"]) == {"first half", "second half"} and "half" in m["threshold_rule"]
    assert _usable(backbone_dir, m)[1] is None


def test_dataset_too_short_for_a_threshold_gets_no_statistics(backbone_dir, tmp_path):
    from export.dataset.render import plain, render_dataset
    from export.evaluate.ood_stats import write_bundle_ood

    root = tmp_path / "short"
    render_dataset(root, plain([5]), duration_s=45.0, size=112, fps=1.0, progress=False, say=lambda s: None)
    notes: list[str] = []
    assert write_bundle_ood(backbone_dir, _cfg(), train=_split(root), notes=notes) is None
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "no OOD statistics" in notes[0] and "15 frames" in notes[0] and "needs 40" in notes[0]
    assert not (backbone_dir / OOD_FILE).exists()
    config, note = _usable(backbone_dir, None)  # the manifest's "ood": null -> unknown, never an error
    assert config is None and "too little training footage" in note


@pytest.mark.slow  # a whole export with --data (the fit on its train split)
def test_lvm_export_data_fits_ood_on_the_train_split(ood_dataset, tmp_path, capsys, monkeypatch, fast_export):
    # --calib gives the parity frames; the OOD statistics still come from the dataset
    import torch

    from export.cli import export as cli_export
    out = tmp_path / "fp32"
    threads = torch.get_num_threads()
    try:
        rc = cli_export.main(["--precision", "fp32", "--data", str(ood_dataset), "--out", str(out), "--calib",
                              "demo://checkout?seed=5&duration=32", "--bench-runs", "1", "--engine", "onnxruntime",
                              "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    assert m["ood"]["fitted_on"]["dataset"] == str(ood_dataset) and m["ood"]["fitted_on"]["split"] == "train"
    assert m["parity"]["frames"]["source"] == "demo://checkout?seed=5&duration=32"
    assert _engine(out).new_stream().ood.status()["threshold"] == pytest.approx(m["ood"]["threshold"], abs=1e-4)
