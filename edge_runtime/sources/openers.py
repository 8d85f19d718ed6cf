"""Openers for real devices: how ``LiveSource`` (edge_runtime/sources/live.py) gets a capture from a
V4L2 camera, a Jetson CSI camera (GStreamer) or a network stream (FFmpeg), and the fast pre-flight
checks ``open_source`` makes before it returns. An opener is a callable returning an object with
``read() -> (ok, image)`` and ``release()`` (``cv2.VideoCapture`` is one); it raises SourceError,
one line, when the source cannot be opened. OpenCV is imported only when an opener runs.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Protocol

from edge_runtime.sources.base import SourceError
from edge_runtime.sources.files import quiet_decoder_logs


class Capture(Protocol):
    def read(self) -> tuple[bool, Any]: ...
    def release(self) -> None: ...


Opener = Callable[[], Capture]  # raises SourceError (one line) when the source cannot be opened

# Network captures time out after this fraction of the stall timeout (see network_opener).
READ_TIMEOUT_FRACTION = 0.9


def gstreamer_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1].upper()
    return False


def csi_pipeline(sensor_id: int, width: int, height: int, framerate: int, flip: int) -> str:
    """nvarguscamerasrc → NVMM NV12 → nvvidconv (flip, to BGRx) → BGR appsink, newest buffer only."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={framerate}/1, format=NV12 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw, width={width}, height={height}, format=BGRx ! "
            f"videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


def _opened(cap: Capture, why: str) -> Capture:
    """The capture, or SourceError(why) with the capture released (an unopened one still holds the device)."""
    if not cap.isOpened():
        cap.release()
        raise SourceError(why)
    return cap


def camera_opener(label: str, device: int | None, path: str) -> Opener:
    def open_camera() -> Capture:
        quiet_decoder_logs()
        import cv2

        if not os.path.exists(path):
            raise SourceError(f"{label}: no such device")
        backend = cv2.CAP_V4L2 if hasattr(cv2, "CAP_V4L2") and os.name == "posix" else cv2.CAP_ANY
        cap = cv2.VideoCapture(device if device is not None else path, backend)
        return _opened(cap, f"{label}: cannot open (busy, or not a capture device)")

    return open_camera


def csi_opener(label: str, pipeline: str) -> Opener:
    def open_csi() -> Capture:
        quiet_decoder_logs()
        import cv2

        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        return _opened(cap, f"{label}: GStreamer pipeline did not start (no nvarguscamerasrc / "
                            "camera, or nvargus-daemon not running)")

    return open_csi


class _NetworkOptions:
    """FFmpeg options for network opens, in the one place OpenCV takes them: an environment variable
    it reads at each open. Left alone, FFmpeg probes a live H.264 stream for ~20 frames to estimate
    a frame rate the live source never uses (it times frames by the clock): 4-5 s of a returning
    camera lost on every reconnect. ``fpsprobesize 0`` skips only that; codec parameters are still
    probed for. prefer_tcp is what OpenCV sets when the variable is unset. Set while any network
    open is in progress (counted, so a hung open never blocks another), never over the user's own."""
    ENV, VALUE = "OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_flags;prefer_tcp|fpsprobesize;0"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opening = 0
        self._owned = False

    def __enter__(self) -> None:
        with self._lock:
            if self._opening == 0:
                self._owned = self.ENV not in os.environ
                if self._owned:
                    os.environ[self.ENV] = self.VALUE
            self._opening += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._opening -= 1
            if self._opening == 0 and self._owned:
                os.environ.pop(self.ENV, None)
                self._owned = False


_network_options = _NetworkOptions()


def network_opener(label: str, url: str, timeout_s: float) -> Opener:
    def open_stream() -> Capture:
        quiet_decoder_logs()
        import cv2

        # A little under the stall timeout: FFmpeg gives up (and the reader releases) just before
        # the watchdog would abandon the reader, so stuck readers do not pile up.
        ms = int(max(READ_TIMEOUT_FRACTION * timeout_s, 0.5) * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        with _network_options:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        return _opened(cap, f"{label}: cannot connect (unreachable, refused, or not a stream)")

    return open_stream


def preflight_camera(label: str, path: str, wait: bool = False) -> None:
    """Fail fast for what retrying cannot fix at start-up: no device node (unless ``wait``: a camera
    expected to be plugged in, retried like a lost one), no permission."""
    if not os.path.exists(path):
        if wait:
            return
        raise SourceError(f"{label}: no such device")
    if not os.access(path, os.R_OK | os.W_OK):
        raise SourceError(f"{label}: permission denied (is the user in the 'video' group?)")


def preflight_csi(label: str) -> None:
    if not gstreamer_available():
        raise SourceError(f"{label}: this OpenCV build has no GStreamer support (cv2.getBuildInformation() "
                          "says GStreamer: NO); csi:// needs JetPack's OpenCV or one built with GStreamer")
