"""Runtime: intake thread, restore continuing the clock, stop from every state, batched queries.

No upper bounds on wall time (a loaded CI box stalls threads for seconds): what must be prompt is
checked against an alternative that takes minutes (a source that never ends, an ingest held until
the test lets it go), after a generous wait."""
import threading
import time

import numpy as np
import pytest

import edge_runtime.sources as sources
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.engine.snapshot import SNAPSHOT_NAME
from edge_runtime.sources import SourceError
from fakes import FakeSource


def _use(monkeypatch, factory):
    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: factory())


def test_stream_restore_and_the_clock_continues(engine, tmp_path, monkeypatch):
    """A file (a source that is not live) restored from its snapshot resumes where the memory ends:
    its frames up to there are not read into the memory again; one it holds to its end adds nothing."""
    _use(monkeypatch, lambda: FakeSource(60))
    rt = Runtime(engine, state_dir=tmp_path)
    assert rt.restored_from is None
    rt.start("fake://", duration=40)
    assert rt.wait(60) and rt.state == "ended"
    st = rt.status()
    # the duration ended it: its last 8 frames are committed as a padded clip, and the status says so
    assert st["frames_processed"] == 40 and st["coverage"] == {"start": 0.0, "end": 40.0}
    assert st["dropped"] == 3 and st["reconnects"] == 1 and st["pending_frames"] == 0
    assert "8 frame(s) committed" in st["end_reason"]
    rt.stop()  # final snapshot
    assert (tmp_path / SNAPSHOT_NAME).is_file()

    rt2 = Runtime(engine, state_dir=tmp_path)
    assert rt2.restored_from["coverage"] == {"start": 0.0, "end": 40.0}
    assert rt2.stream.last_time == 39.0 and rt2.stream.pending_frames == 0
    rt2.start("fake://")  # the file opens at t = 0 again: frames 0-39 are in memory already
    assert rt2.wait(60)
    assert rt2.stream.last_time == 59.0 and rt2.stream.frames_processed == 60
    assert rt2.stream.gaps == [] and rt2.stream.coverage == {"start": 0.0, "end": 60.0}
    rt2.stop()

    rt3 = Runtime(engine, state_dir=tmp_path)
    rt3.start("fake://")
    assert rt3.wait(60) and rt3.state == "ended"
    assert rt3.stream.last_time == 59.0 and rt3.stream.frames_processed == 60
    assert "nothing new: the restored memory holds it up to 59.0 s" in rt3.status()["end_reason"]


def test_a_stream_that_ends_is_snapshotted_at_once_while_the_run_serves_on(engine, tmp_path, monkeypatch):
    """Periodic snapshots are taken at commits; after the source ends none come, and a kill while the run
    serves on would lose what was streamed since the last one: the end takes one."""
    import json

    _use(monkeypatch, lambda: FakeSource(40))
    rt = Runtime(engine, state_dir=tmp_path, snapshot_every=3600)  # no periodic one during this run
    rt.start("fake://")
    assert rt.wait(60) and rt.state == "ended"
    with np.load(tmp_path / SNAPSHOT_NAME) as z:  # before stop(): written at the end of the stream
        assert json.loads(bytes(z["__meta__"]))["coverage"] == {"start": 0.0, "end": 40.0}
    rt.stop(snapshot=False)


def _live_run_snapshotted(engine, tmp_path, monkeypatch) -> None:
    """16 s of a live source streamed and snapshotted at its stop; the engine emptied for a restart."""
    _use(monkeypatch, lambda: FakeSource(16, live=True))
    rt = Runtime(engine, state_dir=tmp_path)
    rt.start("fake://")
    rt.wait(60)
    rt.stop()


def test_live_restore_counts_the_downtime_as_a_gap(engine, tmp_path, monkeypatch):
    """A live memory's clock (wall_origin) goes on across a restart: the first frame after it takes its
    stream time from the wall clock, so "since 14:05" keeps its meaning and the gap is the time lost."""
    _live_run_snapshotted(engine, tmp_path, monkeypatch)
    rt2 = Runtime(engine, state_dir=tmp_path)
    assert rt2.wall_origin == rt2.stream.clock._restored["wall_origin"] is not None  # read before the camera is back
    rt2.stream.clock._restored["wall_origin"] -= 100.0  # as if stream time 0 was 100 s before it was
    origin = rt2.stream.clock._restored["wall_origin"]
    rt2.start("fake://")
    rt2.wait(60)
    (a, b), = rt2.stream.gaps
    # the first frame's time on the restored clock: 100 s plus however long this machine took since
    assert a == 16.0 and 100.0 <= b <= time.time() - origin
    assert rt2.wall_origin == pytest.approx(origin, abs=0.01)  # not moved by the downtime


