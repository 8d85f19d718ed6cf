"""tools/reliability/alert_latency.py: its pure parts, in alert_latency_math.py (the metrics parse, which
frame ends an event, when a frame arrived from the polls, the latencies and their percentiles; with
--items, which unscanned bag an alert found and the figures from its true end), and its one-line refusals. The measurement itself (a paced run of minutes) is not run here."""
import pytest

from tools.reliability import alert_latency as al
from tools.reliability import alert_latency_math as alm


def test_frames_in_is_read_per_stream_from_prometheus_text():
    text = ("# HELP lvm_frames_in_total Frames delivered by the source\n"
            "# TYPE lvm_frames_in_total counter\n"
            'lvm_frames_in_total{stream="lane1"} 12.0\n'
            'lvm_frames_in_total{stream="lane2"} 3.0\n'
            'lvm_frames_in_created{stream="lane1"} 1.7e+09\n'
            'lvm_frames_processed_total{stream="lane1"} 11.0\n')
    assert alm.parse_frames_in(text) == {"lane1": 12, "lane2": 3}
    assert alm.parse_frames_in("") == {}


@pytest.mark.parametrize("end,fps,k", [(70.27, 1.0, 71), (80.0, 1.0, 80), (0.0, 1.0, 0), (3.05, 2.0, 7),
                                       (79.9999999, 1.0, 80)])
def test_the_frame_at_an_event_end_is_the_first_at_or_after_it(end, fps, k):
    assert alm.end_frame(end, fps) == k


def test_stats_median_nearest_rank_p95_max():
    assert alm.stats([]) == {"n": 0, "median": None, "p95": None, "max": None}
    v = [float(x) for x in range(1, 21)]  # 1..20
    assert alm.stats(v) == {"n": 20, "median": 10.5, "p95": 19.0, "max": 20.0}
    assert alm.stats([4.0]) == {"n": 1, "median": 4.0, "p95": 4.0, "max": 4.0}


def _clock():
    """Polls of lane1 (1 fps, paced from wall 100): sent at s, answered at s + 0.02, counter n."""
    c = alm.FrameClock()
    for sent, n in [(99.9, 0), (100.1, 1), (100.5, 1), (101.05, 2), (101.3, 2), (102.2, 3)]:
        c.add(sent, sent + 0.02, {"lane1": n})
    return c


def test_a_frame_arrived_between_the_last_poll_without_it_and_the_first_with_it():
    c = _clock()
    assert c.bounds("lane1", 0) == (99.9, pytest.approx(100.12))
    assert c.bounds("lane1", 1) == (100.5, pytest.approx(101.07))
    assert c.bounds("lane1", 3) is None           # never seen
    est, half = c.arrival("lane1", 1)
    assert est == pytest.approx((100.5 + 101.07) / 2) and half == pytest.approx((101.07 - 100.5) / 2)
    first = alm.FrameClock()
    first.add(5.0, 5.1, {"lane1": 2})             # the first poll already saw frames: no lower bound
    assert first.bounds("lane1", 0) == (None, 5.1) and first.arrival("lane1", 0) == (5.1, 0.0)
    assert c.frames("lane1") == 3 and c.frames("lane9") == 0


def test_pacing_origin_and_how_far_the_intake_fell_behind():
    c = _clock()
    # frame k released no earlier than origin + k: origin <= min(latest arrival of k - k)
    assert c.pace_origin("lane1", 1.0) == pytest.approx(min(100.12 - 0, 101.07 - 1, 102.22 - 2))
    # each frame surely came after the last poll without it: 99.9, 100.5, 101.3 against 100.07 + k
    assert c.behind_pace("lane1", 1.0) == pytest.approx(max(99.9 - 100.07, 100.5 - 101.07, 101.3 - 102.07))
    c.add(104.5, 104.52, {"lane1": 3})
    c.add(104.6, 104.62, {"lane1": 4})            # frame 3 (due at 103.07) came after 104.5: 1.43 s behind
    assert c.behind_pace("lane1", 1.0) == pytest.approx(104.5 - 103.07)
    assert alm.FrameClock().behind_pace("lane1", 1.0) is None


