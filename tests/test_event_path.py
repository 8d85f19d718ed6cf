"""The event path in the engine: the shipped bundle's event head on every frame at 5 fps beside the
memory, which keeps its own 1 fps frames; item events reach the rules; a stream's item state is in its
snapshot. One short stretch of one held-out video (60 s, 300 frames)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.alerts.rule_events import rule_events
from edge_runtime.checkout import CheckoutVideo, heldout_video

SPAN_S = 60.0


@pytest.fixture(scope="module")
def streamed(shipped_engine):
    """(engine, a stream fed 5 fps frames a second at a time, a stream fed only the 1 fps frames)."""
    eng = shipped_engine
    if eng.events is None:
        pytest.skip("the shipped bundle has no event head")
    seed, look = heldout_video(0, 0)
    video = CheckoutVideo(seed, SPAN_S, look=look, shrink="0.3,0.3,0.1")
    frames = list(video.frames(eng.intake_fps))
    fast = eng.new_stream()
    for k in range(0, len(frames), eng.intake_batch):
        chunk = frames[k:k + eng.intake_batch]
        eng.ingest(fast, np.stack([f for _, f in chunk]), np.asarray([t for t, _ in chunk]))
    slow = eng.new_stream()
    ones = [(t, f) for t, f in frames if float(t).is_integer()]
    eng.ingest(slow, np.stack([f for _, f in ones]), np.asarray([t for t, _ in ones]))
    return eng, fast, slow


def test_the_memory_keeps_its_own_fps(streamed):
    eng, fast, slow = streamed
    assert eng.intake_fps == 5.0 and eng.fps == 1.0
    assert fast.frames_processed == slow.frames_processed == int(SPAN_S)
    a, b = fast.committed, slow.committed
    assert a.version == b.version and (a.start, a.end) == (b.start, b.end)
    for name in ("mem_t", "mem_valid"):
        np.testing.assert_array_equal(a.memory[name], b.memory[name])
    for name in a.facts:
        np.testing.assert_array_equal(a.facts[name], b.facts[name])


def test_item_events_reach_the_rules(streamed):
    eng, fast, _ = streamed
    status = fast.status()["items"]
    assert status["zones"] == "proposed" and {"scanner", "bag"} <= set(status["zone_names"])
    events = rule_events((eng, fast), None, (0.0, SPAN_S))
    assert events, "no item events in a minute of a busy checkout"
    # decided as they happened, then the track labeler's bags of ended tracks (its second look)
    assert all(e.tracks in (("items",), ("items", "track_labels")) and e.item is not None and e.paid is not None
               for e in events)
    assert all(e.activity == "bag" for e in events if e.tracks == ("items", "track_labels"))
    assert all(e.product in eng.products for e in events)
    assert {e.activity for e in events} <= set(fast.items.activities)


def test_item_state_is_in_the_snapshot(streamed):
    eng, fast, _ = streamed
    saved = fast.state_dict()
    assert any(k.startswith("items.") for k in saved)
    back = eng.new_stream()
    back.load_state_dict(saved)
    window = (0.0, SPAN_S)
    assert rule_events((eng, back), None, window) == rule_events((eng, fast), None, window)
    assert back.status()["items"]["zones"] == "proposed"


def test_tracks_of_another_bundle_are_refused(streamed):
    eng, fast, _ = streamed
    saved = dict(fast.state_dict())
    saved["items.bundle_id"] = np.frombuffer(b"another-bundle", np.uint8).copy()
    other = eng.new_stream()
    with pytest.raises(ValueError, match="item-state snapshot is of bundle 'another-bundle'") as err:
        other.load_state_dict(saved)
    assert "\n" not in str(err.value)
    assert other.status()["items"]["events"] == 0  # refused whole: nothing half-restored


def test_event_fps_above_the_sources_rate_is_one_line(capsys):
    from edge_runtime.cli import main

    assert main(["run", "--source", "demo://checkout?fps=2&duration=5", "--api", "none"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "event_fps 5 is above the source's 2 fps" in err[-1] and "Traceback" not in "\n".join(err)


def test_events_false_runs_the_memory_path_alone(tmp_path, capsys):
    from edge_runtime.cli import main

    cfg = tmp_path / "rt.yaml"
    cfg.write_text("events: false\nduration_s: 3\n")
    assert main(["run", "--config", str(cfg), "--source", "demo://checkout?fps=1&duration=20", "--api", "none"]) == 0
    assert "duration of 3 s reached" in capsys.readouterr().err


@pytest.mark.parametrize("realtime,want", [(True, 2), (False, 5)])
def test_a_paced_stream_hands_over_0_4_s_of_frames(shipped_engine, monkeypatch, realtime, want):
    """A camera's (or --realtime) frames go to the event path 2 at a time at 5 fps, so an item event, and
    its alert, is decided up to 0.6 s sooner; a file or an unpaced demo keeps a second's (its throughput)."""
    from edge_runtime.serve.pipeline import Runtime

    eng = shipped_engine
    if eng.events is None:
        pytest.skip("the shipped bundle has no event head")
    sizes: list[int] = []
    real = type(eng).ingest
    monkeypatch.setattr(eng, "ingest", lambda stream, frames, times: (sizes.append(len(frames)),
                                                                      real(eng, stream, frames, times))[1])
    assert (eng.paced_batch, eng.intake_batch) == (2, 5)
    rt = Runtime(eng)
    try:
        rt.start("demo://checkout?seed=3&duration=2.4", realtime=realtime)
        assert rt.wait(120)  # a hang guard: the 2.4 s demo ends long before
    finally:
        rt.close()
    assert sizes[0] == want and sum(sizes) == 12, sizes