def test_live_restore_without_a_recorded_clock_counts_from_the_save(engine, tmp_path, monkeypatch):
    _live_run_snapshotted(engine, tmp_path, monkeypatch)
    rt2 = Runtime(engine, state_dir=tmp_path)
    rt2.stream.clock._restored.pop("wall_origin")   # a snapshot written before the clock was recorded
    rt2.stream.clock._restored["saved_at"] -= 100.0  # as if the kiosk was off for 100 s
    rt2.start("fake://")
    rt2.wait(60)
    (a, b), = rt2.stream.gaps
    assert a == 16.0 and b == pytest.approx(116.0, abs=2.0)


def test_live_restore_counts_the_wait_for_a_first_frame_as_downtime(engine, tmp_path, monkeypatch):
    """A camera still out when the runtime restarts: the time until its first frame is downtime too,
    so the memory from before keeps its place on the wall clock."""
    _live_run_snapshotted(engine, tmp_path, monkeypatch)
    _use(monkeypatch, lambda: FakeSource(16, live=True, first_after=3.0))
    rt2 = Runtime(engine, state_dir=tmp_path)
    rt2.stream.clock._restored["wall_origin"] -= 16.0  # the fake's 16 s streamed at once: as if in real time
    rt2.start("fake://")
    rt2.wait(60)
    (a, b), = rt2.stream.gaps
    assert a == 16.0 and b >= 19.0   # taken when the source opened, the 3 s wait was left out (b = 17)
    metrics = rt2.telemetry.render().decode()
    assert 'lvm_stream_gaps{stream="default"} 1.0' in metrics and f'lvm_stream_gap_seconds{{stream="default"}} {b - a}' in metrics
    assert 'lvm_source_up{stream="default"} 0.0' in metrics   # the fake source has ended
    rt2.stop()


def test_a_restored_paced_file_goes_through_the_frames_it_holds_at_once(engine, tmp_path, monkeypatch):
    made = []

    def fake():
        made.append(FakeSource(30))
        return made[-1]

    _use(monkeypatch, fake)
    rt = Runtime(engine, state_dir=tmp_path)
    rt.start("fake://", duration=20)
    rt.wait(60)
    rt.stop()
    rt2 = Runtime(engine, state_dir=tmp_path)
    rt2.start("fake://", realtime=True)
    rt2.wait(60)
    assert made[-1].paced_from == 19.0   # paced from where the memory ends, not from its start
    rt2.stop()


@pytest.mark.parametrize("when", ["never_connects", "streaming", "failed", "ended", "idle"])
def test_stop_works_from_every_state(engine, tmp_path, monkeypatch, when):
    if when == "failed":
        def bad():
            raise SourceError("camera 7 (/dev/video7): no such device")
        _use(monkeypatch, bad)
    else:
        _use(monkeypatch, lambda: FakeSource({"never_connects": None, "streaming": 10_000, "ended": 3}.get(when, 1),
                                             delay=0.01))
    rt = Runtime(engine, state_dir=tmp_path)
    if when != "idle":
        rt.start("fake://")
        reached = {"never_connects": lambda: rt._source is not None, "streaming": lambda: rt.state == "streaming",
                   "failed": lambda: rt.state == "failed", "ended": lambda: rt.state == "ended"}[when]
        deadline = time.monotonic() + 60
        while not reached() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reached(), rt.state
    if when == "failed":
        assert "no such device" in rt.error
    # the never-connecting source blocks for 600 s and the streaming one runs 100 s: the intake
    # thread is gone after stop() only if stop() ended it
    rt.stop(timeout=60)
    assert not rt.running and rt.state in ("stopped", "failed")
    assert (tmp_path / SNAPSHOT_NAME).is_file()
    rt.stop()  # twice is fine


