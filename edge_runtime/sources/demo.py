"""``demo://checkout``: the procedural checkout video as a file-like source, so the runtime runs
on a fresh machine with no camera and no footage.

The stream has frames at ``fps`` (the URI's, else ``target_fps``, else 10) from t = 0 to
``duration``. Rendering is the expensive part and a frame depends only on (seed, look, t), so
only the frames the sampler keeps are rendered; ``frames_in`` still counts every frame of the
stream, exactly as a file source decoding the same video would.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from edge_runtime.sources.base import Frame, Source, SourceError, fit_size

DEFAULT_DEMO_FPS = 10.0


class DemoSource(Source):
    live = False

    def __init__(self, params: dict[str, Any], *, label: str, target_fps: float | None,
                 realtime: bool = False, size: int | None = None):
        super().__init__(label, target_fps=target_fps, size=size)
        try:
            from edge_runtime.checkout.video import CheckoutVideo
        except ImportError as e:
            raise SourceError(f"{label}: the checkout generator is not available ({e})") from None
        self.seed = int(params.get("seed", 0))
        self.duration_s = float(params["duration"])
        self.fps = self.native_fps = float(params.get("fps") or target_fps or DEFAULT_DEMO_FPS)
        self.realtime = realtime
        kwargs: dict[str, Any] = {"duration_s": self.duration_s}
        if params.get("look") is not None:
            kwargs["look"] = params["look"]
        if params.get("shrink") is not None:  # scan avoidance: the URI's rates (default ones unless shrink=0)
            kwargs["shrink"] = params["shrink"]
        if size is not None:
            kwargs["size"] = size
        try:
            self.video = CheckoutVideo(self.seed, **kwargs)
        except (ValueError, TypeError) as e:
            raise SourceError(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._till: list[tuple[str, float]] | None = None
        self._till_tx: list[tuple[str, float]] | None = None
        self.frame_count = max(1, math.ceil(self.duration_s * self.fps - 1e-9))
        self._next = 0

    def till_reads(self) -> list[tuple[str, float]]:
        """The demo checkout's till: (product, video seconds) of each good scanner read, what a store's
        point-of-sale system would send (``alerts.scans: pos``; edge_runtime/checkout/shrink.py)."""
        if self._till is None:
            from edge_runtime.checkout.shrink import pos_scans

            self._till = pos_scans(self.video.annotations())
        return self._till

    def till_transactions(self) -> list[tuple[str, float]]:
        """The demo checkout's till transactions: ("start" | "end", video seconds) of each customer's
        (edge_runtime/checkout/shrink.py ``till_transactions``)."""
        if self._till_tx is None:
            from edge_runtime.checkout.shrink import till_transactions

            self._till_tx = till_transactions(self.video.annotations())
        return self._till_tx

    def _frames(self) -> Iterator[Frame]:
        while self._next < self.frame_count and not self._stop.is_set():
            index = self._next
            self._next += 1
            t = index / self.fps
            self._count("frames_in")
            if not self._sampler.keep(t):
                continue
            image = np.ascontiguousarray(self.video.frame(t), dtype=np.uint8)
            image = fit_size(image, self.size)
            if self.realtime:
                self._pacer.wait(t)
                if self._stop.is_set():
                    return
            yield Frame(t=t, image=image, index=index)
