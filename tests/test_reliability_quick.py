"""The reliability suite (tools/reliability/cli.py) with small budgets: each scenario against a real
`lvm-edge run` on the test bundle. The full suite's figures are in docs/reliability/."""
import json
import shutil
import tempfile

import pytest

from edge_runtime.cli.common import CliError

from tools.reliability import cli as reliability
from tools.reliability import fuzz as reliability_fuzz
from tools.reliability import load as reliability_load
from tools.reliability import powercut as reliability_powercut
from tools.reliability import soak as reliability_soak
from tools.reliability.common import BUNDLE_ENV, REPO, default_bundle


@pytest.fixture
def on_test_bundle(tiny_bundle, monkeypatch):
    monkeypatch.setenv(BUNDLE_ENV, str(tiny_bundle))


@pytest.fixture
def runner(monkeypatch):
    """The runner alone: no scenario module, the shipped bundle, and no export."""
    def no_export(bundle):
        raise AssertionError(f"exported {bundle} although a bundle was there")

    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    monkeypatch.setattr(reliability, "_module", lambda name: None)
    monkeypatch.setattr(reliability, "ensure_bundle", no_export)


def _quiet(_msg):
    pass


@pytest.mark.slow
@pytest.mark.usefixtures("on_test_bundle")
def test_power_cuts_restore_the_last_complete_snapshot(tmp_path):
    res = reliability_powercut.run(True, tmp_path, log=_quiet, n_kills=3)
    # the parts that decide "passed", not the whole result (pytest cuts a long dict short)
    why = {k: res[k] for k in ("failures", "stale_temp_files_max", "restores", "consistent_restores")}
    why["damaged_not_ok"] = {h: c for h, c in res["damaged"].items() if not c["ok"]}
    assert res["passed"], why
    assert res["consistent_restores"] == res["restores"] == 3 and res["kills_inside_snapshot_write"] >= 1
    assert set(res["damaged"]) == {"truncated-half", "truncated-tail", "zero-tail", "empty"}


@pytest.mark.slow
@pytest.mark.usefixtures("on_test_bundle")
def test_fuzzed_api_never_answers_5xx(tmp_path):
    res = reliability_fuzz.run(True, tmp_path, log=_quiet, n_requests=100)
    assert res["passed"], res["failures"] or res.get("error")
    assert res["server_errors"] == 0 and res["generated_requests"] >= 100


@pytest.mark.slow
@pytest.mark.usefixtures("on_test_bundle")
def test_load_gives_no_errors_and_drops_no_frame(tmp_path):
    # Correctness only: the p99 target is a figure of the machine (the full run reports it).
    res = reliability_load.run(True, tmp_path, log=_quiet, seconds=3, clients=8)
    assert res["correct"], res
    assert res["paced"]["requests"] > 0 and res["saturation"]["requests"] > 0 and res["dropped"] == 0
    assert res["frames_processed"] == res["frames_restored"] + res["frames_in"] and res["frames_in"] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("on_test_bundle")
def test_soak_keeps_rss_fds_and_threads_flat(tmp_path):
    res = reliability_soak.run(True, tmp_path, log=_quiet, hours=3, hour_s=60)
    assert res["passed"], (res["failed_checks"], res)


# rtsp runs in tests/test_reliability_rtsp.py, with checks that hold under any load (its "passed"
# includes the ±2 s gap and watchdog-delay figures, which depend on the machine)
@pytest.mark.slow
@pytest.mark.usefixtures("on_test_bundle")
@pytest.mark.parametrize("name", ["media"])
def test_other_fault_scenarios(name, tmp_path):
    if reliability._module(name) is None:
        pytest.skip(f"tools/reliability/{name}.py not present")
    res = reliability.run_one(name, True, tmp_path, log=_quiet)
    assert res["passed"], res


@pytest.mark.usefixtures("runner")
def test_runner_writes_results_and_says_what_is_missing(tmp_path):
    assert reliability.main(["--quick", "--only", "media,soak", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "| media |" in md and "not available" in md and (tmp_path / "results.json").is_file()
    assert reliability.main(["--only", "nope", "--out", str(tmp_path)]) == 2


@pytest.mark.usefixtures("runner")
def test_runner_writes_to_a_temp_folder_unless_told(tmp_path, monkeypatch, capsys):
    """Without --out the results go to a new temporary folder, named in the output; docs/ is untouched."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    docs = REPO / "docs" / "reliability" / "results.json"
    before = docs.read_bytes() if docs.is_file() else None
    assert reliability.main(["--quick", "--only", "media"]) == 0
    out = capsys.readouterr().out
    (written,) = [p for p in tmp_path.glob("lvm-reliability-results-*") if (p / "results.json").is_file()]
    assert f"results to {written}" in out and f"wrote {written / 'results.json'}" in out
    assert json.loads((written / "results.json").read_text())["scenarios"]["media"]["available"] is False
    assert (docs.read_bytes() if docs.is_file() else None) == before


@pytest.mark.usefixtures("runner")
def test_runner_uses_the_shipped_bundle(tmp_path):
    shipped = REPO / "engines" / "lvm-tiny-fp32"
    assert (shipped / "manifest.json").is_file()
    assert reliability.main(["--quick", "--only", "soak", "--out", str(tmp_path)]) == 0
    # recorded relative to the repository: a committed result names no machine's folders
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["bundle"] == "engines/lvm-tiny-fp32"


@pytest.mark.usefixtures("runner")
def test_runner_exports_a_missing_bundle(tmp_path, monkeypatch, capsys):
    """No bundle where one is asked for: it is exported there (the exporter itself is lvm-edge demo's,
    tested with the demo; here a copy of the shipped bundle stands in for its output) and then used."""
    exported = []

    def export(bundle):
        exported.append(bundle)
        shutil.copytree(REPO / "engines" / "lvm-tiny-fp32", bundle)

    seen = {}

    class Probe:
        @staticmethod
        def run(quick, workdir, log):
            seen["bundle"] = default_bundle()
            return {"passed": True}

    monkeypatch.setattr(reliability, "_module", lambda name: Probe)
    monkeypatch.setattr(reliability, "ensure_bundle", export)
    want = tmp_path / "engines" / "lvm-tiny-fp32"
    assert reliability.main(["--quick", "--only", "soak", "--bundle", str(want), "--out", str(tmp_path / "r")]) == 0
    assert exported == [want] and seen["bundle"] == want
    assert json.loads((tmp_path / "r" / "results.json").read_text())["meta"]["bundle"] == str(want)

    def cannot(bundle):
        raise CliError(f"no bundle at {bundle} and exporting one needs the export extra")

    monkeypatch.setattr(reliability, "ensure_bundle", cannot)
    capsys.readouterr()
    assert reliability.main(["--only", "soak", "--bundle", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the export extra" in err
