"""CheckoutVideo: one procedural checkout video (script from the seed, drawing from the look)."""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .annotations import build_annotations, copy_annotations, frame_labels
from .render import Renderer
from .scene import resolve_look
from .script_builder import build_script
from .shrink import ShrinkRates, resolve_shrink

DEFAULT_DURATION_S = 1800.0


class CheckoutVideo:
    """A deterministic self-checkout video.

    ``seed`` fixes the script (customers, items, events, distractors, lighting drift); ``look`` only
    changes how it is drawn (counter, light, camera placement; ``TRAIN_LOOKS`` / ``EVAL_LOOKS``).
    ``frame(t)`` is a pure function of (seed, look, size, t). A shorter video with the same seed is a
    prefix of a longer one (events that would end after ``duration_s`` are left out).

    ``shrink`` (``ShrinkRates``, a mapping of its rates, or text such as ``"default"`` or
    ``"0.03,0.02,0.02"``) adds scan avoidance (shrink.py); off (None, the default, or all rates 0) the
    video is exactly the one without it: training and the accuracy benchmark use videos without.
    """

    def __init__(self, seed: int, duration_s: float = DEFAULT_DURATION_S, size: int = 112,
                 look: int | str | None = None, shrink: ShrinkRates | dict | str | None = None) -> None:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        if size < 16:
            raise ValueError(f"size must be >= 16 px, got {size}")
        self.seed = int(seed)
        self.duration_s = float(duration_s)
        self.size = int(size)
        self.look = resolve_look(look, self.seed)
        self.shrink = resolve_shrink(shrink)
        self.script = build_script(self.seed, self.duration_s, self.shrink)
        self._renderer: Renderer | None = None
        self._annotations: dict | None = None

    @property
    def video_id(self) -> str:
        vid = f"checkout-s{self.seed}-l{self.look}"
        if self.duration_s != DEFAULT_DURATION_S:
            vid += f"-d{self.duration_s:g}"
        if self.shrink is not None:  # another video than the one without: caches keyed by id must not mix them
            vid += "-shrink" + self.shrink.tag().replace(",", "-")
        return vid

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.script, self.look, self.size)
        return self._renderer

    def frame(self, t: float) -> np.ndarray:
        """(size, size, 3) uint8 RGB at time t seconds."""
        return self.renderer.render(float(t))

    def frames(self, fps: float, start: float = 0.0, end: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
        """Frames at t = k / fps for start <= t < end (end defaults to the duration)."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        end = self.duration_s if end is None else min(float(end), self.duration_s)
        k = int(math.ceil(start * fps - 1e-9))
        while True:
            t = k / fps
            if t >= end - 1e-9:
                return
            yield t, self.frame(t)
            k += 1

    def annotations(self) -> dict:
        """ReST-like ground truth (docs/annotation-format.md); computed once, returned as a fresh copy."""
        if self._annotations is None:
            self._annotations = build_annotations(self.video_id, self.script, self.look, self.size, self.renderer.H)
        return copy_annotations(self._annotations)

    def object_crop(self, instance_id: int, size: int | None = None) -> np.ndarray:
        """(size, size, 3) uint8 RGB image of one product instance alone on a neutral grey background."""
        if instance_id not in self.script.instances:
            raise KeyError(f"{self.video_id}: no instance {instance_id}")
        return self.renderer.crop(self.script.instances[instance_id], int(size or self.size))

    def frame_labels(self, t: float) -> dict:
        return frame_labels(self.script, self.renderer.H, float(t))

    def __getstate__(self) -> dict:
        # caches are rebuilt on demand: keeps pickles (multiprocessing workers) small
        return {**self.__dict__, "_renderer": None, "_annotations": None}

    def __repr__(self) -> str:
        extra = f", shrink='{self.shrink.tag()}'" if self.shrink is not None else ""
        return f"CheckoutVideo(seed={self.seed}, duration_s={self.duration_s:g}, size={self.size}, look={self.look}{extra})"
