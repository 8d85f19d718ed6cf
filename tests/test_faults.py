"""Faults the reliability suite (tools/reliability/cli.py) found, each pinned by a test."""
import os

import numpy as np
import pytest

from edge_runtime.engine import snapshot as snap
from fakes import FakeSource


def test_a_power_cut_mid_snapshot_leaves_no_temp_file_after_the_restart(tmp_path):
    # A SIGKILL inside a snapshot write leaves the atomic writer's temp file behind; 100 power cuts
    # left ~60 of them (up to a snapshot's size each) until a restart started removing them.
    good = snap.write_snapshot(tmp_path / snap.SNAPSHOT_NAME, {"x": np.arange(4.0)}, {"bundle_id": "b@1"})
    (tmp_path / f".{snap.SNAPSHOT_NAME}.abc123.tmp").write_bytes(good.read_bytes()[:100])
    (tmp_path / "user-notes.tmp").write_text("not ours")
    restored, warning = snap.restore(tmp_path, "b@1")
    assert warning is None and restored is not None
    np.testing.assert_array_equal(restored.arrays["x"], np.arange(4.0))
    assert sorted(os.listdir(tmp_path)) == [snap.SNAPSHOT_NAME, "user-notes.tmp"]


@pytest.fixture(scope="module")
def client(tiny_bundle, tmp_path_factory):
    from fastapi.testclient import TestClient

    from edge_runtime.serve.api import create_app
    from edge_runtime.engine.engine import Engine
    from edge_runtime.serve.pipeline import Runtime

    with Engine(tiny_bundle, threads=1) as engine:
        with TestClient(create_app(Runtime(engine, state_dir=tmp_path_factory.mktemp("state")))) as c:
            yield c


def test_an_error_quoting_a_value_with_newlines_is_still_one_line(client):
    # schemathesis sent an activity name holding "\n"; the error echoed it over two lines
    r = client.post("/v1/query/object", json={"activity": "X\n0\r\nevil", "start": 0, "end": 60})
    assert r.status_code == 422
    assert set(r.json()) == {"error"} and "\n" not in r.json()["error"] and "\r" not in r.json()["error"]
    assert "unknown activity 'X 0 evil'" in r.json()["error"]


def test_api_connections_do_not_wait_on_delayed_acks():
    # Under load every kept-alive request took 44 ms (Nagle holding the body until the client's
    # delayed ACK of the headers); the API's listening socket now sets TCP_NODELAY, which accepted
    # connections inherit.
    import socket

    from edge_runtime.cli.run import bind

    srv = bind("127.0.0.1", 0)
    try:
        cli = socket.create_connection(srv.getsockname()[:2])
        conn, _ = srv.accept()
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        conn.close()
        cli.close()
    finally:
        srv.close()


def test_the_rate_meter_is_read_and_written_from_two_threads():
    # 32 clients polling /v1/status while the intake added frames: "deque mutated during iteration"
    # raised in the intake thread and failed the stream. Here a read pauses inside its pass over the
    # samples while another thread adds one: without the meter's lock the read raises.
    import threading
    from collections import deque

    from edge_runtime.serve.rate_meter import RateMeter

    reading, added, errors = threading.Event(), threading.Event(), []

    class PausingSamples(deque):
        def __iter__(self):
            for i, sample in enumerate(super().__iter__()):
                yield sample
                if i == 0 and not reading.is_set():
                    reading.set()
                    added.wait(0.3)  # with the lock the add waits for this read: the pause times out

    meter = RateMeter(window_s=1e9)
    for i in range(3):
        meter.add(1, now=float(i))
    meter._samples = PausingSamples(meter._samples, maxlen=meter._samples.maxlen)

    def read():
        try:
            meter.rate(now=3.0)
        except RuntimeError as err:
            errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    assert reading.wait(5)
    meter.add(1, now=3.0)
    added.set()
    reader.join()
    assert errors == []
    assert meter.rate(now=4.0) == 3 / 4  # the add that waited counted: 3 events after the first sample


def test_the_rate_meter_keeps_constant_memory():
    # a stream runs for months: the meter keeps a bounded number of samples however many frames it counts
    import tracemalloc

    from edge_runtime.serve.rate_meter import RateMeter

    meter = RateMeter(window_s=1e9)  # nothing ever leaves the window: only the bound limits the samples
    tracemalloc.start()
    try:
        for i in range(8192):
            meter.add(1, now=float(i))
        before = tracemalloc.get_traced_memory()[0]
        for i in range(8192, 8192 + 16384):
            meter.add(1, now=float(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes more after 16,384 more frames"  # unbounded: ~1.5 MB
    assert meter.rate(now=8192.0 + 16384) > 0.9


def test_a_failure_after_a_commit_does_not_feed_the_same_frames_again(engine, monkeypatch, tmp_path):
    # when the intake failed after the engine had committed a batch, the drain fed that batch again:
    # a second traceback ("frame time ... is not after the last one") on top of the real error
    from edge_runtime import sources
    from edge_runtime.serve.pipeline import Runtime

    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: FakeSource(40))
    rt = Runtime(engine)
    fed = []
    real = engine.ingest
    monkeypatch.setattr(engine, "ingest", lambda state, frames, times: fed.append(float(times[0]))
                        or real(state, frames, times))
    monkeypatch.setattr(rt, "_poll_source_stats", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    rt.start("fake://")
    assert rt.wait(60) and rt.state == "failed" and "boom" in rt.error
    assert fed == [0.0]  # the batch that was committed, once
    rt.close()


def test_a_reader_blocked_in_a_native_open_does_not_reach_interpreter_shutdown(monkeypatch):
    """With a source thread still alive (blocked in OpenCV's open), the command's own process leaves
    through os._exit with its exit code instead of finalising around that thread (SIGABRT)."""
    import threading

    from edge_runtime import cli

    exits = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    cli.exit_past_blocked_readers(3)
    assert exits == []  # no reader: a normal return
    release = threading.Event()
    reader = threading.Thread(target=release.wait, name="source:rtsp://127.0.0.1:1/x#1", daemon=True)
    reader.start()
    try:
        cli.exit_past_blocked_readers(3)
    finally:
        release.set()
        reader.join()
    assert exits == [3]


def test_a_final_snapshot_that_cannot_be_written_is_said_and_the_run_exits_1(tmp_path, capsys, monkeypatch):
    """A full state directory at shutdown: no "snapshot written" line, one line saying the memory since the
    last snapshot is lost, and exit 1 (systemd records the failure)."""
    from edge_runtime.cli import main
    from edge_runtime.engine import snapshot as snap

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snap.np, "savez", full)
    code = main(["run", "--source", "demo://checkout?seed=1", "--duration", "3", "--api", "none",
                 "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "snapshot written" not in err and "Traceback" not in err
    line = [x for x in err.splitlines() if "final snapshot failed" in x]
    assert len(line) == 1 and "No space left on device" in line[0] and "is lost" in line[0], err