def test_a_counter_going_back_is_refused():
    c = alm.FrameClock()
    c.add(1.0, 1.1, {"lane1": 5})
    with pytest.raises(alm.LatencyError, match="went back"):
        c.add(2.0, 2.1, {"lane1": 4})


def test_latencies_are_measured_from_the_end_of_the_evidence_event():
    c = alm.FrameClock()
    for k in range(40):  # frame k arrives at 1000 + k (polls just before and just after)
        c.add(1000 + k - 0.05, 1000 + k - 0.04, {"lane1": k})
        c.add(1000 + k + 0.01, 1000 + k + 0.02, {"lane1": k + 1})
    alert = {"id": "a1", "stream": "lane1", "product": "soda", "start": 10.0, "end": 12.5, "stream_time": 32.0,
             "raised_at": 1031.6, "evidence": [{"activity": "bag", "start": 10.0, "end": 12.5}]}
    rows = alm.alert_rows([alert], c, 1.0, {"a1": 1031.65}, {"a1": 1031.7})
    (r,) = rows
    assert r["end_frame"] == 13 and not r["end_frame_clamped"]
    assert r["stream_s"] == 19.5                      # 32 - 12.5
    assert r["raised_s"] == pytest.approx(1031.6 - 1012.985, abs=0.01)
    assert r["mqtt_s"] == pytest.approx(18.67, abs=0.01) and r["webhook_s"] == pytest.approx(18.72, abs=0.01)
    assert r["evaluation_s"] == pytest.approx(1031.6 - 1030.985, abs=0.01)  # frame 31 completed coverage to 32
    assert r["raised_paced_s"] == pytest.approx(1031.6 - (c.pace_origin("lane1", 1.0) + 12.5), abs=0.01)
    late = dict(alert, id="a2", end=45.0, evidence=[])  # after the last frame: the last frame is the latest it knows
    (r2,) = alm.alert_rows([late], c, 1.0, {}, {})
    assert r2["end_frame_clamped"] and r2["mqtt_s"] is None and r2["webhook_s"] is None
    assert r2["raised_s"] == pytest.approx(1031.6 - 1038.985, abs=0.01)
    s = alm.summarise(rows, target_s=18.0)
    assert s["latency_s"]["stream"]["p95"] == 19.5 and s["target_met"]["stream"] is False
    assert s["target_met"]["raised"] is False and s["latency_s"]["webhook"]["n"] == 1


@pytest.mark.parametrize("argv,msg", [(["--lanes", "0"], "--lanes"), (["--duration", "5"], "--duration"),
                                      (["--poll", "0"], "--poll"), (["--shrink", "2,0,0"], "--shrink"),
                                      (["--shrink", "0"], "--shrink"), (["--threads", "0"], "--threads")])
def test_bad_input_is_one_line_and_exit_2(argv, msg, capsys):
    assert al.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alert latency: ") and msg in err and "\n" not in err


