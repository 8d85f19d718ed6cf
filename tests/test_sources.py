"""Sources from one URI: parsing, files (every frame, sampling, pacing, damage), demo, live
reconnection/backoff/stall/drops with a scripted fake capture, and real footage from opencv-doc.

No test bounds how long something takes from above: a loaded 2-core CI box can stall any thread
for a second. "Promptly" is checked by waiting generously for an event and then checking state,
with the alternative (a wait the code under test must cut short) made minutes long; stream times
come from a fake clock where the exact numbers are the point."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge_runtime.sources.base as base_mod
import edge_runtime.sources.live as live_mod
import edge_runtime.sources.openers as openers_mod
from edge_runtime.sources import Frame, SourceError, TimestampSampler, open_source, parse_source_uri
from edge_runtime.sources.live import LiveSource

REPO = Path(__file__).resolve().parents[1]
PATIENCE_S = 30.0  # how long a test waits for something a correct source does at once


def _wait_until(cond, timeout: float = PATIENCE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _returns(fn, timeout: float = PATIENCE_S) -> bool:
    """Whether ``fn()`` returns within ``timeout`` (run on a thread so that a hang fails the test)."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


class FakeClock:
    """Stands in for the ``time`` module inside a source module: ``monotonic()`` moves only when
    the test (or a fake capture) advances it, so stream times are exact on any machine."""

    def __init__(self, now: float = 1000.0):
        self.now = now
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def advance(self, dt: float) -> None:
        with self._lock:
            self.now += dt

    def __getattr__(self, name):
        return getattr(time, name)


# ---- URI parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("uri, kind, norm, extra", [
    ("0", "camera", "/dev/video0", {"device": 0}),
    (2, "camera", "/dev/video2", {"device": 2}),
    (" 1 ", "camera", "/dev/video1", {"device": 1}),
    ("/dev/video3", "camera", "/dev/video3", {"device": 3}),
    ("v4l2:///dev/video4", "camera", "/dev/video4", {"device": 4}),
    ("/dev/v4l/by-id/usb-cam-video-index0", "camera", "/dev/v4l/by-id/usb-cam-video-index0", {"device": None}),
    ("csi://0", "csi", "csi://0", {"device": 0, "params": {"width": 1280, "height": 720, "framerate": 30, "flip": 0}}),
    ("csi://1?width=1920&height=1080&framerate=60&flip=2", "csi", "csi://1",
     {"device": 1, "params": {"width": 1920, "height": 1080, "framerate": 60, "flip": 2}}),
    ("rtsp://10.0.0.5:8554/live", "rtsp", "rtsp://10.0.0.5:8554/live", {}),
    ("rtsps://cam.local/s", "rtsp", "rtsps://cam.local/s", {}),
    ("http://cam.local/mjpg/video.mjpg", "http", "http://cam.local/mjpg/video.mjpg", {}),
    ("https://cam.local/x.m3u8", "http", "https://cam.local/x.m3u8", {}),
    ("videos/a.mp4", "file", "videos/a.mp4", {"path": "videos/a.mp4"}),
    ("/abs/b c.avi", "file", "/abs/b c.avi", {}),
    ("file:///abs/b%20c.avi", "file", "/abs/b c.avi", {}),
    ("demo://checkout", "demo", "demo://checkout",
     {"params": {"seed": 0, "duration": 1800.0, "look": None, "fps": None, "shrink": "0.03,0.02,0.02"}}),
    ("demo://", "demo", "demo://", {"params": {"seed": 0, "duration": 1800.0, "look": None, "fps": None,
                                               "shrink": "0.03,0.02,0.02"}}),
    ("demo://?seed=3&shrink=0", "demo", "demo://?seed=3&shrink=0",
     {"params": {"seed": 3, "duration": 1800.0, "look": None, "fps": None, "shrink": None}}),
    ("demo://checkout?seed=7&duration=60&look=dim&fps=5&shrink=0.1,0,0.05", "demo",
     "demo://checkout?seed=7&duration=60&look=dim&fps=5&shrink=0.1,0,0.05",
     {"params": {"seed": 7, "duration": 60.0, "look": "dim", "fps": 5.0, "shrink": "0.1,0,0.05"}}),
])
def test_parse_source_uri(uri, kind, norm, extra):
    spec = parse_source_uri(uri)
    assert spec.kind == kind
    assert spec.uri == norm
    assert spec.live == (kind in ("camera", "csi", "rtsp", "http"))
    for key, value in extra.items():
        assert getattr(spec, key) == value, key


