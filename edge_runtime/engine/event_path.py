"""The event path: every frame at ``event_fps`` through the bundle's event head, beside the memory.

A bundle with an ``event_head`` graph (manifest ``events``) streams at ``event_fps`` (default 5)
instead of the memory's fps. Each frame passes the backbone once; its tokens go to the event head
(per-frame item detections and the scanner light, edge_runtime/items/head_decode.py), and the
frames on the memory's own 1/fps grid go to the memory as well, so the memory holds exactly the
frames it would hold at its own rate (no second decode, no second backbone pass).

The engine holds one ``EventPath`` (the graph, its settings and the bundle's track labeler model,
manifest ``events.track_labels``, when it has one); each stream's tracks and item events are its
``StreamState.items`` (edge_runtime/items/item_state.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge_runtime.backends.base import Runner
from edge_runtime.backends.bundle import Bundle, BundleError

log = logging.getLogger(__name__)

DEFAULT_EVENT_FPS = 5.0
DEFAULT_THRESHOLD = 0.5
# A head with the reader's identity names each detection by log p(class) + IDENTITY_WEIGHT x the cosine of
# its identity with the class's best drawn picture (head_decode.name_by_identity); 0 names by the class alone.
# Misnamed items were most of what the alerts on item tracks got wrong: on held-out seed 1 (head_replay,
# raised rates, the till's reads) unpaid bags found / false went 92 / 5 -> 95 / 1 and pass-arounds 51 / 2 ->
# 52 / 1, the same from 6 to 50 (identity decides, the class breaks near-ties); 1 gave 93 / 4, 4 gave 94 / 2
IDENTITY_WEIGHT = 8.0


@dataclass(frozen=True)
class EventSettings:
    """The event path's settings: the bundle's, with a runtime's ``event_fps`` override."""

    event_fps: float = DEFAULT_EVENT_FPS
    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def from_manifest(cls, section: Any, where: str) -> "EventSettings":
        if not isinstance(section, dict):
            raise BundleError(f"{where}: the bundle has an event_head graph but no 'events' section in its manifest")
        try:
            fps = float(section.get("event_fps", DEFAULT_EVENT_FPS))
            th = float(section.get("threshold", DEFAULT_THRESHOLD))
        except (TypeError, ValueError):
            raise BundleError(f"{where}: manifest events.event_fps and events.threshold must be numbers") from None
        if not (0 < fps <= 60) or not (0 < th < 1):
            raise BundleError(f"{where}: manifest events needs 0 < event_fps <= 60 and 0 < threshold < 1, "
                              f"got {fps:g} and {th:g}")
        return cls(fps, th)


class EventPath:
    """The bundle's event head on a backend, and what turns its outputs into per-frame detections."""

    def __init__(self, runner: Runner, settings: EventSettings, memory_fps: float, sequence: Any = None) -> None:
        if settings.event_fps < memory_fps:
            raise BundleError(f"events.event_fps {settings.event_fps:g} is below the memory's fps {memory_fps:g}: "
                              "the memory samples its frames from the event path's")
        self.runner, self.settings, self.sequence = runner, settings, sequence
        # a head exported with the memory reader gives each detection the reader's identity (det_embed) and
        # embeds a catalog picture (crop_embed): edge_runtime/backends/bundle.py
        self.identity = "det_embed" in runner.outputs
        self.embed_dim = int(runner.outputs["det_embed"].shape[-1]) if self.identity else 0
        self.prototypes: np.ndarray | None = None  # (K, Q, E) the classes' pictures' identities (Engine sets them)
        self.identity_weight = IDENTITY_WEIGHT    # what the measurement tools vary

    @classmethod
    def from_bundle(cls, bundle: Bundle, runners: dict[str, Runner], event_fps: float | None = None) -> "EventPath | None":
        """The bundle's event path, or None when it has no event head (it then streams at the memory's fps)."""
        runner = runners.get("event_head")
        if runner is None:
            return None
        settings = EventSettings.from_manifest(bundle.manifest.get("events"), str(bundle.path))
        sequence = track_labeler(bundle)
        if event_fps is not None:
            settings = EventSettings(float(event_fps), settings.threshold)
            if sequence is not None and not sequence.fits(event_fps):
                # its features count frames: at another rate the queries read the labeler's events
                log.warning("event_fps %g: the bundle's track labeler was trained at %s fps; the queries read "
                            "the geometric labeler's item events", float(event_fps), sequence.fps)
                sequence = None
        return cls(runner, settings, bundle.cfg.stream.fps, sequence)

    @property
    def event_fps(self) -> float:
        return self.settings.event_fps

    def detect(self, tokens: np.ndarray, times: np.ndarray, report: Callable[[str, float], None] | None = None) -> list:
        """Tokens (N, P, d) of N frames at ``times`` -> one ``Detections`` per frame."""
        from edge_runtime.items.head_decode import EMBED, OUTPUTS, decode

        t0 = time.perf_counter()
        out = self.runner.infer({"tokens": np.ascontiguousarray(tokens, np.float32)},
                                OUTPUTS + ((EMBED,) if self.identity else ()))
        if report is not None:
            report("event_head", time.perf_counter() - t0)
        return decode(out, np.asarray(times, np.float64), self.settings.threshold, prototypes=self.prototypes,
                      weight=self.identity_weight)

    def embed_pictures(self, tokens: np.ndarray) -> np.ndarray:
        """Backbone tokens (Q, P, d) of Q pictures, each of one product -> (Q, E) unit rows in the reader's
        identity space, matchable against a track's identity. BundleError when the head has no identity."""
        if not self.identity:
            raise BundleError("the bundle's event head carries no identity (export it with the memory reader)")
        return np.asarray(self.runner.infer({"tokens": np.ascontiguousarray(tokens, np.float32)}, ["crop_embed"])
                          ["crop_embed"], np.float32)


def track_labeler(bundle: Bundle) -> Any:
    """The bundle's track labeler model (manifest ``events.track_labels``: its file, sha256 and the
    rate it was trained at), or None when it has none; BundleError (one line) for one that does not load
    or was trained for another frame rate than the event head's."""
    sec = (bundle.manifest.get("events") or {}).get("track_labels")
    if sec is None:
        return None
    from edge_runtime.file_hash import sha256_file
    from edge_runtime.items.sequence_model import SequenceModel

    where = f"{bundle.path}: events.track_labels"
    if not isinstance(sec, dict) or not isinstance(sec.get("file"), str):
        raise BundleError(f"{where} needs a 'file'")
    path = bundle.path / sec["file"]
    if not path.is_file():
        raise BundleError(f"{where}: {sec['file']} is missing from the bundle")
    if sec.get("sha256") and sha256_file(path) != sec["sha256"]:
        raise BundleError(f"{where}: {sec['file']} does not match its sha256 in the manifest (a damaged copy)")
    try:
        model = SequenceModel.load(path)
    except ValueError as err:
        raise BundleError(f"{where}: {err}") from None
    fps = float((bundle.manifest.get("events") or {}).get("event_fps", DEFAULT_EVENT_FPS))
    if not model.fits(fps):
        raise BundleError(f"{where}: trained at {model.fps} fps, the event head runs at {fps:g}")
    return model