def test_a_missing_bundle_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tools.reliability.mosquitto.mosquitto_path", lambda: "/usr/sbin/mosquitto")
    assert al.main(["--bundle", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no manifest.json" in err and "\n" not in err


def test_items_alerts_are_timed_from_the_true_bag_end_the_first_per_target():
    c = alm.FrameClock()
    for k in range(60):  # 5 fps: frame k arrives at 2000 + k / 5 (polls just before and just after)
        c.add(2000 + k / 5 - 0.02, 2000 + k / 5 - 0.01, {"lane1": k})
        c.add(2000 + k / 5 + 0.01, 2000 + k / 5 + 0.02, {"lane1": k + 1})
    targets = {"lane1": [("soda", 4.0, 6.0), ("milk", 20.0, 22.0)]}
    first = {"id": "a1", "stream": "lane1", "product": "soda", "start": 4.4, "end": 6.4, "raised_at": 2006.3,
             "images": ["x", "y"], "evidence": [{"activity": "bag", "start": 4.4, "end": 6.2}]}
    again = dict(first, id="a2", raised_at=2008.0)             # the same bag once more: matched, not counted
    false = dict(first, id="a3", product="apple", evidence=[])  # no apple was bagged unscanned
    got = alm.item_latency([again, first, false], c, 5.0, targets, {"a1": 2006.4}, {"a1": 2006.35},
                           {"a1": 2006.36, "a3": 2006.5}, {"a1": 3000, "a2": 2000})
    assert (got["targets"], got["alerts"], got["matched_alerts"], got["targets_found"]) == (2, 3, 2, 1)
    rows = {r["id"]: r for r in got["rows"]}
    assert rows["a1"]["first_for_target"] and not rows["a2"]["first_for_target"] and rows["a3"]["target"] is None
    assert rows["a1"]["outbox_s"] == pytest.approx(0.3, abs=1e-3)       # frame 30 (6.0 s) arrived at 2006.0
    assert rows["a1"]["own_outbox_s"] == pytest.approx(0.1, abs=1e-3)   # its own event ended at 6.2: frame 31
    assert rows["a1"]["mqtt_s"] == pytest.approx(0.4, abs=1e-3) and rows["a1"]["images"] == 2
    assert rows["a2"]["nudge_s"] is None and "outbox_s" not in rows["a3"]
    lat = got["latency_from_true_bag_end_s"]
    assert lat["outbox"]["n"] == 1 and lat["nudge"]["median"] == 0.35 and lat["nudge_webhook"]["median"] == 0.36
    assert got["latency_from_own_event_end_s"]["outbox"]["n"] == 3
    assert got["nudge_after_outbox_row_s"]["median"] == 0.05 and got["nudges_on_webhook"] == 2
    assert got["evidence_bytes_per_alert"]["max"] == 3000 and got["evidence_bytes_stored"] == 5000
    assert got["early_nudges"] == 0 and got["first_nudge_from_true_bag_end_s"]["median"] == 0.35
    # early nudges: the soda's before its bag ended (the screen's first nudge of it), a second one of it
    # after, one matching no bag
    early = [(2007.0, {"stream": "lane1", "product": "soda", "start": 4.4, "end": 5.0, "early": True}),
             (2005.5, {"stream": "lane1", "product": "soda", "start": 4.4, "end": 5.0, "early": True}),
             (2030.0, {"stream": "lane1", "product": "bread", "start": 29.0, "end": 30.0, "early": True})]
    got = alm.item_latency([again, first, false], c, 5.0, targets, {"a1": 2006.4}, {"a1": 2006.35},
                           {"a1": 2006.36}, {}, early)
    assert (got["early_nudges"], got["early_nudges_matching_no_target"], got["targets_nudged"]) == (3, 1, 1)
    assert got["first_nudge_from_true_bag_end_s"] == {"n": 1, "median": -0.5, "p95": -0.5, "max": -0.5}
    assert got["latency_from_true_bag_end_s"]["nudge"]["median"] == 0.35   # the alert's own nudge, apart


def test_an_alert_matches_the_nearest_unscanned_bag_of_its_product_within_5_s():
    targets = [("soda", 10.0, 12.0), ("soda", 30.0, 33.0), ("milk", 11.0, 12.5)]
    assert alm.match({"product": "soda", "start": 16.0, "end": 18.0}, targets) == ("soda", 10.0, 12.0)
    assert alm.match({"product": "soda", "start": 17.5, "end": 19.0}, targets) is None  # 5.5 s after
    assert alm.match({"product": "soda", "start": 11.0, "end": 31.0}, targets) == ("soda", 30.0, 33.0)


@pytest.mark.parametrize("argv,msg", [(["--duration", "45"], "at least 60"),
                                      (["--items", "--duration", "20"], "at least 30")])
def test_each_mode_has_its_own_shortest_run(argv, msg, capsys):
    assert al.main(argv) == 2
    assert msg in capsys.readouterr().err


def test_items_refuse_a_bundle_without_an_event_head(tmp_path):
    (tmp_path / "manifest.json").write_text('{"config": {"stream": {"clip_frames": 16, "fps": 1.0}}}')
    with pytest.raises(alm.LatencyError, match="no event head"):
        al.measure(tmp_path, 1, 60.0, "1,0,0", 3, 1, 0.1, tmp_path / "work", items=True)
