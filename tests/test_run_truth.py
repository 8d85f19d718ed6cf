"""`lvm-edge run` says how a stream really ended: the file's tail is committed, a
truncated file says where it stopped, --duration bounds a dead live source, a state dir is not
continued with another source, and the small untruths of status, doctor, query --help and the demo."""
from __future__ import annotations

import io
import os
import pickle
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import edge_runtime.sources as sources
from edge_runtime import cli
from edge_runtime.serve.rate_meter import RateMeter
from edge_runtime.sources import Frame, parse_source_uri
from fakes import StoppableSource

REPO = Path(__file__).resolve().parent.parent
FOOTAGE = Path(os.environ.get("LVM_FOOTAGE_DIR", Path.home() / ".cache" / "lvm-edge" / "footage")) \
    / "opencv-doc" / "examples" / "data"


def _video(path: Path, seconds: int = 20, fps: int = 10) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 96))
    assert w.isOpened()
    rng = np.random.default_rng(0)
    for i in range(seconds * fps):
        img = np.full((96, 96, 3), 40, np.uint8)
        img[30:60, i % 60 : i % 60 + 30] = rng.integers(0, 256, 3, dtype=np.uint8)
        w.write(img)
    w.release()
    return path


def _truncated(src: Path, dest: Path, keep: float = 0.3) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def _cli(*args, timeout=120):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=env)


