"""End to end: `lvm-edge run` as a subprocess on demo:// and on video files, queried over HTTP,
SIGKILLed and restarted (memory restored, clock continues), SIGTERM drained and snapshotted, and
memory bytes constant over a long accelerated stream."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
LONG_S = float(os.environ.get("LVM_E2E_LONG_S", "1200"))  # set 7200 for the full 2-hour stream
STALL_S = 120.0  # a stream that moves no further for this long has hung; a slow machine only takes longer


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, args, log: Path):
        self.port = _port()
        self.log = log
        self.fh = open(log, "ab")
        cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--api", f"127.0.0.1:{self.port}", *args]
        self.p = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, cwd=REPO)
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path, **kw):
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        return httpx.post(self.url + path, timeout=30, **kw)

    def wait_ready(self, timeout=60):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            assert self.p.poll() is None, self.text()
            try:
                if self.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("never became healthy:\n" + self.text())

    def wait_for(self, cond, timeout=120):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            st = self.get("/v1/status").json()
            if cond(st):
                return st
            assert self.p.poll() is None, self.text()
            time.sleep(0.2)
        raise AssertionError(f"timed out; last status {st}\n{self.text()}")

    def text(self):
        if not self.fh.closed:
            self.fh.flush()
        return self.log.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait(10)
            if not self.fh.closed:
                self.fh.close()
        return rc


def _png(seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    return base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()


def _ask_all(p: Proc, start, end):
    a = p.post("/v1/query/activity", json={"object_image": _png(), "start": start, "end": end})
    o = p.post("/v1/query/object", json={"activity": 1, "start": start, "end": min(end, start + 10)})
    t = p.post("/v1/query/time", json={"activity": 2, "object_image": _png(), "start": start, "end": end})
    for r in (a, o, t):
        assert r.status_code == 200, r.text
        assert r.json()["coverage"]["covered_fraction"] > 0
    return a.json(), o.json(), t.json()


@pytest.mark.slow  # two whole serving runs: streamed, SIGKILLed, restored, drained
def test_demo_stream_query_kill_restore_and_drain(tiny_bundle, tmp_path):
    state = tmp_path / "state"
    args = ["--source", "demo://checkout?seed=5&duration=100000", "--bundle", str(tiny_bundle),
            "--state-dir", str(state), "--snapshot-every", "0.5"]
    p = Proc(args, tmp_path / "run1.log")
    try:
        p.wait_ready()
        st = p.wait_for(lambda s: (s["coverage"]["end"] or 0) >= 96)
        assert st["state"] == "streaming" and st["restored_from"] is None
        _ask_all(p, 0, 90)
        m = p.get("/metrics").text
        assert "lvm_frames_processed_total" in m and 'lvm_stage_seconds_count{stage="backbone",stream="default"}' in m
        p.wait_for(lambda s: s["last_snapshot"] is not None)
        time.sleep(1.0)
    finally:
        p.stop(signal.SIGKILL)
    from edge_runtime.engine.snapshot import read_snapshot
    _, meta = read_snapshot(state / "snapshot.npz")  # a SIGKILL never leaves a torn snapshot
    saved_end = meta["coverage"]["end"]
    assert saved_end >= 96

    p2 = Proc(args, tmp_path / "run2.log")
    try:
        p2.wait_ready()
        st = p2.get("/v1/status").json()
        assert st["restored_from"] is not None and st["restored_from"]["coverage"]["end"] == saved_end
        assert st["coverage"]["start"] == 0.0
        st = p2.wait_for(lambda s: (s["coverage"]["end"] or 0) >= saved_end + 48)
        assert st["gaps"] == []  # the clock continued right after the restored memory
        _ask_all(p2, saved_end - 50, saved_end + 40)
        last = p2.get("/v1/status").json()
        rc = p2.stop(signal.SIGTERM)
        assert rc == 0, p2.text()
    finally:
        p2.stop(signal.SIGKILL)
    log = p2.text()
    assert "restored memory from" in log and "SIGTERM: draining and snapshotting" in log
    _, meta = read_snapshot(state / "snapshot.npz")
    assert meta["coverage"]["end"] >= last["coverage"]["end"]
    assert not list(state.glob("*.corrupt-*"))


def _write_video(path: Path, seconds=40, fps=5, size=(160, 120)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    rng = np.random.default_rng(0)
    for i in range(seconds * fps):
        img = np.full((size[1], size[0], 3), 40, np.uint8)
        x = int((i * 3) % (size[0] - 30))
        img[40:80, x : x + 30] = rng.integers(0, 256, 3, dtype=np.uint8)
        w.write(img)
    w.release()
    return path


def _footage() -> Path | None:
    try:
        res = subprocess.run(["bash", str(REPO / "tools" / "fetch_footage.sh")], capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    d = Path(res.stdout.strip()) if res.returncode == 0 else None
    return d if d and (d / "vtest.avi").is_file() else None


def _file_run(tiny_bundle, tmp_path, video: Path, min_end: float, name: str):
    p = Proc(["--source", str(video), "--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / name)],
             tmp_path / f"{name}.log")
    try:
        p.wait_ready()
        st = p.wait_for(lambda s: s["state"] in ("ended", "failed"))
        assert st["state"] == "ended", st
        if min_end:
            assert st["coverage"]["end"] >= min_end
            _ask_all(p, 0, st["coverage"]["end"])
        t0 = time.monotonic()  # the server keeps answering after the file ends, and says so
        while "source ended; still answering queries" not in p.text() and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        assert "source ended; still answering queries" in p.text()
        assert p.get("/v1/status").status_code == 200
        assert p.stop(signal.SIGTERM) == 0
    finally:
        p.stop(signal.SIGKILL)
    return st


def test_video_file_written_here(tiny_bundle, tmp_path):
    video = _write_video(tmp_path / "clip.avi")
    st = _file_run(tiny_bundle, tmp_path, video, 32, "own")
    assert st["frames_processed"] == 40


@pytest.mark.slow  # whole serving runs of two real videos
def test_real_footage(tiny_bundle, tmp_path):
    data = _footage()
    if data is None:
        pytest.skip("real footage unavailable (tools/fetch_footage.sh could not fetch Debian's opencv-doc)")
    st = _file_run(tiny_bundle, tmp_path, data / "vtest.avi", 64, "vtest")
    assert st["frames_processed"] >= 70
    bugy = data / "Megamind_bugy.avi"
    if bugy.is_file():  # a damaged 9 s file: streams what decodes (less than one clip), never crashes
        st = _file_run(tiny_bundle, tmp_path, bugy, None, "bugy")
        assert st["frames_processed"] >= 5 and st["pending_frames"] == 0 and st["clips"] == 1  # tail committed


def _expected_memory_bytes(bundle: Path) -> int:
    """Stream state the engine holds, from the bundle's graph contract and config alone: two sets
    of sampler memory buffers (ping-pong) and one clip input, the committed host copy of one set,
    the SVD as the heads read it (heads dtypes) and as it is kept (float64 basis, values, mean and
    3 counters), the pending clip (float32 tokens, float64 times), the bounded gap list and, with
    the memory reader, its facts of the committed memory (as the answer graph takes them: with a
    timeline track, the memory's rows and the timeline's), and the timeline's own FIFO."""
    from edge_runtime.engine.stream_state import FACT_NAMES, MAX_GAPS

    m = json.loads((bundle / "manifest.json").read_text())
    cfg = m["config"]

    def nbytes(graph, names):
        specs = {i["name"]: i for i in m["graphs"][graph]["inputs"]}
        # a named batch axis (the sampler's n_streams) is one row per stream
        return sum(int(np.prod([x if isinstance(x, int) else 1 for x in specs[n]["shape"]]))
                   * np.dtype(specs[n]["dtype"]).itemsize for n in names)

    memory_set = nbytes("sampler", ("mem", "mem_t", "mem_p", "mem_valid"))
    clip = nbytes("sampler", ("clip", "clip_t", "clip_p"))
    k, d = cfg["svd"]["n_components"], cfg["backbone"]["dim"]
    T, P = cfg["stream"]["clip_frames"], cfg["backbone"]["grid"] ** 2
    svd_kept = (k * d + k + d + 3) * 8
    # a runtime answering with the memory reader keeps its facts of the committed memory too (one row
    # per memory token, then per timeline token), and no committed copy of the memory's tokens
    reader = (m.get("answers") or {}).get("kind") == "reader"
    tl = ((m.get("answers") or {}).get("reader") or {}).get("timeline") if reader else None
    rows = cfg["stream"]["memory_tokens"] + (tl["tokens"] if tl else 0)
    facts, committed = 0, memory_set
    if reader:
        shape0 = next(i for i in m["graphs"]["answer"]["inputs"] if i["name"] == "mem_t")["shape"][0]
        per_row = nbytes("answer", FACT_NAMES) // (shape0 if isinstance(shape0, int) else 1)
        facts = per_row * rows
        committed -= nbytes("sampler", ("mem",))
    if tl:  # its FIFO (facts, times, validity) and the committed copy's times and validity of every row
        facts += per_row * tl["tokens"] + tl["tokens"] * 2 * 4 + 2 * rows * 4
    return (2 * memory_set + clip + committed + nbytes("heads", ("svd_basis", "svd_sv")) + svd_kept
            + facts + T * P * d * 4 + T * 8 + MAX_GAPS * 16)


