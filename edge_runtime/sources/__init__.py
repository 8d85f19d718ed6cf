"""Frame sources from one URI (jetson-utils videoSource style); see ``uri.py`` for the forms.

    from edge_runtime.sources import open_source
    with open_source("rtsp://cam.local/stream", target_fps=2) as src:
        for frame in src:            # Frame(t=stream seconds, image=(H, W, 3) uint8 RGB, index)
            ...

Files and ``demo://`` yield every frame of the stream sampled at ``target_fps`` by timestamp and
then end. Live sources (camera, csi, rtsp, http) never end on their own: they reconnect in the
background until ``stop()`` / ``close()``. ``open_source`` raises ``SourceError`` (one line naming
the source) for what cannot work: a malformed URI, an unknown scheme, a missing file or camera
device, a csi:// source without GStreamer. It never blocks on a network or a device.
"""
from __future__ import annotations

import os

from edge_runtime.sources.base import Frame, Source, SourceError, TimestampSampler
from edge_runtime.sources.uri import SourceSpec, parse_source_uri

__all__ = ["Frame", "Source", "SourceError", "SourceSpec", "TimestampSampler", "open_source", "parse_source_uri",
           "preflight"]


def preflight(uri: str | int) -> SourceSpec:
    """SourceError (one line) for a source that cannot work, before a stream is started on it: a
    malformed URI, a file that is missing or does not decode (its first frame is read once), a
    camera device that is not there. Live network sources are not contacted."""
    spec = parse_source_uri(uri)
    if spec.kind == "file":
        open_source(uri, target_fps=None).close()
    if spec.kind == "camera" and spec.path and not os.path.exists(spec.path):
        raise SourceError(f"{spec.label}: no such camera (no {spec.path}; see `lvm-edge doctor`)")
    return spec


def open_source(uri: str | int, *, target_fps: float | None, realtime: bool = False, queue_size: int = 4,
                stall_timeout_s: float = 5.0, reconnect_max_s: float = 30.0, size: int | None = None,
                wait_for_device: bool = False, view_side: int | None = None) -> Source:
    """Open the source ``uri`` names.

    target_fps: frames are kept when their timestamp reaches the next 1/target_fps step (None:
        every frame). realtime: pace files and demo at stream speed (live sources are real time).
    queue_size: live sources keep at most this many sampled frames; the oldest goes first.
    stall_timeout_s: live sources with no frame for this long are reconnected.
    reconnect_max_s: the cap on the backoff between reconnection attempts.
    size: frames resized to (size, size).
    wait_for_device: a camera whose device node is not there yet is retried (with backoff) instead of
        refused: one lane of several whose camera is unplugged.
    view_side: files and live sources also give each frame's whole view at most this many px on its
        longer side (``Frame.view``, for evidence pictures); the demo renders at ``size`` only.
    """
    spec = parse_source_uri(uri)
    if spec.kind == "file":
        from edge_runtime.sources.files import FileSource

        return FileSource(spec.path, label=spec.label, target_fps=target_fps, realtime=realtime, size=size,
                          view_side=view_side)
    if spec.kind == "demo":
        from edge_runtime.sources.demo import DemoSource

        return DemoSource(spec.params, label=spec.label, target_fps=target_fps, realtime=realtime, size=size)

    from edge_runtime.sources import live, openers

    if spec.kind == "camera":
        openers.preflight_camera(spec.label, spec.path, wait=wait_for_device)
        opener = openers.camera_opener(spec.label, spec.device, spec.path)
    elif spec.kind == "csi":
        openers.preflight_csi(spec.label)
        p = spec.params
        opener = openers.csi_opener(spec.label, openers.csi_pipeline(spec.device, p["width"], p["height"],
                                                                     p["framerate"], p["flip"]))
    else:  # rtsp, http
        opener = openers.network_opener(spec.label, spec.uri, stall_timeout_s)
    return live.LiveSource(spec.label, opener, target_fps=target_fps, size=size, queue_size=queue_size,
                           stall_timeout_s=stall_timeout_s, reconnect_max_s=reconnect_max_s, view_side=view_side)
