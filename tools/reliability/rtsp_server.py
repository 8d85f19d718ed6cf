"""A real RTSP server on loopback for the reliability suite: GStreamer's RTSP server (gst-rtsp-server,
the library many NVRs and camera firmwares build on) serving a looping JPEG image sequence as H.264
over RTSP (TCP interleaved only, so one TCP connection carries the whole session and a TCP proxy
in front of it sees every byte).

Runs under the SYSTEM python (PyGObject comes from Debian, not from pip):

    /usr/bin/python3 -m tools.reliability.rtsp_server --port 8554 --frames /tmp/f/%05d.jpg --fps 5
    -> prints "ready rtsp://127.0.0.1:8554/x" once it accepts connections; runs until SIGTERM/SIGINT

Needs: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
gstreamer1.0-plugins-ugly (x264enc). ``--check`` only checks those and exits 0, or 1 naming what
is missing.

From the venv, ``RtspPeer`` starts it as a subprocess, SIGKILLs it (a camera or NVR losing power)
and starts it again on the same port; ``render_frames`` writes the looping sequence from the
procedural checkout video, so the model sees the footage it was trained on.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"

ELEMENTS = {"multifilesrc": "gstreamer1.0-plugins-good", "jpegdec": "gstreamer1.0-plugins-good",
            "rtph264pay": "gstreamer1.0-plugins-good", "x264enc": "gstreamer1.0-plugins-ugly",
            "videoconvert": "gstreamer1.0-plugins-base", "videorate": "gstreamer1.0-plugins-base"}


def _gst():
    """(Gst, GstRtspServer, GLib, GstRtsp) or SystemExit with the missing package named."""
    try:
        import gi
    except ImportError:
        raise SystemExit("rtsp_server: no PyGObject for this python (apt-get install python3-gi)") from None
    try:
        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        gi.require_version("GstRtsp", "1.0")
        from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
    except (ValueError, ImportError) as e:
        raise SystemExit(f"rtsp_server: GStreamer's RTSP server cannot be imported ({e}); "
                         "apt-get install gir1.2-gst-rtsp-server-1.0") from None
    Gst.init(None)
    missing = sorted({pkg for name, pkg in ELEMENTS.items() if Gst.ElementFactory.find(name) is None})
    if missing:
        raise SystemExit(f"rtsp_server: GStreamer elements missing; apt-get install {' '.join(missing)}")
    return Gst, GstRtspServer, GLib, GstRtsp


def launch_line(frames: str, fps: int) -> str:
    # multifilesrc loops the sequence forever; its buffers carry timestamps at ``fps`` and the
    # server's sink plays them at that rate. A key frame every second: a client that connects (or
    # reconnects) decodes within a second.
    return (f"( multifilesrc location={frames} index=0 loop=true caps=image/jpeg,framerate={fps}/1 "
            f"! jpegdec ! videoconvert ! video/x-raw,format=I420 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=512 "
            f"! rtph264pay name=pay0 pt=96 config-interval=1 )")


def render_frames(folder: Path, *, seconds: float = 60.0, fps: int = 15, seed: int = 3, size: int = 224) -> str:
    """JPEG frames of the checkout video in ``folder``; -> the pattern for ``--frames``. Venv only."""
    import cv2

    from edge_runtime.checkout import CheckoutVideo

    folder.mkdir(parents=True, exist_ok=True)
    pattern = str(folder / "%05d.jpg")
    if not (folder / "00000.jpg").is_file():
        video = CheckoutVideo(seed=seed, duration_s=seconds, size=size)
        for i, (_, rgb) in enumerate(video.frames(fps=float(fps))):
            cv2.imwrite(pattern % i, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return pattern


def unavailable() -> str | None:
    """None when the system python can run this server; else one line naming what to install."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON} (the server needs Debian's python3-gi)"
    res = subprocess.run([SYSTEM_PYTHON, __file__, "--check"], capture_output=True, text=True, timeout=60)
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["rtsp_server --check failed"])[-1]


class RtspPeer:
    """This server as a subprocess on 127.0.0.1:``port``: start, SIGKILL, start again (same port)."""

    def __init__(self, frames: str, port: int, *, fps: int = 15, path: str = "/x", log: Path | None = None):
        self.frames, self.port, self.fps, self.path = frames, port, fps, path
        self.url = f"rtsp://127.0.0.1:{port}{path}"
        self.log = log
        self.p: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it accepts connections; -> time.monotonic() at that moment."""
        err = open(self.log, "ab") if self.log else subprocess.DEVNULL
        cmd = [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--path", self.path,
               "--frames", self.frames, "--fps", str(self.fps)]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        if err is not subprocess.DEVNULL:
            err.close()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if ready else ""  # "ready ..." once attached; "" if it died
        if not line.startswith("ready"):
            self.kill()
            raise RuntimeError(f"rtsp_server did not start on port {self.port} (see {self.log})")
        self.starts += 1
        return time.monotonic()

    def kill(self) -> float:
        """SIGKILL (no RTSP TEARDOWN, no goodbye); -> time.monotonic() once it is gone."""
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(30)
        if self.p is not None and self.p.stdout is not None:
            self.p.stdout.close()
        return time.monotonic()

    def __enter__(self) -> "RtspPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/x")
    ap.add_argument("--frames", help="JPEG sequence pattern, e.g. dir/%%05d.jpg")
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--check", action="store_true", help="only check that GStreamer's RTSP server is usable")
    args = ap.parse_args(argv)
    Gst, GstRtspServer, GLib, GstRtsp = _gst()
    if args.check:
        print(f"ok {Gst.version_string()}")
        return 0
    if not args.frames:
        ap.error("--frames is required")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.frames, args.fps))
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
