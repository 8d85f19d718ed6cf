"""tools/reliability/alert_faults.py: the evidence check finds an alert whose JPEGs are missing or cut,
a run that raised nothing is not a pass, and a short run with kills keeps every alert and its images."""
from __future__ import annotations

import sqlite3

import pytest

from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from edge_runtime.items.evidence_ring import EvidenceRing
from tools.reliability import alert_faults
from tools.reliability.mosquitto import mosquitto_path


def _store(state) -> list[str]:
    """Three alerts of tracked items with their evidence, raised as the fault driver raises them."""
    svc = AlertService(AlertSettings.model_validate({"site": "faults"}), state, evaluate=False)
    ring, ids = EvidenceRing("item"), []
    for i in range(3):
        for t in (60.0 * i - 1, 60.0 * i + 1, 60.0 * i + 3):
            rgb, box = alert_faults.item_frame(i, t)
            ring.add(rgb, t, {i: box})
        ev = [{"activity": "bag", "product": f"item {i}", "start": 60.0 * i, "end": 60.0 * i + 2, "item": i}]
        alert, new = svc.raise_alert({"rule": "bagged_without_scan", "product": f"item {i}", "start": 60.0 * i,
                                      "end": 60.0 * i + 2, "confidence": 0.9, "evidence": ev}, stream="lane1", ring=ring)
        assert new and len(alert.images) == 3
        ids.append(alert.id)
    svc.close()
    return ids


def test_the_evidence_check_finds_missing_and_cut_jpegs(tmp_path):
    ids = _store(tmp_path)
    view = alert_faults.evidence_view(tmp_path)
    assert (view["with_evidence"], view["evidence_intact"], view["images"]) == (3, 3, 9)
    db = sqlite3.connect(tmp_path / "alerts.db")
    seq = {i: s for s, i in db.execute("SELECT seq, id FROM alerts")}
    db.execute("DELETE FROM evidence WHERE seq = ? AND k = 2", (seq[ids[0]],))             # one image gone
    db.execute("UPDATE evidence SET jpeg = substr(jpeg, 1, 100) WHERE seq = ? AND k = 0", (seq[ids[1]],))  # cut
    db.commit()
    db.close()
    view = alert_faults.evidence_view(tmp_path)
    assert (view["with_evidence"], view["evidence_intact"]) == (3, 1)
    assert view["evidence_broken_ids"] == sorted(ids[:2])


def test_a_run_that_raised_nothing_is_not_a_pass():
    clean = {"raised": 0, "lost": 0, "with_evidence": 0, "evidence_intact": 0, "evidence_broken_ids": [],
             "received_images_mismatch": 0}
    assert not alert_faults.scenario_passed(clean)
    assert alert_faults.scenario_passed({**clean, "raised": 5, "with_evidence": 5, "evidence_intact": 5})
    assert not alert_faults.scenario_passed({**clean, "raised": 5, "with_evidence": 5, "evidence_intact": 4})


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")
def test_one_broker_kill_and_one_runtime_kill_lose_no_alert_and_no_image(tmp_path):
    res = alert_faults.run(True, tmp_path, log=lambda _: None, kills=1)
    for name in ("broker", "runtime"):
        r = res[name]
        assert r["raised"] > 0 and r["lost"] == 0, r
        assert r["with_evidence"] == r["raised"] == r["evidence_intact"] and r["images"] == 3 * r["raised"], r
        assert r["received_images_mismatch"] == 0, r
    assert res["passed"]