@pytest.mark.parametrize("uri, needle", [
    ("", "empty"),
    ("foo://bar", "unknown source scheme 'foo://'"),
    ("-1", "no such file"),  # not a camera index: a (missing) file name
    ("csi://x", "csi://N"),
    ("csi://0?width=abc", "width='abc'"),
    ("csi://0?fps=30", "unknown option 'fps'"),
    ("rtsp:///path-only", "no host"),
    ("http://host:notaport/x", "malformed URL"),
    ("demo://parking", "unknown demo"),
    ("demo://checkout?seed=abc", "seed='abc'"),
    ("demo://checkout?seed=-3", "seed must be >= 0"),
    ("demo://checkout?duration=0", "duration must be positive"),
    ("demo://checkout?duration=1e308", "at most 604800 (7 days), got 1e+308"),
    ("demo://checkout?duration=nan", "finite"),
    ("demo://checkout?fps=0", "fps must be positive"),
    ("demo://checkout?color=red", "unknown option 'color'"),
    ("demo://checkout?seed=1&seed=2", "given twice"),
    ("demo://checkout?seed", "malformed query"),
    ("demo://checkout?shrink=lots", "shrink 'lots': expected 0, default, or three rates B,P,L"),
    ("demo://checkout?shrink=0.5,0.5,0.5", "shrink rates sum to 1.5"),
    ("v4l2://video0", "device node"),
])
def test_bad_uris_raise_one_line(uri, needle):
    with pytest.raises(SourceError) as err:
        open_source(uri, target_fps=1)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


def test_credentials_are_redacted_from_labels():
    spec = parse_source_uri("rtsp://admin:hunter2@10.0.0.5/stream")
    assert "hunter2" not in spec.label and "admin:***@10.0.0.5" in spec.label
    assert spec.uri == "rtsp://admin:hunter2@10.0.0.5/stream"  # the real URL still opens


# ---- sampling by timestamp --------------------------------------------------------------------

def test_sampler_grid_no_duplicates_no_bursts():
    s = TimestampSampler(10)
    ts = [i / 30 for i in range(90)]  # 30 fps for 3 s
    kept = [t for t in ts if s.keep(t)]
    assert len(kept) == 30
    assert np.allclose(np.diff(kept), 0.1, atol=1e-6)
    s = TimestampSampler(2)
    kept = [t for t in [0.0, 0.1, 0.5, 0.6, 7.3, 7.4, 7.5, 7.8, 8.0] if s.keep(t)]
    assert kept == [0.0, 0.5, 7.3, 7.8]  # one frame after the gap, then the grid again (7.5 is off it)
    assert all(TimestampSampler(None).keep(t) for t in ts)
    with pytest.raises(ValueError):
        TimestampSampler(0)


# ---- files --------------------------------------------------------------------------------------

