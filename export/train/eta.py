"""How long lvm-train's stages take, so each prints an estimate before it starts.

The rates are seconds measured on 2 CPU cores per model config (30-minute generated videos at 1 fps)
by the runs docs/training.md lists. A config without its own rates borrows those of a measured
config with the same backbone and frame size (the plan names it); one with neither gets no estimate
(the plan says so). Each stage that has steps also prints a measured ETA once its first steps have run.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

# seconds on 2 CPU cores, per unit of work; "backbone": what a config must match to borrow them
RATES_2_CORES = {
    "lvm-tiny": {
        "backbone": ("resnet10t", 112),
        # measured in one run of lvm-train --config lvm-tiny with an empty token cache on a 2-core host
        # whose float32 matrix multiply reaches 124-131 GFLOP/s (docs/training.md; a host twice as fast
        # takes about half): render + backbone tokens of one 30-minute video (18 + 62 s for 8 videos)
        "tokens_per_video": (18.0 + 62.0) / 8,
        # backbone pre-training: one frame or crop through one epoch (418 s for 3 epochs of 6,104)
        "pretrain_per_frame_epoch": 418.0 / 18312,
        # stage 1: one step of 8 videos' clips (1,291 s for 672 steps)
        "stage1_per_step": 1291.0 / 672,
        # the heads stage: one step of 64 queries (about 5 s, measured apart on a faster host)
        "heads_per_step": 5.0,
        # the reader stage: one 30-minute video rendered, encoded and streamed through the sampler
        # (158 videos in 33.0 min)
        "reader_per_video": 33.0 * 60 / 158,
        # the reader stage: one step of 8 memories (20 steps timed apart from the run)
        "reader_per_step": 0.45,
        # the event stage: one frame rendered and encoded, one step of 128 frames (lvm-train --events-only)
        "events_per_frame": 240.0 / 9355,
        "events_per_step": 0.7,
        # the track labeler stage: one 30-minute video rendered at 5 fps, encoded, read by the event head
        # and tracked; one epoch of one video's tracks (12 videos in 655 s, 10 epochs in 325 s)
        "track_labels_per_video": 655.0 / 12,
        "track_labels_per_epoch_video": 325.0 / 120,
    },
    # measured at lvm-train's defaults (2 threads) with a pre-trained backbone and an untrained sampler,
    # the first steps of each stage only (docs/training.md, "lvm-edge on 2 CPU cores"); no heads stage
    "lvm-edge": {
        "backbone": ("mobilenetv4_conv_small", 224),
        # render (25 s) + backbone tokens (445 s) of 8 videos
        "tokens_per_video": (25.0 + 445.0) / 8,
        # 315 s for 3 epochs of 3,180 frames and crops
        "pretrain_per_frame_epoch": 315.0 / 9540,
        # a learning step 27 s (median of 8), a memory-write step ~5 s; 5 of a group's 30 steps write only
        "stage1_per_step": (25 * 27.0 + 5 * 5.0) / 30,
        # memories and timeline rows of a video 101.5 s, and the tokens of the 26 of 34 stage 1 did not encode
        "reader_per_video": 101.5 + 26 / 34 * (25.0 + 445.0) / 8,
        # 27.4-28.0 s a step of 8 memories
        "reader_per_step": 27.7,
    },
}


def rates_for(name: str, backbone: tuple[str, int] | None = None) -> tuple[str, dict[str, float]] | None:
    """(whose rates, the rates) for a config: its own, else a measured config's with the same
    (backbone name, frame size), else None."""
    if name in RATES_2_CORES:
        return name, RATES_2_CORES[name]
    for other, rates in RATES_2_CORES.items():
        if backbone is not None and rates["backbone"] == tuple(backbone):
            return other, rates
    return None


def stream_clips(video_s: float, fps: float, clip_frames: int) -> int:
    """Whole clips of ``clip_frames`` in a video of ``video_s`` seconds streamed at ``fps``, as stage 1
    counts them: its frames are at t = k / fps for every t < video_s (CheckoutVideo.frames; a file
    sampled by timestamp alike), so 79.5 s at 1 fps is 80 frames, 5 clips of 16."""
    return math.ceil(video_s * fps - 1e-9) // clip_frames


def minutes(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def estimate(unit: str, count: float, video_s: float = 1800.0, rates: dict[str, float] | None = None) -> float:
    """Seconds for ``count`` units of ``unit`` (a key of the rates; default lvm-tiny's); per-video
    rates scale with the video's length."""
    per_video = unit.endswith("_per_video")
    rates = RATES_2_CORES["lvm-tiny"] if rates is None else rates
    return rates[unit] * count * (video_s / 1800.0 if per_video else 1.0)


class StepETA:
    """Prints once, after ``after`` timed steps, how long the remaining steps will take at the rate seen.

    ``step(timed=False)`` marks a step that is not representative: stage 1's first clips of each
    stream group have no query in their past, so they only write the memory and cost a fraction of a
    learning step (lvm-edge: 3 s against 30 s). Timing those made the first ETA 10x too short; only
    timed steps set the rate, and the remaining count (all steps) is priced at it: at worst an
    overestimate by the untimed steps' share."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, after: int = 5) -> None:
        self.what, self.total, self.log, self.after = what, total, log, after
        self.last: float | None = None
        self.done = self.timed = 0
        self.spent = 0.0
        self.said = False

    def step(self, timed: bool = True) -> None:
        """Call at the end of each step (the first call only starts the clock)."""
        now = time.time()
        if self.last is not None and timed:
            self.spent += now - self.last
            self.timed += 1
        self.last = now
        self.done += 1
        left = self.total - self.done
        if self.log is not None and not self.said and self.timed >= self.after and left > 0:
            self.said = True
            rate = self.spent / self.timed
            self.log(f"{self.what}: {rate:.2f} s a step, ~{minutes(rate * left)} for the remaining {left} steps")