def test_duration_is_stream_time(engine, monkeypatch):
    _use(monkeypatch, lambda: FakeSource(100))
    rt = Runtime(engine)
    rt.start("fake://", duration=20)
    assert rt.wait(60)
    assert rt.stream.frames_processed == 20 and rt.state == "ended"


def test_queries_do_not_wait_for_a_slow_ingest(engine, monkeypatch):
    rt = Runtime(engine)
    engine.ingest(rt.stream, np.zeros((16, 112, 112, 3), np.uint8), np.arange(16.0))
    rt.query([{"type": "object", "start": 0, "end": 4, "activity": 0}])  # warm
    real = rt.stream.memory.step
    entered, release = threading.Event(), threading.Event()

    def held_step(*a):  # an ingest that lasts until the test lets it go
        entered.set()
        release.wait(600)
        return real(*a)

    monkeypatch.setattr(rt.stream.memory, "step", held_step)
    t = threading.Thread(target=engine.ingest, args=(rt.stream, np.zeros((16, 112, 112, 3), np.uint8), 16 + np.arange(16.0)))
    t.start()
    answers = []
    try:
        assert entered.wait(60)
        asker = threading.Thread(target=lambda: answers.append(
            rt.query([{"type": "object", "start": 0, "end": 4, "activity": 0}])[0]), daemon=True)
        asker.start()
        asker.join(60)
        assert answers and not release.is_set()  # answered while the ingest was still held
    finally:
        release.set()
        t.join()
    assert answers[0]["coverage"]["end"] == 4.0
    assert rt.stream.coverage["end"] == 32.0


def test_concurrent_queries_share_heads_calls(engine, monkeypatch):
    rt = Runtime(engine, batch_wait_s=0.5)  # long enough that 8 threads released together share a call
    engine.ingest(rt.stream, np.zeros((16, 112, 112, 3), np.uint8), np.arange(16.0))
    calls = []
    graph = engine.answerer if engine.answerer is not None else engine.heads  # the graph that answers
    real = graph.infer
    monkeypatch.setattr(graph, "infer", lambda feed, outputs=None: calls.append(len(feed["q_type"])) or real(feed, outputs))
    results = [None] * 8
    barrier = threading.Barrier(8)

    def ask(i):
        barrier.wait()
        results[i] = rt.query([{"type": "object", "start": 0, "end": 2 + i, "activity": i % 8}])[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(calls) == 8 and len(calls) < 8
    for i, r in enumerate(results):  # each thread got its own answer: boxes on its window's 5-fps frames
        assert r["extent"] and 1 <= len(r["times"]) <= int((2 + i) * 5) + 1
        assert all(0 <= t <= 2 + i and abs(t * 5 - round(t * 5)) < 1e-6 for t in r["times"])


def test_reset_empties_memory_but_the_clock_goes_on(engine, monkeypatch):
    _use(monkeypatch, lambda: FakeSource(32))
    rt = Runtime(engine)
    rt.start("fake://")
    rt.wait(60)
    assert rt.reset()["stream_time"] == 31.0
    assert rt.stream.coverage == {"start": None, "end": None} and rt.stream.frames_processed == 0


def test_the_commit_hook_runs_at_the_first_frame_after_the_commit(engine, monkeypatch):
    # Alert rules run in the commit hook: it must not wait for the next batch, a clip later. The
    # source holds its 17th frame until the first batch has committed, so "at once" is one frame.
    from concurrent.futures import wait as wait_futures

    from edge_runtime.engine.ingest_batcher import IngestBatcher

    ingestor = IngestBatcher(engine)
    futures = []
    real_submit = ingestor.submit_async
    monkeypatch.setattr(ingestor, "submit_async", lambda *a: futures.append(real_submit(*a)) or futures[-1])

    class HeldSource(FakeSource):
        def __iter__(self):
            for i, frame in enumerate(super().__iter__()):
                if i == engine.clip_frames:
                    wait_futures(futures[:1], timeout=600)
                yield frame

    _use(monkeypatch, lambda: HeldSource(3 * engine.clip_frames))
    rt = Runtime(engine, ingestor=ingestor)
    seen = []
    rt.on_commit = lambda r: seen.append(r.frames_in)
    try:
        rt.start("fake://")
        assert rt.wait(120)
    finally:
        ingestor.close()
    assert seen and seen[0] == engine.clip_frames + 1, seen
