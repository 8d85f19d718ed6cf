"""One string names any source (after jetson-utils' videoSource):

  0, 3, /dev/video0, v4l2:///dev/video0   V4L2 camera (``--camera N`` on the CLI means ``N``)
  csi://0?width=1280&height=720&framerate=30&flip=0
                                          Jetson CSI camera through GStreamer nvarguscamerasrc
  rtsp://[user:pass@]host[:port]/path     network streams (also rtsps://, http://, https://)
  path/to/video.mp4, file:///abs/x.avi    any file OpenCV can read
  demo://checkout?seed=N&duration=S&look=L&fps=F&shrink=R
                                          the procedural checkout generator (edge_runtime.checkout);
                                          shrink: scan avoidance, 0, default (the default) or B,P,L:
                                          each bought item's odds of being bagged unscanned,
                                          passed around the scanner, left in the basket

Parsing checks the form only; opening checks that the thing exists (``open_source``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from edge_runtime.sources.base import SourceError

LIVE_KINDS = ("camera", "csi", "rtsp", "http")
KNOWN_SCHEMES = ("csi", "rtsp", "rtsps", "http", "https", "file", "demo", "v4l2")
DEMO_DEFAULT_DURATION_S = 1800.0
# the demo's script is built for its whole length when it opens (7 days: about 3 s and 70 MB); a longer
# one would hold the stream at "connecting" while it grows without bound
DEMO_MAX_DURATION_S = 7 * 86400.0
CSI_DEFAULTS = {"width": 1280, "height": 720, "framerate": 30, "flip": 0}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_VIDEO_NODE = re.compile(r"^/dev/video(\d+)$")


@dataclass(frozen=True)
class SourceSpec:
    kind: str                   # camera | csi | rtsp | http | file | demo
    uri: str                    # normalised: /dev/video0, csi://0, the URL, the file path, demo://...
    label: str                  # for messages and logs; credentials redacted
    device: int | None = None   # camera / csi index (None for a camera named by a non-videoN path)
    path: str | None = None     # camera device node or file path
    params: dict[str, Any] = field(default_factory=dict)  # csi / demo options, typed

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS

    @property
    def identity(self) -> str:
        """The stream this names, the same however it was written (a relative or absolute path,
        ``3`` or ``/dev/video3``, demo options in any order); credentials redacted. Snapshots record
        it, so that a memory is never continued with another source's frames."""
        if self.kind == "file":
            return os.path.abspath(self.path or self.uri)
        if self.kind == "demo":
            opts = "&".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in sorted(self.params.items()) if v is not None)
            return f"demo://checkout?{opts}"
        if self.kind in ("rtsp", "http"):
            return self.label
        return self.uri


def parse_source_uri(uri: str | int) -> SourceSpec:
    """A SourceSpec for ``uri``; SourceError (one line) for a malformed or unknown one."""
    if isinstance(uri, bool):
        raise SourceError(f"source {uri!r}: not a source URI")
    if isinstance(uri, int):
        return _camera(uri)
    if not isinstance(uri, str):
        raise SourceError(f"source {uri!r}: expected a string or camera index, got {type(uri).__name__}")
    text = uri.strip()
    if not text:
        raise SourceError("source '': empty source URI")
    if text.isdigit():
        return _camera(int(text))

    m = _SCHEME.match(text)
    if m is None:
        if text.startswith("/dev/"):
            return _device_path(text)
        path = os.path.expanduser(text)
        return SourceSpec("file", path, f"file {path}", path=path)

    scheme = m.group(1).lower()
    if scheme == "v4l2":
        path = text[len(m.group(0)):]
        if not path.startswith("/dev/"):
            raise SourceError(f"{text}: v4l2:// needs a device node, e.g. v4l2:///dev/video0")
        return _device_path(path)
    if scheme == "file":
        path = os.path.expanduser(unquote(text[len(m.group(0)):]))
        if not path:
            raise SourceError(f"{text}: file:// needs a path")
        return SourceSpec("file", path, f"file {path}", path=path)
    if scheme == "csi":
        return _csi(text)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        return _network(text, scheme)
    if scheme == "demo":
        return _demo(text)
    known = ", ".join(s + "://" for s in KNOWN_SCHEMES)
    raise SourceError(f"{_redact(text)}: unknown source scheme '{scheme}://' "
                      f"(known: a camera index, /dev/videoN, {known}, a file path)")