def _write_avi(path: Path, n: int = 60, fps: float = 30.0, w: int = 64, h: int = 48) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = 200          # blue in BGR: must come out as channel 2 in RGB
        bgr[..., 1] = (i * 4) % 256  # the frame number, readable after JPEG
        cv2.putText(bgr, str(i), (2, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        writer.write(bgr)
    writer.release()
    return path


@pytest.fixture
def avi(tmp_path):
    return _write_avi(tmp_path / "clip.avi")


def test_file_every_frame(avi):
    with open_source(str(avi), target_fps=None) as src:
        assert not src.live
        frames = list(src)
    assert [f.index for f in frames] == list(range(60))
    assert np.allclose([f.t for f in frames], np.arange(60) / 30, atol=2e-3)
    img = frames[10].image
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert img[..., 2].mean() > 150 and img[..., 0].mean() < 80  # RGB, not BGR
    assert abs(float(np.median(img[..., 1])) - 40) < 8
    assert src.stats == dict(frames_in=60, frames_out=60, dropped=0, reconnects=0, decode_errors=0)
    assert src.gaps == []


@pytest.mark.parametrize("fps, expected", [(10, 20), (7, 14), (1, 2), (60, 60), (30, 60)])
def test_file_sampling_by_timestamp(avi, fps, expected):
    with open_source(f"file://{avi}", target_fps=fps, size=32) as src:
        frames = list(src)
    assert len(frames) == expected
    ts = [f.t for f in frames]
    assert len(set(f.index for f in frames)) == len(frames)  # never duplicates
    assert min(np.diff(ts)) >= min(1 / fps, 1 / 30) - 2e-3
    assert frames[0].image.shape == (32, 32, 3)
    assert src.stats["frames_in"] == 60 and src.stats["frames_out"] == expected


def test_file_view_keeps_the_whole_view_beside_the_models_frame(avi):
    """view_side: each frame also carries the camera's view, aspect kept, at most that many px on its
    longer side (the evidence pictures'); the model's frame is the same pixels as without it."""
    with open_source(str(avi), target_fps=10, size=32) as src:
        plain = list(src)
    with open_source(str(avi), target_fps=10, size=32, view_side=40) as src:
        viewed = list(src)
    assert [f.t for f in viewed] == [f.t for f in plain]
    assert all(np.array_equal(a.image, b.image) and a.view is None for a, b in zip(plain, viewed))
    assert {b.view.shape for b in viewed} == {(30, 40, 3)}  # 64 x 48 shrunk to 40 on its longer side
    with open_source(str(avi), target_fps=10, size=64, view_side=640) as src:
        assert all(f.view is None for f in src)  # no larger than the model's frame: nothing to add
    with pytest.raises(ValueError, match="view_side"):
        open_source(str(avi), target_fps=10, size=32, view_side=0)


def test_pacer_releases_each_frame_at_its_stream_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(base_mod, "time", clock)

    class Stop:  # what the pacer waits on: records the wait and lets that much time pass
        def __init__(self):
            self.waits: list[float] = []

        def wait(self, s):
            self.waits.append(round(s, 9))
            clock.advance(s)
            return False

    stop = Stop()
    pacer = base_mod.Pacer(stop)
    pacer.wait(5.0)      # the first frame goes at once and anchors stream time to the clock
    pacer.wait(5.5)      # 0.5 s of stream later: waits 0.5 s
    clock.advance(0.2)   # the consumer took 0.2 s
    pacer.wait(6.0)      # waits only the remaining 0.3 s
    clock.advance(2.0)   # the consumer fell 1.5 s behind
    pacer.wait(6.5)      # already late: no wait (and nothing dropped: files deliver every frame)
    pacer.wait(9.0)      # due 4.0 s after the anchor, 3.0 s have passed
    assert stop.waits == [0.5, 0.3, 1.0]


def _paced_order(monkeypatch, src) -> list[tuple[str, float]]:
    """What a source does, in order: each pacer wait (at a stream time) and each frame released.
    How long a wait lasts is the pacer's business (test_pacer_releases_each_frame_at_its_stream_time)."""
    events: list[tuple[str, float]] = []
    monkeypatch.setattr(base_mod.Pacer, "wait", lambda self, t: events.append(("wait", round(t, 6))))
    with src:
        for f in src:
            events.append(("frame", round(f.t, 6)))
    return events


def test_file_realtime_pacing(tmp_path, monkeypatch):
    path = _write_avi(tmp_path / "half.avi", n=15)  # 0.5 s of video
    events = _paced_order(monkeypatch, open_source(str(path), target_fps=10, realtime=True))
    ts = [0.0, 0.1, 0.2, 0.3, 0.4]
    assert events == [(kind, t) for t in ts for kind in ("wait", "frame")]  # every frame waits its turn first
    events = _paced_order(monkeypatch, open_source(str(path), target_fps=10))
    assert events == [("frame", t) for t in ts]  # without realtime nothing waits


def test_file_stop_cuts_pacing_short(tmp_path):
    # Frames a minute apart: the wait for the second one ends within the test's patience only if
    # stop() cuts it short.
    path = _write_avi(tmp_path / "long.avi", n=120, fps=1.0)  # 120 s of stream time
    src = open_source(str(path), target_fps=1 / 60, realtime=True)
    frames: list[Frame] = []
    consumer = threading.Thread(target=lambda: frames.extend(src), daemon=True)
    try:
        consumer.start()
        # frame 60 (t = 60 s) decoded: nothing but its pacing wait lies between it and the consumer
        assert _wait_until(lambda: src.stats["frames_in"] > 60)
        time.sleep(0.1)
        src.stop()
        consumer.join(PATIENCE_S)
        assert not consumer.is_alive() and len(frames) == 1
    finally:
        src.close()
    src.close()  # idempotent


@pytest.mark.parametrize("kind", ["file", "live"])
def test_close_from_a_signal_handler(tmp_path, kind):
    """What a SIGTERM handler does: close() on the thread that is iterating, mid-frame."""
    import signal

    if kind == "file":  # 2 minutes of stream time at 2 fps, paced
        src = open_source(str(_write_avi(tmp_path / "sig.avi", n=240, fps=2.0)), target_fps=None, realtime=True)
    else:  # endless
        cam = FakeCamera(fps=100)
        src = LiveSource("fake://sig", cam, target_fps=None)
    previous = signal.signal(signal.SIGUSR1, lambda *_: src.close())
    gave_up = threading.Event()  # a source that ignores close() is stopped here, and the test fails
    guard = threading.Timer(60, lambda: (gave_up.set(), src.stop()))
    try:
        guard.start()
        frames = []
        for frame in src:
            frames.append(frame)
            if len(frames) == 1:
                threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        assert frames and src.stopped and not gave_up.is_set()
    finally:
        guard.cancel()
        signal.signal(signal.SIGUSR1, previous)
        src.close()
        if kind == "live":
            cam.unblock.set()


def test_file_damaged_middle_does_not_crash(avi, tmp_path):
    path = _write_avi(tmp_path / "damaged.avi", n=90)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with open_source(str(path), target_fps=None) as src:
        frames = list(src)
    stats = src.stats
    assert stats["decode_errors"] >= 1, stats
    assert 60 <= len(frames) < 90
    assert frames[-1].t > 2.9  # the reader got past the damage to the end of the file
    assert all(np.diff([f.t for f in frames]) > 0)


def test_file_bad_frames_skipped_and_counted(avi, monkeypatch):
    """None / empty / wrong-shape frames (what damaged streams give) are decode errors, not crashes."""
    real = cv2.VideoCapture

    class Flaky:
        def __init__(self, *a):
            self._cap = real(*a)
            self._n = 0

        def retrieve(self):
            ok, img = self._cap.retrieve()
            self._n += 1
            return {3: (True, None), 4: (True, np.zeros((0, 0, 3), np.uint8)),
                    5: (True, np.zeros((8, 8, 5), np.uint8)), 6: (False, None)}.get(self._n, (ok, img))

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Flaky)
    with open_source(str(avi), target_fps=None) as src:
        frames = list(src)
    assert len(frames) == 56 and src.stats["decode_errors"] == 4
    assert [f.index for f in frames[:3]] == [0, 1, 6]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _count_captures(monkeypatch) -> list:
    """Record every cv2.VideoCapture opened from here on."""
    opened: list = []
    real = cv2.VideoCapture

    def counting(*args, **kw):
        opened.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(cv2, "VideoCapture", counting)
    return opened


@pytest.mark.parametrize("make, needle, captures", [
    (lambda d: d / "missing.mp4", "no such file", 0),
    (lambda d: d, "is a directory", 0),
    (lambda d: _written(d / "empty.avi", b""), "file is empty", 0),
    (lambda d: _written(d / "text.avi", b"not a video\n" * 50), "OpenCV cannot open", 1),
])
def test_file_open_fails_fast(tmp_path, monkeypatch, make, needle, captures):
    """Fast: what a look at the path can tell never reaches OpenCV, and OpenCV is asked once."""
    path = make(tmp_path)
    opened = _count_captures(monkeypatch)
    with pytest.raises(SourceError) as err:
        open_source(str(path), target_fps=1)
    assert len(opened) == captures
    assert needle in str(err.value) and str(path) in str(err.value)


# ---- live sources: real devices fail fast -------------------------------------------------------

@pytest.mark.parametrize("uri", ["/dev/video99", 99, "99"])
def test_missing_camera_fails_fast(uri, monkeypatch):
    """Fast: refused before any capture is opened or any background reconnection starts."""
    opened = _count_captures(monkeypatch)
    started: list = []
    monkeypatch.setattr(live_mod, "LiveSource", lambda *a, **kw: started.append(a))
    with pytest.raises(SourceError, match=r"camera 99 \(/dev/video99\): no such device"):
        open_source(uri, target_fps=1)
    assert opened == [] and started == []


def test_csi_without_gstreamer_says_so():
    from edge_runtime.sources.openers import gstreamer_available

    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer; the message under test is for builds without it")
    with pytest.raises(SourceError, match="no GStreamer support"):
        open_source("csi://0", target_fps=1)


def _closes_completely(src) -> bool:
    """close() returns and the source's supervisor thread ends (a hung reader may outlive it)."""
    if not _returns(src.close):
        return False
    src._supervisor.join(PATIENCE_S)
    return not src._supervisor.is_alive()


@pytest.mark.parametrize("uri", ["rtsp://cam.invalid/s", "http://cam.invalid/v.mjpg"])
def test_open_source_never_waits_for_the_network(monkeypatch, uri):
    attempted, release = threading.Event(), threading.Event()

    def blocking_opener(label, url, timeout_s):
        def connect():  # a connection attempt that never finishes until the test ends
            attempted.set()
            release.wait(300)
            raise SourceError(f"{label}: fake: released")
        return connect

    monkeypatch.setattr(openers_mod, "network_opener", blocking_opener)
    made: list = []
    try:
        assert _returns(lambda: made.append(open_source(uri, target_fps=1, stall_timeout_s=600)))
        src = made[0]
        assert attempted.wait(PATIENCE_S)  # the attempt runs in the background...
        assert src.live and not src.connected and src.stats["connect_failures"] == 0  # ...and is still going
        assert _closes_completely(src)
    finally:
        release.set()


def test_unreachable_rtsp_is_an_outage_and_stops():
    src = open_source("rtsp://127.0.0.1:9/none", target_fps=1, stall_timeout_s=1.0, reconnect_max_s=0.5)
    assert src.live
    assert _wait_until(lambda: src.stats["connect_failures"] + src.stats["stalls"] > 0)
    assert src.last_error and "rtsp://127.0.0.1:9/none" in src.last_error
    assert _closes_completely(src)
    assert src.gaps and src.gaps[0][0] == 0.0  # never connected: the whole run is one gap


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server for tmp_path, and a port that accepts connections but never answers."""
    import functools
    import http.server
    import socket

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    yield f"http://127.0.0.1:{srv.server_address[1]}", f"http://127.0.0.1:{silent.getsockname()[1]}"
    srv.shutdown()
    silent.close()


def test_http_stream_through_opencv_reconnects_at_end(tmp_path, http_server):
    _write_avi(tmp_path / "stream.avi", n=30)
    base, _ = http_server
    src = open_source(f"{base}/stream.avi", target_fps=None, queue_size=1000, stall_timeout_s=3.0)
    frames = _take(src, 10_000, timeout=60, until=lambda fs: src.stats["reconnects"] >= 1 and len(fs) > 30)
    src.close()
    assert src.stats["reconnects"] >= 1 and len(frames) > 30  # the stream "ended" and came back
    assert src.gaps and all(np.diff([f.t for f in frames]) > 0)
    assert frames[0].image.shape == (48, 64, 3)


def test_http_server_that_never_answers_is_a_stall_not_a_hang(http_server):
    _, silent = http_server
    src = open_source(f"{silent}/x", target_fps=1, stall_timeout_s=0.6, reconnect_max_s=0.5)
    assert _wait_until(lambda: src.stats["stalls"] + src.stats["connect_failures"] >= 1)
    assert src.stats["frames_in"] == 0
    assert _closes_completely(src)


def test_network_open_skips_the_frame_rate_probe_only_while_opening(monkeypatch):
    """FFmpeg's ~20-frame frame-rate probe cost 4-5 s of every RTSP reconnect (seen against
    GStreamer's RTSP server at 5 fps); network opens now skip it, files and the user's own
    OPENCV_FFMPEG_CAPTURE_OPTIONS are untouched."""
    env = openers_mod._NetworkOptions.ENV
    seen = []

    class Capture:
        def __init__(self, url, backend, params):
            seen.append(os.environ.get(env))

        def isOpened(self):
            return True

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    monkeypatch.delenv(env, raising=False)
    opener = openers_mod.network_opener("rtsp://cam/x", "rtsp://cam/x", 5.0)
    opener()
    assert seen == ["rtsp_flags;prefer_tcp|fpsprobesize;0"] and env not in os.environ
    monkeypatch.setenv(env, "rtsp_transport;udp")
    opener()
    assert seen[-1] == "rtsp_transport;udp" and os.environ[env] == "rtsp_transport;udp"


# ---- live sources: reconnection logic with a scripted capture -----------------------------------

class FakeCamera:
    """An opener whose captures follow a script: the first ``fail_opens`` opens raise; connection
    k (1-based among successful ones) then yields ``frames[k-1]`` frames (None = endless) at
    ``fps``, then does ``after`` ('stall': read blocks; 'fail': read returns False). Blocked
    opens and reads last until ``unblock`` is set (teardown). With a ``clock`` (FakeClock), each
    frame advances it by exactly 1/fps."""

    def __init__(self, fail_opens=0, frames=(None,), fps=200.0, after="stall", bad_every=0, hang_open=False,
                 clock=None):
        self.fail_opens, self.frames, self.fps, self.after = fail_opens, list(frames), fps, after
        self.bad_every, self.hang_open, self.clock = bad_every, hang_open, clock
        self.open_calls: list[float] = []
        self.connections = 0
        self.released = 0
        self.unblock = threading.Event()  # set at teardown so stuck fake reads return
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.open_calls.append(time.monotonic())
            calls = len(self.open_calls)
        if self.hang_open:
            self.unblock.wait(600)
            raise SourceError("fake: open hung")
        if calls <= self.fail_opens:
            raise SourceError(f"fake camera: no such device (attempt {calls})")
        with self.lock:
            self.connections += 1
            k = self.connections
        budget = self.frames[min(k, len(self.frames)) - 1]
        return _FakeCapture(self, budget)


class _FakeCapture:
    def __init__(self, cam: FakeCamera, budget):
        self.cam, self.budget, self.n = cam, budget, 0

    def read(self):
        if self.budget is not None and self.n >= self.budget:
            if self.cam.after == "stall":
                self.cam.unblock.wait(600)
            return False, None
        time.sleep(1.0 / self.cam.fps)
        if self.cam.clock is not None:
            self.cam.clock.advance(1.0 / self.cam.fps)
        self.n += 1
        if self.cam.bad_every and self.n % self.cam.bad_every == 0:
            return True, None
        img = np.full((24, 32, 3), self.n % 256, np.uint8)
        return True, img

    def release(self):
        with self.cam.lock:
            self.cam.released += 1


@pytest.fixture
def backoffs(monkeypatch):
    """(failures, delay) of every backoff a LiveSource's supervisor asks for."""
    asked: list[tuple[int, float]] = []
    real = LiveSource.backoff_delay

    def spy(self, failures):
        delay = real(self, failures)
        asked.append((failures, delay))
        return delay

    monkeypatch.setattr(LiveSource, "backoff_delay", spy)
    return asked


@pytest.fixture
def fake_sources():
    made = []

    def make(cam, **kw):
        kw.setdefault("target_fps", None)
        kw.setdefault("stall_timeout_s", 0.3)
        kw.setdefault("reconnect_base_s", 0.02)
        kw.setdefault("reconnect_max_s", 0.1)
        src = LiveSource("fake://cam", cam, **kw)
        made.append((src, cam))
        return src

    yield make
    for src, cam in made:
        cam.unblock.set()
        src.close()


def _take(src, n, timeout=PATIENCE_S, until=None):
    """Up to n frames (or until ``until(frames)``), stopping the source from a timer on timeout."""
    timer = threading.Timer(timeout, src.stop)
    timer.start()
    out: list[Frame] = []
    try:
        for frame in src:
            out.append(frame)
            if len(out) >= n or (until is not None and until(out)):
                break
    finally:
        timer.cancel()
    return out


def test_live_fails_then_delivers_then_stalls_and_reconnects(fake_sources, backoffs):
    cam = FakeCamera(fail_opens=3, frames=(20, None), fps=200)
    src = fake_sources(cam, queue_size=100_000)  # this test wants every frame
    assert src.live
    frames = _take(src, 10_000, until=lambda fs: src.stats["reconnects"] >= 1 and fs[-1].index >= 30)
    stats = src.stats
    assert stats["connect_failures"] == 3
    assert stats["stalls"] == 1
    assert stats["reconnects"] == 1
    ts = [f.t for f in frames]
    assert all(np.diff(ts) > 0)
    gaps = src.gaps
    assert len(gaps) == 2, gaps
    assert gaps[0][0] == 0.0 and gaps[0][1] == pytest.approx(ts[0])  # never-connected start
    start, end = gaps[1]
    assert end - start >= 0.3  # the stall: no frame for at least stall_timeout_s
    assert not any(start < t < end for t in ts)
    assert start in ts and end in ts  # last frame before, first frame after
    # 3 failed opens, then a connection that delivered (the count restarts), each followed by its wait
    assert [f for f, _ in backoffs[:4]] == [1, 2, 3, 0], backoffs
    waits = np.diff(cam.open_calls[:5])
    assert all(w >= d - 2e-3 for w, (_, d) in zip(waits, backoffs)), (waits, backoffs)
    assert src.connected and src.last_error is None and src.outage_since is None


def test_live_frame_flushed_at_a_read_timeout_feeds_neither_watchdog_nor_memory(fake_sources):
    """An RTSP-over-TCP stream that goes silent mid-frame (a proxy in front of GStreamer's RTSP
    server stops relaying): at its read timeout OpenCV's FFmpeg capture returned the partial frame
    it held as a success, once or twice, so the stall took 9-13.5 s to notice instead of 5 and the
    memory got frames stamped seconds after they were sent. Such a frame is no frame."""
    stall = 0.3
    reads_before_silence = 5

    class SilentMidFrame:
        unblock = threading.Event()  # set at teardown

        def __init__(self):
            self.n = 0

        def read(self):
            self.n += 1
            if self.n <= reads_before_silence:
                time.sleep(0.005)
                return True, np.full((24, 32, 3), self.n, np.uint8)
            if self.n == reads_before_silence + 1:
                time.sleep(0.95 * stall)  # blocked up to the capture's timeout, then "a frame"
                return True, np.full((24, 32, 3), 99, np.uint8)
            self.unblock.wait(600)  # silent until teardown; the watchdog abandons this reader
            return False, None

        def release(self):
            pass

    src = fake_sources(SilentMidFrame, stall_timeout_s=stall, queue_size=1000)
    frames = _take(src, 2 * reads_before_silence)
    assert len(frames) == 2 * reads_before_silence and src.stats["stalls"] >= 1
    assert not any(int(f.image[0, 0, 0]) == 99 for f in frames)
    assert src.stats["decode_errors"] >= 1


def test_live_read_failure_reconnects_quickly(fake_sources):
    cam = FakeCamera(frames=(5, 5, None), after="fail", fps=200)
    src = fake_sources(cam)
    frames = _take(src, 10_000, until=lambda fs: src.stats["reconnects"] >= 2 and len(fs) > 12)
    assert src.stats["reconnects"] >= 2 and src.stats["stalls"] == 0
    assert len(src.gaps) >= 2
    assert cam.released >= 2  # every finished connection released its capture
    assert len(frames) > 12


def test_live_latest_frame_wins(fake_sources):
    cam = FakeCamera(fps=500)
    src = fake_sources(cam, queue_size=3)
    assert _wait_until(lambda: src.stats["frames_in"] >= 40)  # a consumer that fell behind
    seen = src.stats["frames_in"]
    first = _take(src, 1)[0]
    # all but the newest three were dropped (one more may be between decode and queue)
    assert src.stats["dropped"] >= seen - 4, src.stats
    assert first.index >= seen - 4  # the oldest of the newest three, not an old frame
    later = _take(src, 20)
    assert all(b.index > a.index for a, b in zip([first] + later, later))  # no duplicates, in order


def test_live_sampling_and_bad_frames(fake_sources, monkeypatch):
    clock = FakeClock()  # source frame n (from 1) arrives at stream time n * 5 ms exactly
    monkeypatch.setattr(live_mod, "time", clock)
    cam = FakeCamera(fps=200, bad_every=3, clock=clock)  # every third frame unusable
    src = fake_sources(cam, target_fps=20, queue_size=1000)
    frames = _take(src, 10)
    # On the 20 fps grid (every 10th source frame from the first); where the grid frame is bad
    # (21, 51, 81) the next one is kept and the grid stays put.
    kept = [1, 11, 22, 31, 41, 52, 61, 71, 82, 91]
    assert [f.index for f in frames] == [n - 1 for n in kept]
    assert [f.t for f in frames] == pytest.approx([n * 0.005 for n in kept], abs=1e-9)
    assert src.stats["decode_errors"] >= 30
    assert all(f.image.shape == (24, 32, 3) for f in frames)


def test_live_garbage_stream_counts_as_stall(fake_sources):
    cam = FakeCamera(fps=100, bad_every=1)  # every frame unusable
    src = fake_sources(cam, stall_timeout_s=0.2)
    assert _wait_until(lambda: src.stats["stalls"] >= 1)
    assert src.stats["decode_errors"] > 5


@pytest.mark.parametrize("hang", [False, True])
def test_live_stop_from_never_connected_state(fake_sources, hang):
    # After the first failed (hang: stalled) attempt the supervisor waits 50-100 s to retry, and a
    # hung open never returns: close() must cut the first short and not wait for the second.
    cam = FakeCamera(fail_opens=10**9, hang_open=hang)
    src = fake_sources(cam, reconnect_max_s=100.0, reconnect_base_s=100.0)
    assert _wait_until(lambda: src.outage_since == 0.0)
    assert not src.connected
    got: list = []
    consumer = threading.Thread(target=lambda: got.extend(src))
    consumer.start()
    time.sleep(0.1)  # let it block waiting for a frame
    src.stop()
    consumer.join(PATIENCE_S)
    assert not consumer.is_alive() and got == []
    assert _closes_completely(src)
    src.close()
    assert not cam.unblock.is_set()  # the hung open was not waited for
    assert not src.connected
    assert src.stats["frames_in"] == 0
    with pytest.raises(SourceError, match="closed"):
        iter(src).__next__()


def test_backoff_bounds():
    src = LiveSource("fake://x", FakeCamera(fail_opens=10**9), target_fps=1,
                     reconnect_base_s=0.5, reconnect_max_s=30.0)
    try:
        for k in range(0, 200):
            ceiling = min(30.0, 0.5 * 2 ** k)
            d = src.backoff_delay(k)
            assert 0.5 * ceiling <= d <= ceiling
        delays = [src.backoff_delay(3) for _ in range(50)]
        assert len(set(delays)) > 40  # jittered
    finally:
        src.close()


def test_live_backoff_grows_to_cap(fake_sources, backoffs):
    cam = FakeCamera(fail_opens=10**9)
    src = fake_sources(cam, reconnect_base_s=0.01, reconnect_max_s=0.08)
    assert _wait_until(lambda: len(cam.open_calls) >= 7)
    src.close()
    asked = backoffs[:6]
    assert [f for f, _ in asked] == [1, 2, 3, 4, 5, 6]  # every empty attempt counts
    for f, d in asked:  # 0.02, 0.04, then the cap 0.08, each jittered down by up to half
        ceiling = min(0.08, 0.01 * 2 ** f)
        assert 0.5 * ceiling <= d <= ceiling, asked
    waits = np.diff(cam.open_calls[:7])
    assert all(w >= d - 2e-3 for w, (_, d) in zip(waits, asked)), (waits, asked)  # and it did wait


# ---- demo --------------------------------------------------------------------------------------

def _checkout_or_skip():
    try:
        from edge_runtime.checkout import CheckoutVideo  # noqa: F401
    except ImportError as e:
        pytest.skip(f"edge_runtime.checkout not available: {e}")


def test_demo_deterministic_and_sampled():
    _checkout_or_skip()
    uri = "demo://checkout?seed=3&duration=6&fps=10"
    with open_source(uri, target_fps=2, size=64) as a:
        fa = list(a)
    with open_source(uri, target_fps=2, size=64) as b:
        fb = list(b)
    assert [f.t for f in fa] == pytest.approx([i * 0.5 for i in range(12)])
    assert [f.index for f in fa] == list(range(0, 60, 5))
    assert a.stats["frames_in"] == 60 and a.stats["frames_out"] == 12
    assert all(np.array_equal(x.image, y.image) for x, y in zip(fa, fb))
    assert fa[0].image.shape == (64, 64, 3) and fa[0].image.dtype == np.uint8
    with open_source("demo://checkout?seed=4&duration=6&fps=10", target_fps=2, size=64) as c:
        fc = list(c)
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(fa, fc))


