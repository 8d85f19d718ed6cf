"""Many streams on one engine set: batched ingest lands exactly what each stream alone would, the
hub keeps names, state dirs and failures apart, and `lvm-edge run` takes several sources."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from edge_runtime.engine.engine import Engine
from edge_runtime.engine.ingest import ingest_streams
from edge_runtime.engine.ingest_batcher import IngestBatcher
from edge_runtime.sources import open_source
from edge_runtime.serve.streams import StreamError, Streams, split_named


def _frames(eng, seed, seconds):
    with open_source(f"demo://checkout?seed={seed}&duration={seconds}", target_fps=eng.fps, size=eng.frame_size) as s:
        frames = np.stack([f.image for f in s])
    return frames, np.arange(len(frames), dtype=np.float64) / eng.fps


def _same_state(a, b):
    for k, v in a.committed.memory.items():
        np.testing.assert_allclose(v, b.committed.memory[k], rtol=0, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(a.committed.svd_basis, b.committed.svd_basis, atol=1e-5)
    assert (a.clips, a.frames_processed, a.coverage, a.gaps) == (b.clips, b.frames_processed, b.coverage, b.gaps)


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    eng = Engine(tiny_bundle)
    yield eng
    eng.close()


def test_the_test_bundle_batches_streams_in_one_sampler_call(engine):
    assert engine.bundle.sampler_batches_streams and engine.new_stream().memory.batched


def test_batched_ingest_equals_each_stream_alone(engine):
    """Three streams of different videos, fed in different chunkings so their clips complete
    together at some steps and apart at others: each memory is what it is alone."""
    videos = [_frames(engine, seed, 40) for seed in (1, 2, 3)]
    alone = []
    for frames, times in videos:
        e = engine.new_stream()
        engine.ingest(e, frames, times)
        alone.append(e)
    together = [engine.new_stream() for _ in videos]
    sampler_calls = []
    inner = engine.sampler.infer
    engine.sampler.infer = lambda feed, *a, **k: sampler_calls.append(len(feed["mem"])) or inner(feed, *a, **k)
    try:
        for i in range(0, 40, 5):
            items = [(together[0], *[x[i : i + 5] for x in videos[0]]),
                     (together[1], *[x[i : i + 3] for x in videos[1]]),
                     (together[1], *[x[i + 3 : i + 5] for x in videos[1]]),
                     (together[2], *[x[i : i + 5] for x in videos[2]])]
            assert all(not isinstance(r, Exception) for r in ingest_streams(engine, items))
    finally:
        engine.sampler.infer = inner
    for a, b in zip(alone, together):
        _same_state(a, b)
    assert max(sampler_calls) == 3  # the clips that completed together ran as one call


def test_a_bad_item_fails_alone(engine):
    frames, times = _frames(engine, 4, 20)
    a, b = engine.new_stream(), engine.new_stream()
    res = ingest_streams(engine, [(a, frames[:16], times[:16]), (b, frames[:4], times[:4][::-1])])
    assert res[0] == 1 and isinstance(res[1], ValueError) and b.frames_processed == 0


def test_ingest_batcher_serves_many_threads(engine):
    videos = [_frames(engine, seed, 32) for seed in (5, 6)]
    engines = [engine.new_stream() for _ in videos]
    batcher = IngestBatcher(engine, wait_s=0.01)
    out = [0, 0]

    def feed(k):
        frames, times = videos[k]
        for i in range(0, 32, 4):
            out[k] += batcher.submit(engines[k], frames[i : i + 4], times[i : i + 4])

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    batcher.close()
    assert out == [2, 2] and batcher.frames == 64
    for e, (frames, times) in zip(engines, videos):
        ref = engine.new_stream()
        engine.ingest(ref, frames, times)
        _same_state(ref, e)


def test_hub_names_state_dirs_and_removal(tiny_bundle, tmp_path):
    hub = Streams(Engine(tiny_bundle), state_dir=tmp_path)
    try:
        hub.add("cam1", "demo://checkout?seed=1&duration=40")
        hub.add("cam2", "demo://checkout?seed=2&duration=600", realtime=True)
        for bad, status in (("../x", 422), ("cam1", 409), ("a b", 422)):
            with pytest.raises(StreamError) as err:
                hub.add(bad, "demo://checkout")
            assert err.value.status == status and "\n" not in str(err.value)
        with pytest.raises(StreamError) as err:
            hub.add("cam3", "nope://x")
        assert err.value.status == 422 and hub.names() == ["cam1", "cam2"]
        with pytest.raises(StreamError) as err:
            hub.get("cam9")
        assert err.value.status == 404
        assert hub.get("cam1").wait(60) and hub.get("cam1").stream.frames_processed == 40
        answers = hub.get("cam1").query([{"type": "activity", "start": 0, "end": 40, "activity": 0}])
        assert answers[0]["coverage"]["covered_fraction"] > 0.9
        old = hub.get("cam1")
        out = hub.remove("cam1")
        with pytest.raises(StreamError) as err:  # a query that found the stream just before removal
            old.query([{"type": "activity", "start": 0, "end": 40, "activity": 0}])
        assert err.value.status == 404
        assert out["frames_processed"] == 40 and (tmp_path / "streams" / "cam1").is_dir()
        assert hub.names() == ["cam2"] and hub.get("cam2").running  # the other one goes on
        assert 'stream="cam1"' not in hub.metrics.render().decode()
        hub.add("cam1", "demo://checkout?seed=1&duration=40")  # same source: restores and goes on
        assert hub.get("cam1").restored_from["frames_processed"] == 40
        assert hub.get("cam1").wait(60)
        hub.remove("cam1")
        with pytest.raises(StreamError) as err:  # another source under that name: its memory is kept
            hub.add("cam1", "demo://checkout?seed=7&duration=40")
        assert err.value.status == 409 and "snapshot.npz" in str(err.value) and hub.names() == ["cam2"]
        with pytest.raises(StreamError) as err:
            hub.remove("nope")
        assert err.value.status == 404
    finally:
        hub.close()


def test_a_failed_stream_stalls_no_other(tiny_bundle, tmp_path):
    hub = Streams(Engine(tiny_bundle))
    try:
        hub.add("dead", "rtsp://127.0.0.1:1/x", duration=3)
        hub.add("live", "demo://checkout?seed=3&duration=48")
        assert hub.get("live").wait(60) and hub.get("live").stream.frames_processed == 48
        assert hub.get("dead").wait(30) and hub.get("dead").state.value == "failed"
    finally:
        hub.close()


def test_split_named():
    assert split_named("cam1=rtsp://h/x?a=1") == ("cam1", "rtsp://h/x?a=1")
    assert split_named("demo://checkout?seed=1") == (None, "demo://checkout?seed=1")
    assert split_named("/videos/a=b.mp4") == (None, "/videos/a=b.mp4")
    assert split_named("../x=demo://checkout") == ("../x", "demo://checkout")


def test_run_with_two_sources_snapshots_each(tiny_bundle, tmp_path):
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--api", "none", "--bundle", str(tiny_bundle),
           "--state-dir", str(tmp_path), "--source", "a=demo://checkout?seed=1&duration=20",
           "--source", "demo://checkout?seed=2&duration=30"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "streams" / "a" / "snapshot.npz").is_file()
    assert (tmp_path / "streams" / "stream-2" / "snapshot.npz").is_file()
    assert "a: snapshot written" in p.stderr and "Traceback" not in p.stderr
    dup = subprocess.run(cmd[:-2] + ["--source", "a=demo://checkout"], capture_output=True, text=True, timeout=120)
    assert dup.returncode == 2 and dup.stderr.strip().count("\n") == 0 and "named 'a'" in dup.stderr


def test_a_restart_names_the_streams_whose_memory_it_does_not_bring_back(tmp_path, capsys):
    from edge_runtime.cli import main

    state = tmp_path / "state"
    (state / "streams" / "door").mkdir(parents=True)
    (state / "streams" / "door" / "snapshot.npz").write_bytes(b"x")   # what a stream added over the API left
    code = main(["run", "--source", "lane1=demo://checkout?seed=1", "--api", "none", "--duration", "2",
                 "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "also holds the memory of door, not in this run" in err and "lvm-edge streams add" in err


def test_reset_state_can_name_one_stream(tmp_path, capsys):
    from edge_runtime.cli import main

    state = tmp_path / "state"
    argv = ["run", "--source", "lane1=demo://checkout?seed=1", "--source", "lane2=demo://checkout?seed=2",
            "--api", "none", "--duration", "2", "--state-dir", str(state)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv + ["--reset-state", "lane2"]) == 0
    err = capsys.readouterr().err
    assert err.count("--reset-state: the old snapshot is kept as") == 1 and "lane2" in err
    assert "lane1: restored memory from" in err   # the other stream goes on, its restore line named
    try:
        code = main(argv + ["--reset-state", "lane9"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "--reset-state lane9: no stream of this run is called that" in capsys.readouterr().err


def test_one_lanes_missing_camera_does_not_stop_the_others(tmp_path, capsys):
    from edge_runtime.cli import main

    code = main(["run", "--source", "a=demo://checkout?seed=1", "--source", "b=/dev/video97", "--api", "none",
                 "--duration", "3", "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert "b: camera 97 (/dev/video97): no such camera" in err and "this stream waits for it" in err
    assert "a: demo://checkout?seed=1: duration of 3 s reached" in err
    assert code == 1 and "b: camera 97 (/dev/video97): no frame received in 3 s" in err   # it never came
    # alone, a missing camera is still refused at once
    assert main(["run", "--source", "/dev/video97", "--api", "none", "--duration", "3"]) == 2