def _camera(n: int) -> SourceSpec:
    if n < 0:
        raise SourceError(f"camera {n}: camera index must be >= 0")
    node = f"/dev/video{n}"
    return SourceSpec("camera", node, f"camera {n} ({node})", device=n, path=node)


def _device_path(path: str) -> SourceSpec:
    m = _VIDEO_NODE.match(path)
    if m:
        return _camera(int(m.group(1)))
    # /dev/v4l/by-id/... names survive re-plugging; OpenCV's V4L2 backend opens them by path.
    return SourceSpec("camera", path, f"camera {path}", path=path)


def _query(text: str, parts, allowed: dict[str, type], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise SourceError(f"{label}: malformed query string '{parts.query}'") from None
    for key, value in pairs:
        if key not in allowed:
            raise SourceError(f"{label}: unknown option '{key}' (known: {', '.join(allowed)})")
        if key in out:
            raise SourceError(f"{label}: option '{key}' given twice")
        kind = allowed[key]
        try:
            v = kind(value)
        except ValueError:
            raise SourceError(f"{label}: option {key}={value!r} is not a valid {kind.__name__}") from None
        if kind is float and not (v == v and abs(v) != float("inf")):
            raise SourceError(f"{label}: option {key}={value!r} must be finite")
        out[key] = v
    return out


def _csi(text: str) -> SourceSpec:
    parts = urlsplit(text)
    label = f"csi://{parts.netloc}"
    if not parts.netloc.isdigit() or parts.path not in ("", "/"):
        raise SourceError(f"{text}: expected csi://N with N the sensor id, e.g. csi://0")
    params = dict(CSI_DEFAULTS)
    params.update(_query(text, parts, {k: int for k in CSI_DEFAULTS}, label))
    for key in ("width", "height", "framerate"):
        if params[key] <= 0:
            raise SourceError(f"{label}: {key} must be positive, got {params[key]}")
    if not 0 <= params["flip"] <= 7:
        raise SourceError(f"{label}: flip must be 0..7 (nvvidconv flip-method), got {params['flip']}")
    n = int(parts.netloc)
    return SourceSpec("csi", f"csi://{n}", f"csi://{n}", device=n, params=params)


def _network(text: str, scheme: str) -> SourceSpec:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 — raises for a non-numeric port
    except ValueError as e:
        raise SourceError(f"{_redact(text)}: malformed URL ({e})") from None
    if not parts.hostname:
        raise SourceError(f"{_redact(text)}: URL has no host")
    kind = "rtsp" if scheme in ("rtsp", "rtsps") else "http"
    return SourceSpec(kind, text, _redact(text))


def _demo(text: str) -> SourceSpec:
    parts = urlsplit(text)
    label = _redact(text)
    # the checkout video is the only demo, so a bare demo:// (or demo://?seed=3) is it
    if parts.netloc not in ("checkout", "") or parts.path not in ("", "/"):
        raise SourceError(f"{label}: unknown demo '{parts.netloc}{parts.path}' (known: demo://checkout)")
    params: dict[str, Any] = {"seed": 0, "duration": DEMO_DEFAULT_DURATION_S, "look": None, "fps": None,
                              "shrink": "default"}
    params.update(_query(text, parts, {"seed": int, "duration": float, "look": str, "fps": float, "shrink": str}, label))
    params["shrink"] = _demo_shrink(params["shrink"], label)
    if params["seed"] < 0:
        raise SourceError(f"{label}: seed must be >= 0, got {params['seed']}")
    if not 0 < params["duration"] <= DEMO_MAX_DURATION_S:  # also NaN
        raise SourceError(f"{label}: duration must be positive seconds, at most {DEMO_MAX_DURATION_S:.0f} "
                          f"(7 days), got {params['duration']:g}")
    if params["fps"] is not None and params["fps"] <= 0:
        raise SourceError(f"{label}: fps must be positive, got {params['fps']}")
    if params["look"] == "":
        raise SourceError(f"{label}: look is empty")
    return SourceSpec("demo", text, label, params=params)


def _demo_shrink(text: str, label: str) -> str | None:
    """The demo's scan-avoidance rates, normalised ('B,P,L', None when off) so that a stream's identity
    does not depend on how they were written, and a video without shrink keeps the identity it had
    before the option existed (its snapshots stay usable)."""
    from edge_runtime.checkout.shrink import ShrinkRates

    try:
        rates = ShrinkRates.parse(text)
    except ValueError as err:
        raise SourceError(f"{label}: {err}") from None
    return rates.tag() if rates.on else None


def _redact(url: str) -> str:
    """The URL without its password: labels end up in logs and API answers."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", url)
