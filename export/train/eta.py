"""How long lvm-train's stages take, so each prints an estimate before it starts.

The rates are seconds measured on 2 CPU cores (lvm-tiny, 30-minute generated videos at 1 fps) by
the runs docs/training.md lists; other configs, video lengths and machines scale from them roughly.
Each stage that has steps also prints a measured ETA once its first steps have run.
"""
from __future__ import annotations

import time
from collections.abc import Callable

# seconds on 2 CPU cores, lvm-tiny, per unit of work
RATES_2_CORES = {
    # render + backbone tokens of one 30-minute video (246 s for 8 videos, no token cache)
    "tokens_per_video": 246.0 / 8,
    # backbone pre-training: one frame or crop through one epoch (about 5 min for 3 epochs of ~3,000)
    "pretrain_per_frame_epoch": 300.0 / 9000,
    # stage 1: one step of 8 videos' clips (2,284 s for 672 steps)
    "stage1_per_step": 2284.0 / 672,
    # the heads stage: one step of 64 queries (about 5 s)
    "heads_per_step": 5.0,
    # the reader stage: one 30-minute video rendered, encoded (no token cache) and streamed through the
    # sampler, one thread (2 videos in 32 s on a quiet machine, in 50 s beside other jobs: the slower)
    "reader_per_video": 25.0,
    # the reader stage: one step of 8 memories, one thread (30 steps in 15 s; the shipped reader's
    # 1,500 steps took 9.2 min, 0.37 s a step)
    "reader_per_step": 0.5,
}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def estimate(unit: str, count: float, video_s: float = 1800.0) -> float:
    """Seconds for ``count`` units of ``unit`` (a key of RATES_2_CORES); per-video rates scale with
    the video's length."""
    per_video = unit.endswith("_per_video")
    return RATES_2_CORES[unit] * count * (video_s / 1800.0 if per_video else 1.0)


class StepETA:
    """Prints once, after ``after`` steps, how long the remaining steps will take at the rate seen."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, after: int = 5) -> None:
        self.what, self.total, self.log, self.after = what, total, log, after
        self.t0: float | None = None
        self.done = 0

    def step(self) -> None:
        if self.t0 is None:
            self.t0 = time.time()
        self.done += 1
        if self.log is not None and self.done == self.after and self.total > self.after:
            rate = (time.time() - self.t0) / self.after
            self.log(f"{self.what}: {rate:.2f} s a step, ~{minutes(rate * (self.total - self.after))} "
                     f"for the remaining {self.total - self.after} steps")
