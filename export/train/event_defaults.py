"""The event stage's sizes and where it writes, shared by ``export.train.event_stage``, ``lvm-train`` and
``lvm-export`` (a module without torch, so the training CLI's ``--help`` and plan stay quick)."""
from __future__ import annotations

from pathlib import Path

# many videos with few frames each: the head generalises from diversity, not from more of one video
EVENT_VIDEOS = 24           # training videos (training_video(seed, i), i < EVENT_VIDEOS)
EVENT_FRAMES = 150          # random frames a training video, beside its flash frames
EVENT_HELD_FRAMES = 100     # more frames a training video from its handling periods (an item in a hand)
EVENT_HELDOUT_VIDEOS = 4    # held-out videos measured (heldout_video(seed, i), even i: unseen looks)
EVENT_HELDOUT_FRAMES = 500
EVENT_STEPS = 1200
THRESHOLD_FRAMES = 250      # frames of a further training-look video the detection threshold is chosen on


def default_events_path(checkpoint: Path) -> Path:
    """``<checkpoint dir>/<checkpoint stem>-events.safetensors``: where the event stage writes it and
    lvm-export looks for it."""
    return checkpoint.with_name(f"{checkpoint.stem}-events.safetensors")