def _status_when(rt, cond, timeout: float = 60.0) -> dict:
    """The runtime's first status that meets ``cond``; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    st = rt.status()
    while not cond(st):
        assert time.monotonic() < deadline, f"status never got there: {st}"
        time.sleep(0.02)
        st = rt.status()
    return st


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- no bundle needed ---------------------------------------------------------------------------

def test_rate_meter_reads_slow_streams_and_decays():
    m = RateMeter(window_s=10.0)
    for k in range(30):  # a 1-fps camera, one sample per frame
        m.add(1, now=float(k))
    assert m.rate(29.0) == pytest.approx(1.0, abs=0.06)
    assert m.rate(60.0) == 0.0  # stopped: every sample left the window
    slow = RateMeter(window_s=10.0)
    for k in range(0, 80, 16):  # one frame every 16 s, slower than the window
        slow.add(1, now=float(k))
    assert slow.rate(64.5) == pytest.approx(1 / 16, rel=0.1)


def test_status_line_prints_a_settled_state_once():
    class RT:
        state = "ended"

        def status(self):
            return {"state": self.state, "stream_time": 11.0, "fps": 0.0, "stream_rate": 0.0, "dropped": 0,
                    "coverage": {"start": 0.0, "end": 12.0}, "gaps": [], "memory_bytes": 1, "clips": 1,
                    "error": None, "outage_since": None}

    rt, out = RT(), io.StringIO()
    line = cli.StatusLine(rt, 1.0, stream=out)
    for _ in range(3):
        line.tick(force=True)
    assert out.getvalue().count("[ended]") == 1
    rt.state = "stopped"
    line.tick(force=True)
    assert out.getvalue().count("\n") == 2


def test_source_identity_is_how_a_stream_is_named_not_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_source_uri("clip.avi").identity == str(tmp_path / "clip.avi")
    assert parse_source_uri("demo://checkout?seed=3").identity == \
        parse_source_uri("demo://checkout?duration=1800&seed=3").identity
    assert parse_source_uri("3").identity == parse_source_uri("/dev/video3").identity
    assert "pw" not in parse_source_uri("rtsp://u:pw@cam/x").identity


def test_truncated_file_says_where_decoding_stopped(tmp_path):
    whole = _video(tmp_path / "whole.avi")
    with sources.open_source(str(whole), target_fps=1.0) as src:
        assert len(list(src)) == 20 and src.end_problem is None
    cut = _truncated(whole, tmp_path / "cut.avi")
    with sources.open_source(str(cut), target_fps=1.0) as src:
        n = len(list(src))
    assert 0 < n < 20
    assert "truncated or damaged" in src.end_problem and src.position < 19


def test_query_help_has_a_description_and_examples(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["query", "--help"])
    text = capsys.readouterr().out
    assert "stream seconds" in text and "examples" in text and "lvm-edge query activity --image" in text
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--keep-serving" in text and "whichever comes first" in text and "--reset-state" in text


def test_doctor_cuda_without_a_gpu_is_not_ok(monkeypatch, capsys):
    from edge_runtime.cli import doctor

    monkeypatch.setitem(sys.modules, "cuda", types.SimpleNamespace(__version__="13.5.0"))
    monkeypatch.setattr(doctor, "PACKAGES", (("cuda", None),))
    checks = doctor.Checklist()
    doctor._check_packages(checks, types.SimpleNamespace(gpu=None))
    out = capsys.readouterr().out
    assert "[ - ] cuda" in out and "no GPU found" in out and "[ok ] cuda" not in out
    doctor._check_packages(checks, types.SimpleNamespace(gpu="Orin"))
    assert "[ok ] cuda" in capsys.readouterr().out


def test_doctor_has_an_int8_row(capsys):
    pytest.importorskip("onnxruntime")
    from edge_runtime.cli import doctor

    doctor._check_int8(doctor.Checklist())
    out = capsys.readouterr().out
    assert "INT8 on ORT CPU" in out and ("as exported" in out or "U8U8" in out)


def test_demo_table_has_no_repeated_query_and_a_legend():
    from edge_runtime.cli.demo import TABLE_LEGEND, distinct

    q = lambda t, s, i: types.SimpleNamespace(type=t, start=s, end=s + 60, instance_id=i, activity_id=None)  # noqa: E731
    assert len(distinct([q("activity", 0, 10), q("activity", 0, 10), q("activity", 0, 11), q("time", 0, 10)])) == 3
    assert all(word in TABLE_LEGEND for word in ("NAME #N", "p its score", "R@1x"))


def test_demo_save_crops_writes_real_pictures(tmp_path):
    pytest.importorskip("cv2")
    res = _cli("demo", "--seed", "3", "--duration", "60", "--save-crops", str(tmp_path / "crops"))
    assert res.returncode == 0, res.stderr
    pngs = sorted((tmp_path / "crops").glob("object-*.png"))
    assert pngs and str(pngs[0]) in res.stdout


def test_backbone_from_a_pickle_fails_first_and_creates_nothing(tmp_path, capsys, monkeypatch):
    import edge_runtime.checkout
    from export.cli.train import main

    def render(*a, **kw):
        raise AssertionError("a training video was rendered before the pickle was refused")

    monkeypatch.setattr(edge_runtime.checkout, "training_video", render)
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"w": 1}, protocol=4))
    out = tmp_path / "run"
    assert main(["--config", "configs/models/lvm-tiny.yaml", "--out", str(out), "--backbone-from", str(bad)]) == 2
    assert not out.exists()
    assert "looks like a pickle" in capsys.readouterr().err


def test_a_run_refused_after_its_out_folder_was_checked_leaves_no_empty_folder(tmp_path, capsys):
    from export.cli.train import main

    out = tmp_path / "run"
    assert main(["--config", "configs/models/lvm-tiny.yaml", "--out", str(out), "--sampler-from",
                 "checkpoints/lvm-tiny.safetensors"]) == 2
    assert "give --heads-steps N" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "kept").mkdir()  # a folder the user made stays
    assert main(["--config", "configs/models/lvm-tiny.yaml", "--out", str(tmp_path / "kept"), "--sampler-from",
                 "checkpoints/lvm-tiny.safetensors"]) == 2
    assert (tmp_path / "kept").is_dir()


# ---- with the test bundle -----------------------------------------------------------------------

def _done(rt) -> None:
    rt.stop(snapshot=False)
    rt.batcher.close()  # not rt.close(): the engine is shared by the module's tests


def test_the_tail_of_a_file_is_committed_and_its_end_said(engine, tmp_path):
    from edge_runtime.serve.pipeline import Runtime

    rt = Runtime(engine)
    rt.start(str(_video(tmp_path / "v.avi")))  # 20 s: one clip of 16 and a tail of 4
    assert rt.wait(60)
    st = rt.status()
    assert st["state"] == "ended" and st["error"] is None, st
    assert st["pending_frames"] == 0 and st["clips"] == 2 and st["coverage"]["end"] == 20.0
    assert "end of file at" in st["end_reason"] and "last 4 frame(s) committed" in st["end_reason"]
    _done(rt)


def test_a_truncated_file_is_an_error_with_its_stream_time(engine, tmp_path):
    from edge_runtime.serve.pipeline import Runtime

    rt = Runtime(engine)
    rt.start(str(_truncated(_video(tmp_path / "v.avi"), tmp_path / "cut.avi")))
    assert rt.wait(60)
    st = rt.status()
    assert st["state"] == "ended" and st["pending_frames"] == 0 and st["clips"] >= 1
    assert "stopped at" in st["error"] and "truncated or damaged" in st["error"]
    _done(rt)


class _FakeLive(StoppableSource):
    """A live source that delivers a few frames, then is in an outage until stopped."""

    live = True

    def __init__(self, frames: int):
        super().__init__("rtsp://cam/x")
        self.frames = frames

    def _frames(self):
        for i in range(self.frames):
            yield Frame(100.0 + 0.1 * i, np.zeros((112, 112, 3), np.uint8), i)
        self.outage_since = 100.0 + 0.1 * (self.frames - 1)
        self.last_error = "rtsp://cam/x: stalled (no frame for 5 s)"
        self._stop.wait(600)


def test_an_outage_reads_reconnecting_and_duration_bounds_it_by_wall_time(engine, monkeypatch):
    from edge_runtime.serve.pipeline import Runtime

    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: _FakeLive(3))
    rt = Runtime(engine)
    rt.start("rtsp://cam/x", duration=3)
    st = _status_when(rt, lambda st: st["outage_since"] is not None)
    assert st["state"] == "reconnecting" and st["outage_since"] == pytest.approx(0.2) and rt.ready
    assert st["source_problem"] == "rtsp://cam/x: stalled (no frame for 5 s)"  # why, without reading the log
    # the source would sit in its outage for 600 s: only the duration can end the run
    assert rt.wait(60)
    assert rt.state == "ended" and "duration of 3 s reached (wall-clock" in rt.end_reason
    _done(rt)
    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: _FakeLive(0))
    rt = Runtime(engine)
    rt.start("rtsp://cam/x", duration=0.5)
    assert rt.wait(10) and rt.state == "failed" and "no frame received in 0.5 s" in rt.error
    _done(rt)


def test_cli_file_errors_once_and_truncated_exits_1(tiny_bundle, tmp_path):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    res = _cli("run", "--source", str(bad), "--bundle", str(tiny_bundle), "--api", "none",
               "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 2 and res.stderr.count("OpenCV cannot open it") == 1, res.stderr
    assert "moov" not in res.stderr and not (tmp_path / "s" / "snapshot.npz").exists()
    cut = _truncated(_video(tmp_path / "v.avi"), tmp_path / "cut.avi")
    res = _cli("run", "--source", str(cut), "--bundle", str(tiny_bundle), "--api", "none")
    assert res.returncode == 1 and res.stderr.count("truncated or damaged") == 1, res.stderr


def test_cli_dead_live_source_stops_after_duration(tiny_bundle):
    # a dead camera is retried for ever without --duration: the subprocess timeout only guards a hang
    res = _cli("run", "--source", f"rtsp://127.0.0.1:{_port()}/x", "--bundle", str(tiny_bundle),
               "--duration", "2", "--api", "none", timeout=120)
    assert res.returncode == 1 and "no frame received in 2 s" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_cli_state_dir_refuses_another_source(tiny_bundle, tmp_path):
    a, b = _video(tmp_path / "a.avi", seconds=4), _video(tmp_path / "b.avi", seconds=4)
    sd = tmp_path / "state"
    common = ["--bundle", str(tiny_bundle), "--api", "none", "--state-dir", str(sd)]
    assert _cli("run", "--source", str(a), *common).returncode == 0
    res = _cli("run", "--source", str(b), *common)
    assert res.returncode == 2 and str(a) in res.stderr and str(b) in res.stderr and "--reset-state" in res.stderr
    res = _cli("run", "--source", str(b), "--reset-state", *common)
    assert res.returncode == 0, res.stderr
    assert (sd / "snapshot.npz").is_file() and len(list(sd.glob("snapshot.npz.reset-*"))) == 1


def test_cli_duration_exits_at_the_end_unless_keep_serving(tiny_bundle, tmp_path):
    uri = "demo://checkout?seed=3&duration=20"
    res = _cli("run", "--source", uri, "--bundle", str(tiny_bundle), "--duration", "3600",
               "--api", f"127.0.0.1:{_port()}")
    assert res.returncode == 0 and "end of stream at" in res.stderr, res.stderr
    port = _port()
    p = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "run", "--source", uri, "--bundle",
                          str(tiny_bundle), "--duration", "3600", "--keep-serving", "--api", f"127.0.0.1:{port}"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline and p.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2) as r:
                    import json

                    st = json.loads(r.read())
                if st["state"] == "ended":
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert st["pending_frames"] == 0 and st["coverage"]["end"] == 20.0
        time.sleep(1.0)
        assert p.poll() is None  # still answering
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "still answering queries" in err, err


def test_real_footage_tail_and_truncation(engine, tmp_path):
    if not (FOOTAGE / "Megamind.avi").is_file():
        pytest.skip(f"real footage not in {FOOTAGE} (bash tools/fetch_footage.sh fetches it)")
    from edge_runtime.serve.pipeline import Runtime

    rt = Runtime(engine)
    rt.start(str(FOOTAGE / "Megamind.avi"))  # 11.3 s: less than one clip at 1 fps
    assert rt.wait(60)
    st = rt.status()
    assert st["pending_frames"] == 0 and st["clips"] == 1 and st["coverage"]["end"] >= 11.0
    assert "end of file at 11.2 s" in st["end_reason"]
    rt = Runtime(engine)
    cut = tmp_path / "vtest-head.avi"
    cut.write_bytes((FOOTAGE / "vtest.avi").read_bytes()[:300_000])
    rt.start(str(cut))
    assert rt.wait(60)
    assert "stopped at 1.5 s" in rt.error and "frame 16 of 795" in rt.error


def test_a_new_run_in_the_folder_of_a_run_before_keeps_that_runs_files(tmp_path):
    from export.train.run_folder import keep_previous_run

    out = tmp_path / "run"
    assert keep_previous_run(out, "lvm-tiny", []) is None  # nothing there yet
    out.mkdir()
    for f in ("lvm-tiny.safetensors", "lvm-tiny-reader.safetensors", "checkpoint.safetensors", "summary.json", "notes.txt"):
        (out / f).write_text(f)
    kept = keep_previous_run(out, "lvm-tiny", [out / "lvm-tiny.safetensors", None])  # --init-from it
    assert kept.parent == out and kept.name.startswith("previous-run-")
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint.safetensors", "lvm-tiny-reader.safetensors",
                                                     "lvm-tiny.safetensors", "summary.json"]
    assert (out / "lvm-tiny.safetensors").read_text() == "lvm-tiny.safetensors"  # read by this run: copied
    assert not (out / "lvm-tiny-reader.safetensors").exists() and (out / "notes.txt").exists()


@pytest.mark.slow  # lvm-export as a process: torch and the checkpoint load before it can be stopped
def test_sigterm_stops_an_export_in_one_line_and_leaves_no_temp_folder(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "export.cli.export", "--precision", "fp32", "--out",
                             str(tmp_path / "b"), "--skip-gate", "--bench-runs", "1", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(".b.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the bundle is being written in its temp folder: stop it there
        assert proc.poll() is None, "the export ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 143 and err.rstrip().endswith("lvm-export: stopped (SIGTERM)"), err[-2000:]
    assert "Traceback" not in err and not list(tmp_path.glob(".b.*")) and not (tmp_path / "b").exists()
