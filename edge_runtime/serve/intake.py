"""The intake thread's side of a stream's ``Runtime`` (edge_runtime/serve/pipeline.py): reading the
source, placing its frames on the stream's clock (``StreamState.clock``, edge_runtime/engine/
source_clock.py), the frames handed to the ingest path (alone, or through the hub's
``IngestBatcher`` with one batch in flight), what each commit is counted and hooked into, and how a
stream that was not stopped ends. A mixin: it holds no state of its own and works on the fields
``Runtime.__init__`` sets (and its ``update_gauges``), so the thread's loop reads apart from the
service methods (start, stop, snapshots, status) that the API and the hub call; pipeline.py's
docstring states the ends it implements."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from edge_runtime.engine.frame_views import VIEW_SIDE
from edge_runtime.serve.run_state import Lifecycle, RunState, end_reason

log = logging.getLogger("lvm_edge")


class Intake:
    """The intake thread's methods of ``Runtime`` (its only subclass)."""

    def _intake(self, uri, realtime, duration, options, on_end) -> None:
        from edge_runtime.sources import SourceError, open_source

        frames: list[np.ndarray] = []
        times: list[float] = []
        timer: threading.Timer | None = None
        try:
            # with an event path, files and cameras also give each frame's view, for the evidence pictures
            view_side = VIEW_SIDE if self.engine.events is not None else None
            src = open_source(uri, target_fps=self.engine.intake_fps, realtime=realtime, size=self.engine.frame_size,
                              view_side=view_side, **options)
            with src:
                self._source = src
                self.source_label = src.label
                slow = src.native_fps is not None and src.native_fps < self.engine.intake_fps * 0.99
                if slow and self.engine.events is not None:  # the item tracks need frames at event_fps
                    raise SourceError(f"{src.label}: event_fps {self.engine.intake_fps:g} is above the source's "
                                      f"{src.native_fps:g} fps: set event_fps to at most {src.native_fps:g} "
                                      f"(runtime config) or use a faster camera")
                if self._stop.is_set():
                    return
                live = src.live
                # a camera's (or --realtime) frames come at their own pace: a smaller hand-over decides item
                # events sooner; a file's come as fast as they decode, and a larger one streams it faster
                hand_over = self.batch_frames if self.batch_frames_set or not (live or realtime) else self.engine.paced_batch
                if duration is not None and live:
                    timer = threading.Timer(duration, self._wall_time_up, args=(src,))
                    timer.daemon = True
                    timer.start()
                # a file or the demo goes on where a restored memory ends: the frames up to there are in
                # it already (read again, the memory would hold that part of the video twice)
                stream_clock = self.stream.clock
                resume_after = stream_clock.source_opened(live)
                if resume_after is not None:  # paced (--realtime): those frames go by at once, not in real time
                    src.pace_from(resume_after)
                self._till = src.till_reads  # demo://: its checkout's till; [] for the others
                self._till_tx = src.till_transactions
                received = skipped = 0
                first_rel = None  # source time of this run's first frame streamed: --duration counts from it
                limit_reached = False
                for frame in src:
                    if not stream_clock.started:
                        # a live frame was captured (now() - t) ago; files and demo have no wall clock
                        lag = clock - frame.t if live and (clock := src.now()) is not None else 0.0
                        stream_clock.first_frame(frame.t, live, captured=time.time() - lag if live else None)
                        # CONNECTING until a first frame arrives
                        self.lifecycle.move(RunState.STREAMING, only_from={RunState.CONNECTING})
                    rel, stream_t = stream_clock.elapsed(frame.t), stream_clock.stream_time(frame.t)
                    if resume_after is not None and stream_t <= resume_after + 0.5 / self.engine.intake_fps:
                        skipped += 1
                        continue
                    if first_rel is None:
                        first_rel = rel
                    if duration is not None and rel - first_rel >= duration:
                        limit_reached = True
                        break
                    received += 1
                    self.frames_in += 1
                    self.telemetry.frames_in.inc()
                    self._meter.add(1)  # per frame: a 1-fps stream ingests one batch per clip
                    if frame.view is not None:
                        self.stream.offer_view(stream_t, frame.view)
                    frames.append(frame.image)
                    times.append(stream_t)
                    stream_clock.received(stream_t)
                    if self._inflight is not None and self._inflight[0].done():
                        # the batch handed over last has committed: count it and run the commit hook
                        # (alert rules) now, not when the next batch is handed over a clip later
                        self._settle()
                    if len(frames) >= hand_over:
                        # handed over before ingesting: if anything after the engine's commit raises,
                        # the drain below must not feed the same frames again
                        batch, frames, times = (frames, times), [], []
                        self._ingest(*batch, wait=False)
                        self._maybe_snapshot()
                    if self._stop.is_set():
                        break
                if timer is not None:
                    timer.cancel()
                batch, frames, times = (frames, times), [], []
                self._ingest(*batch)   # drain what was received
                self._poll_source_stats()
                if not self._stop.is_set():
                    self._end(src, duration, limit_reached or self._time_up.is_set(), received,
                              resume_after if skipped and not received else None)
        except SourceError as err:
            self.lifecycle.move(RunState.FAILED, error=str(err))
        except Exception as err:  # keep the service up and say what broke, in one line
            log.exception("intake failed")
            self.lifecycle.move(RunState.FAILED,
                                error=f"intake failed: {' '.join(str(err).split())[:200] or type(err).__name__}")
        finally:
            if timer is not None:
                timer.cancel()
            try:
                self._ingest(frames, times)  # settles a batch still in flight, too
            except Exception:
                log.exception("drain failed")
            self._source = None
            if self._stop.is_set():
                self.lifecycle.move(RunState.STOPPED, only_from=Lifecycle.STOPPABLE)
            self._done.set()
            if on_end is not None:
                on_end()

    def _wall_time_up(self, src) -> None:
        self._time_up.set()
        src.stop()

    def _end(self, src, duration: float | None, limited: bool, received: int, held_to: float | None = None) -> None:
        """The stream ended without stop(): commit the partial clip, say why and when. ``held_to``: a
        file or demo whose every frame the restored memory already held (up to that stream time)."""
        if received == 0 and self._time_up.is_set():
            why = src.last_error
            self.lifecycle.move(RunState.FAILED, error=f"{src.label}: no frame received in {duration:g} s"
                                + (f" (last: {why})" if why else ""))
            return
        pending = self.stream.pending_frames
        flushed = self.engine.flush(self.stream)
        if flushed:
            self.telemetry.clips.inc()
            self._committed()
        self.update_gauges()
        if held_to is None:
            # no clip will come to trigger the next periodic snapshot while the run serves on: a kill
            # then would lose what was streamed since the last one
            self._maybe_snapshot(now=True)
        reason, problem = end_reason(src, self.stream.clock.stream_time(src.position), duration,
                                     limited, self._time_up.is_set(), pending if flushed else 0)
        if held_to is not None:
            reason = (f"{src.label}: nothing new: the restored memory holds it up to {held_to:.1f} s "
                      f"(--reset-state to stream it again from the start)")
        log.info("%s", reason)
        self.lifecycle.move(RunState.ENDED, end_reason=reason, **({"error": reason} if problem else {}))

    def _ingest(self, frames: list[np.ndarray], times: list[float], *, wait: bool = True) -> None:
        """Frames into memory. Through a shared ingestor, ``wait=False`` returns once they are
        handed over, so this stream decodes its next batch while the batch runs; one batch in
        flight per stream keeps its frames in order, and every later call settles it first."""
        self._settle()
        if frames:
            if self.ingestor is not None:
                self._inflight = (self.ingestor.submit_async(self.stream, np.stack(frames), np.asarray(times)),
                                  len(frames))
                if wait:
                    self._settle()
                return
            self._account(len(frames), self.engine.ingest(self.stream, np.stack(frames), np.asarray(times)))

    def _settle(self) -> None:
        """Wait for the batch in flight (its error raised here) and count it."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            fut, n = inflight
            self._account(n, fut.result())

    def _account(self, n_frames: int, n_clips: int) -> None:
        self.telemetry.frames_processed.inc(n_frames)
        if n_clips:
            self.telemetry.clips.inc(n_clips)
        if n_clips or (n_frames and self.stream.items is not None):
            # with an event path the rules read item events, decided frame by frame: evaluate them
            # after every batch (a second's frames), not only when the memory commits
            self._committed()
        self._poll_source_stats()
        self.update_gauges()

    def _committed(self) -> None:
        hook = self.on_commit
        if hook is not None:
            try:
                hook(self)
            except Exception:  # alerts are beside the stream: their failure must not fail it
                log.exception("commit hook failed")

    def _poll_source_stats(self) -> None:
        src = self._source
        if src is None:
            return
        st = src.stats
        self.telemetry.frames_dropped.set(st.get("dropped", 0))
        self.telemetry.reconnects.set(st.get("reconnects", 0))
        self._source_stats = st