def test_demo_defaults_and_bad_look():
    _checkout_or_skip()
    src = open_source("demo://checkout?seed=1", target_fps=1, size=32)
    assert not src.live and src.duration_s == 1800.0 and src.frame_count == 1800
    first = next(iter(src))
    assert first.t == 0.0 and first.image.shape == (32, 32, 3)
    src.close()
    with pytest.raises(SourceError) as err:
        open_source("demo://checkout?look=no-such-look", target_fps=1)
    assert "demo://checkout?look=no-such-look" in str(err.value)


def test_demo_realtime_pacing(monkeypatch):
    _checkout_or_skip()
    uri = "demo://checkout?seed=2&duration=0.6&fps=10"
    events = _paced_order(monkeypatch, open_source(uri, target_fps=5, realtime=True, size=32))
    assert events == [(kind, t) for t in (0.0, 0.2, 0.4) for kind in ("wait", "frame")]
    assert _paced_order(monkeypatch, open_source(uri, target_fps=5, size=32)) == [("frame", t) for t in (0.0, 0.2, 0.4)]


# ---- real footage (Debian opencv-doc) ----------------------------------------------------------

@pytest.fixture(scope="module")
def footage() -> Path:
    try:
        proc = subprocess.run(["bash", str(REPO / "tools" / "fetch_footage.sh")], capture_output=True,
                              text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"real footage unavailable: tools/fetch_footage.sh failed to run ({e})")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"real footage unavailable: tools/fetch_footage.sh exit {proc.returncode}: {tail}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not (path / "vtest.avi").is_file():
        pytest.skip(f"real footage unavailable: no vtest.avi in {path}")
    return path