@pytest.mark.slow
def test_memory_constant_over_a_long_accelerated_stream(tiny_bundle, tmp_path):
    p = Proc(["--source", f"demo://checkout?seed=9&duration={LONG_S:g}", "--bundle", str(tiny_bundle)],
             tmp_path / "long.log")
    samples = []
    try:
        p.wait_ready()
        t0 = progressed = time.monotonic()
        while True:
            st = p.get("/v1/status").json()
            samples.append((st["coverage"]["end"] or 0.0, st["memory_bytes"], p.rss_mb()))
            if st["state"] != "streaming" and st["state"] != "connecting":
                break
            if len(samples) == 1 or samples[-1][0] > samples[-2][0]:
                progressed = time.monotonic()
            assert time.monotonic() - progressed < STALL_S, f"no stream progress for {STALL_S:.0f} s: {st}"
            time.sleep(0.5)
        wall = time.monotonic() - t0
        assert st["state"] == "ended" and st["frames_processed"] == int(LONG_S)
        _ask_all(p, LONG_S - 600, LONG_S - 10)
    finally:
        p.stop(signal.SIGTERM)
    expected = _expected_memory_bytes(tiny_bundle)
    assert {b for _, b, _ in samples} == {expected}, f"memory_bytes is not {expected} throughout the stream"
    warm = [r for end, _, r in samples if end >= LONG_S * 0.25]
    growth = max(warm) - min(warm)
    print(f"\n{LONG_S:.0f} s of demo video in {wall:.1f} s ({LONG_S / wall:.1f}x); memory_bytes "
          f"{samples[-1][1]}; RSS {min(warm):.0f}-{max(warm):.0f} MB after the first quarter")
    assert growth < 40, f"RSS grew {growth:.0f} MB after warm-up"


def test_terminate_a_source_that_never_connects(tiny_bundle, tmp_path):
    closed = _port()  # nothing listens there
    p = Proc(["--source", f"rtsp://127.0.0.1:{closed}/none", "--bundle", str(tiny_bundle),
              "--state-dir", str(tmp_path / "s")], tmp_path / "never.log")
    try:
        p.wait_ready()
        time.sleep(1.0)
        assert p.get("/readyz").status_code == 503
        assert p.get("/v1/status").json()["state"] == "connecting"
        assert p.stop(signal.SIGTERM, timeout=120) == 0
    finally:
        p.stop(signal.SIGKILL)
    assert (tmp_path / "s" / "snapshot.npz").is_file()
    log = p.text()
    assert "Traceback" not in log
    assert "did not stop within" not in log  # SIGTERM ended the connecting source, not the stop timeout


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_bad_input_is_one_line_and_nonzero(tiny_bundle, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["format"] = 99
    (foreign / "manifest.json").write_text(json.dumps(m))
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("bundle: x\nsource:\n  urii: 0\n")
    cases = [
        (["run", "--source", str(tmp_path / "missing.mp4"), "--bundle", str(tiny_bundle)], "no such file"),
        (["run", "--camera", "57", "--bundle", str(tiny_bundle)], "camera 57"),
        (["run", "--source", "demo://checkout", "--bundle", str(foreign)], "manifest format 99"),
        (["run", "--source", "demo://checkout", "--bundle", str(tmp_path / "nope")], "no such bundle folder"),
        (["run", "--source", "demo://checkout", "--bundle", str(tiny_bundle), "--api", "0.0.0.0:8999"],
         "without a token"),
        (["run", "--source", "demo://checkout", "--config", str(bad_cfg)], "unknown key 'source.urii'"),
        (["run", "--source", "ftp://x/y", "--bundle", str(tiny_bundle)], "unknown source scheme"),
        (["run", "--bundle", str(tiny_bundle)], "no source"),
    ]
    (tmp_path / "notvideo.mp4").write_text("hello")
    cases.append((["run", "--source", str(tmp_path / "notvideo.mp4"), "--bundle", str(tiny_bundle),
                   "--api", "none"], "notvideo.mp4"))
    for args, expect in cases:
        res = _cli(*args)
        err = res.stderr.strip().splitlines()
        assert res.returncode != 0, (args, res.stderr)
        assert err and expect in err[-1], (args, res.stderr)
        assert not any("Traceback" in line for line in err), res.stderr


def test_doctor_and_demo(tiny_bundle, tmp_path):
    res = _cli("doctor", "--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "s"))
    assert "onnxruntime" in res.stdout and "bundle lvm-tiny-fp32" in res.stdout and "writable" in res.stdout
    res = _cli("demo", "--bundle", str(tiny_bundle), "--duration", "120", "--queries", "4", timeout=300)
    assert res.returncode == 0, res.stderr
    assert "video-seconds per second" in res.stdout and "ground truth" in res.stdout
    assert len([l for l in res.stdout.splitlines() if l[:1].isdigit()]) >= 1


def test_keep_serving_survives_removing_its_last_stream(tiny_bundle, tmp_path):
    """--keep-serving: with every stream removed over the API the runtime serves on (a stream may be
    added again), and says so; it stops on SIGTERM."""
    p = Proc(["--source", "demo://checkout?seed=2&duration=40", "--bundle", str(tiny_bundle), "--keep-serving"],
             tmp_path / "run.log")
    try:
        p.wait_ready()
        p.wait_for(lambda st: st["state"] in ("ended", "streaming") and st["coverage"]["end"] is not None)
        assert httpx.delete(p.url + "/v1/streams/default", timeout=60).status_code == 200
        time.sleep(1.5)
        assert p.p.poll() is None, p.text()
        assert p.get("/healthz").status_code == 200 and p.get("/v1/streams").json()["streams"] == []
        assert "no streams left; still serving the API" in p.text()
        r = p.post("/v1/streams", json={"name": "again", "source": "demo://checkout?seed=3&duration=20"})
        assert r.status_code == 201, r.text
    finally:
        assert p.stop() == 0, p.text()


def test_a_file_restarted_on_its_state_dir_resumes_where_it_stopped(tiny_bundle, tmp_path):
    """A file (or the demo) restored from its snapshot goes on where the memory ends: it is not read
    into the memory a second time; one the memory holds to its end adds nothing, and says so."""
    from edge_runtime.engine.snapshot import read_snapshot

    video = _write_video(tmp_path / "clip.avi", seconds=40)
    args = ["--source", str(video), "--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "state"),
            "--no-keep-serving"]
    ends = []
    for run in range(2):
        p = Proc(args, tmp_path / f"run{run}.log")
        try:
            assert p.p.wait(120) == 0, p.text()
        finally:
            p.stop()
        ends.append(read_snapshot(tmp_path / "state" / "snapshot.npz")[1]["coverage"]["end"])
    assert 38 <= ends[0] <= 41 and ends[1] == ends[0], (ends, (tmp_path / "run1.log").read_text())
    assert "nothing new: the restored memory holds it up to" in (tmp_path / "run1.log").read_text()