def test_real_footage_vtest(footage):
    with open_source(str(footage / "vtest.avi"), target_fps=1, size=112) as src:
        frames = list(src)
    assert src.stats["frames_in"] == 795 and src.stats["decode_errors"] == 0  # 79.5 s at 10 fps
    assert len(frames) == 80 and frames[-1].t == pytest.approx(79.0, abs=0.01)
    assert frames[0].image.shape == (112, 112, 3) and frames[0].image.std() > 10


def test_real_footage_damaged_megamind(footage):
    """Megamind_bugy.avi: OpenCV's decoder conceals most of the damage (garbage pixels, no error);
    whatever it reports must be counted, never raised, and the stream must reach its end."""
    with open_source(str(footage / "Megamind_bugy.avi"), target_fps=None) as src:
        frames = list(src)
    stats = src.stats
    with open_source(str(footage / "Megamind.avi"), target_fps=None) as ref:
        ref_frames = list(ref)
    assert len(ref_frames) == 270
    assert stats["frames_in"] + stats["decode_errors"] >= 250, stats
    assert len(frames) <= stats["frames_in"]
    assert all(np.diff([f.t for f in frames]) > 0)
    assert frames[-1].t > 8.5  # 270 frames at 30 fps


def test_a_failure_that_repeats_is_logged_once_then_counted(caplog, monkeypatch):
    import edge_runtime.sources.live as live_mod

    def never():  # a camera that stays unplugged
        raise SourceError("fake://cam: no such device")

    caplog.set_level("DEBUG", logger="edge_runtime.sources.live")
    src = LiveSource("fake://cam", never, target_fps=None, reconnect_base_s=0.01, reconnect_max_s=0.02)
    try:
        assert _wait_until(lambda: src.stats["connect_failures"] >= 5)
        warned = [r for r in caplog.records if r.levelname == "WARNING" and "no such device" in r.getMessage()]
        assert len(warned) == 1  # the other attempts are debug lines
        monkeypatch.setattr(live_mod, "REPEAT_LOG_S", 0.0)  # the repeat period has passed: said again, counted
        assert _wait_until(lambda: sum("more times since it was last logged" in r.getMessage()
                                       for r in caplog.records if r.levelname == "WARNING") >= 1)
    finally:
        src.close()
