"""CLI pieces: runtime configs (strict), flag overrides, HOST:PORT, status line, demo bundle export."""
import io
from pathlib import Path

import pytest

from edge_runtime import cli
from edge_runtime.config import ConfigError
from edge_runtime.cli.runtime_config import load_runtime_settings, override


def test_shipped_runtime_configs_validate():
    kiosk = load_runtime_settings(cli.REPO_ROOT / "configs/runtime/kiosk.yaml")
    assert kiosk.source.uri == "0" and kiosk.api.host == "127.0.0.1" and kiosk.state.dir
    demo = load_runtime_settings("demo")
    assert demo.demo.duration_s == 600 and demo.state.dir is None


def test_demo_needs_no_config_file():
    # an installed package (not the repository) has no configs/ folder: the demo's settings are the defaults
    args = cli.build_parser().parse_args(["demo"])
    assert args.config is None
    demo_yaml = load_runtime_settings("demo")
    assert load_runtime_settings(None).demo == demo_yaml.demo


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "k.yaml"
    p.write_text("api:\n  hots: 0.0.0.0\n")
    with pytest.raises(ConfigError, match=r"k.yaml: unknown key 'api.hots'"):
        load_runtime_settings(p)
    p.write_text("backend: cuda\n")
    with pytest.raises(ConfigError, match=r"k.yaml: backend"):
        load_runtime_settings(p)
    with pytest.raises(ConfigError, match="not found"):
        load_runtime_settings(tmp_path / "missing.yaml")


def test_flags_override_the_file():
    s = load_runtime_settings(cli.REPO_ROOT / "configs/runtime/kiosk.yaml")
    s2 = override(s, {"state.dir": "/tmp/x", "backend": "onnxruntime", "source.realtime": None, "duration_s": 5.0})
    assert s2.state.dir == "/tmp/x" and s2.backend == "onnxruntime" and s2.source.realtime is True
    assert s2.duration_s == 5.0


@pytest.mark.parametrize("text, want", [("127.0.0.1:9000", ("127.0.0.1", 9000)), ("0.0.0.0:1", ("0.0.0.0", 1)),
                                        ("[::1]:8000", ("::1", 8000)), ("9001", ("127.0.0.1", 9001)),
                                        ("http://kiosk:80/", ("kiosk", 80)), ("kiosk", ("kiosk", 8321))])
def test_hostport(text, want):
    assert cli.parse_hostport(text) == want
    with pytest.raises(cli.CliError):
        cli.parse_hostport("host:port")


def test_status_line_plain_when_not_a_tty():
    class RT:
        def status(self):
            return {"state": "streaming", "stream_time": 12.0, "fps": 3.0, "stream_rate": 3.0, "dropped": 1,
                    "coverage": {"start": 0.0, "end": 10.0}, "gaps": [], "memory_bytes": 4_100_000, "clips": 1,
                    "error": None}

    out = io.StringIO()
    line = cli.StatusLine(RT(), 1.0, stream=out)
    line.tick(force=True)
    line.tick()  # throttled
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" not in text
    assert "[streaming] t=12s  3.0 fps (3.0x)  drops 1  coverage 0-10s" in text


def test_demo_without_export_extra_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(cli.CliError, match=r"pip install 'lvm-edge\[export\]'"):
        cli.ensure_bundle(tmp_path / "lvm-tiny-fp32")
    (tmp_path / "lvm-tiny-fp32").mkdir()
    (tmp_path / "lvm-tiny-fp32" / "manifest.json").write_text("{}")
    cli.ensure_bundle(tmp_path / "lvm-tiny-fp32")  # present: nothing to do


def test_demo_refuses_a_missing_bundle_it_was_not_asked_to_export(tmp_path, monkeypatch, capsys):
    # a mistyped --bundle exported a new bundle into the typo (40 s) and exited 0
    from edge_runtime.cli import demo

    exported = []

    def export(path):  # stands in for lvm-export, and stops the demo there
        exported.append(path)
        raise cli.CliError("exported", 3)

    monkeypatch.setattr(demo, "ensure_bundle", export)
    typo = tmp_path / "typo"
    assert cli.main(["demo", "--bundle", str(typo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--bundle {typo}: no bundle there" in err and "--export-if-missing" in err
    assert exported == [] and not typo.exists()
    # asked for: exported; the shipped bundle's path is exported when missing without being asked
    assert cli.main(["demo", "--bundle", str(typo), "--export-if-missing"]) == 3
    assert exported == [typo]
    from edge_runtime.cli.runtime_config import load_runtime_settings

    assert demo.shipped_bundle(load_runtime_settings(None))
    assert demo.shipped_bundle(override(load_runtime_settings(None), {"bundle": "engines/lvm-tiny-fp32/"}))
    assert not demo.shipped_bundle(override(load_runtime_settings(None), {"bundle": str(typo)}))


def test_demo_table_names_products_and_says_how_many_were_right():
    from types import SimpleNamespace

    from edge_runtime.cli.demo import TABLE_LEGEND, demo_table

    def q(kind, **kw):
        base = dict(type=kind, start=0.0, end=300.0, instance_id=None, activity_id=None, gt_activities=[],
                    gt_interval=None, gt_boxes=[])
        return SimpleNamespace(**(base | kw))

    queries = [q("activity", instance_id=6, gt_activities=[0]),
               q("time", instance_id=6, activity_id=1, gt_interval=(10.0, 20.0)),
               q("activity", instance_id=2, gt_activities=[0, 1]),
               q("object", activity_id=1, gt_boxes=[(12.0, 0.1, 0.1, 0.3, 0.3), (12.2, 0.1, 0.1, 0.3, 0.3)])]
    answers = [{"ranked": [0, 1]}, {"intervals": [[11.0, 19.0, 0.9]]}, {"ranked": [0, 2]},
               {"boxes": [[0.6, 0.6, 0.9, 0.9], [0.6, 0.6, 0.9, 0.9]], "times": [12.0, 12.2], "extent": [12.0, 12.2]}]
    table = demo_table(queries, answers, ["scan", "bag", "hold"], products={6: "milk carton", 2: "eggs"})
    assert "milk carton #6" in table and "scan + milk carton #6" not in table and "bag + milk carton #6" in table
    assert "eggs #2" in table and "object #" not in table
    # the object answer is at the right time with its boxes elsewhere: scored 0 by box overlap
    assert table.splitlines()[-1] == "2 of 4 answers right (those with R@1x = 1.00), 1 in part"
    assert "box overlap" in TABLE_LEGEND and "vIoU" in TABLE_LEGEND


def test_catalog_add_to_a_state_dir_needs_no_runtime_and_no_camera(tmp_path, capsys):
    # the kiosk's catalog step started `lvm-edge run` on the camera: with none, it could not be done
    import cv2
    import numpy as np

    from edge_runtime.query.catalog import Catalog
    from edge_runtime.serve.state_lock import lock_state_dir

    crops, state = tmp_path / "oat-milk", tmp_path / "state"
    crops.mkdir()
    rng = np.random.default_rng(0)
    for name in ("front.png", "side.jpg"):
        assert cv2.imwrite(str(crops / name), rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    (crops / "notes.txt").write_text("not a picture")
    assert cli.main(["catalog", "add", "oat milk 1l", str(crops), "--state-dir", str(state)]) == 0
    assert "added 'oat milk 1l' (2 pictures)" in capsys.readouterr().out
    assert Catalog(state).entry("Oat Milk 1L")["sizes"] == [[30, 40], [30, 40]]  # what the runtime will load
    assert cli.main(["catalog", "list", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.startswith("oat milk 1l  2 pictures")
    # bad input: one line, exit 2, naming the file or folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    for pictures, msg in (([str(tmp_path / "empty")], "a folder with no PNG or JPEG files"),
                          ([str(tmp_path / "bad.png")], f"{tmp_path / 'bad.png'} is not a PNG or JPEG image")):
        assert cli.main(["catalog", "add", "eggs", *pictures, "--state-dir", str(state)]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    # a runtime running on the state dir holds the catalog in memory: the change goes through it
    held = lock_state_dir(state)
    try:
        assert cli.main(["catalog", "remove", "oat milk 1l", "--state-dir", str(state)]) == 1
        assert "a runtime is running on it" in capsys.readouterr().err
    finally:
        held.close()
    assert cli.main(["catalog", "remove", "oat milk 1l", "--state-dir", str(state)]) == 0
    assert len(Catalog(state)) == 0


def test_query_needs_its_inputs(capsys, monkeypatch):
    from edge_runtime.cli import http_client

    monkeypatch.setattr(http_client, "START_WAIT_S", 0.5)  # no runtime will start on port 1
    assert cli.main(["query", "time", "--api", "127.0.0.1:1", "--start", "0", "--end", "5"]) == 2
    assert "--image PATH" in capsys.readouterr().err
    assert cli.main(["query", "activity", "--api", "127.0.0.1:1", "--start", "0", "--end", "5",
                     "--image", "/nonexistent.png"]) == 2
    capsys.readouterr()
    assert cli.main(["query", "status", "--api", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the runtime: nothing listened there for 0.5 s (start `lvm-edge run`" in err
    assert err.count("\n") == 1


def test_every_client_command_asks_through_the_one_http_client():
    # so that each waits for a runtime still starting (below); ask and happened included
    clients = [p.name for p in (cli.REPO_ROOT / "edge_runtime" / "cli").glob("*.py")
               if "urllib.request" in p.read_text() or "http.client" in p.read_text()]
    assert clients == ["http_client.py"]


@pytest.mark.parametrize("argv", [["query", "status"], ["alerts"], ["streams"], ["catalog", "list"]])
def test_clients_wait_for_a_runtime_that_is_still_starting(argv, capsys):
    # `lvm-edge alerts` straight after `lvm-edge run ... &` was refused: the API opens once the engine is loaded
    import json
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Runtime(BaseHTTPRequestHandler):
        def _reply(self):
            body = json.dumps({"products": [], "alerts": [], "streams": [], "state": "streaming"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *a):
            pass

    with socket.socket() as probe:  # a free port, opened 0.6 s after the command starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = []

    def start_late():
        threading.Event().wait(0.6)
        server = ThreadingHTTPServer(("127.0.0.1", port), Runtime)
        started.append(server)
        server.serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    try:
        code = cli.main([*argv, "--api", f"127.0.0.1:{port}"])
        assert code == 0, capsys.readouterr().err
    finally:
        while not started:
            threading.Event().wait(0.05)
        started[0].shutdown()
        started[0].server_close()


def test_bad_values_are_one_line_naming_the_flag(capsys, tmp_path):
    with pytest.raises(cli.CliError, match=r"--api '127.0.0.1:99999': the port must be 0..65535"):
        cli.parse_hostport("127.0.0.1:99999")
    with pytest.raises(cli.CliError, match="must be 0..65535"):
        cli.parse_hostport("127.0.0.1:-1")
    # argparse's own errors: one line, no usage block
    for argv in (["run", "--duration", "-5"], ["run", "--answers", "bogus"], ["demo", "--queries", "0"],
                 ["alerts", "--limit", "0"], ["alerts", "--since", "x"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "usage" not in err, (argv, err)
    # a value the runtime config's schema refuses is named by its flag, in one line
    from edge_runtime.cli.common import load_settings
    from types import SimpleNamespace

    with pytest.raises(cli.CliError) as e:
        load_settings(SimpleNamespace(config=None), {"demo.queries": 500})
    assert str(e.value).startswith("--queries 500: input should be less than or equal to 100"), str(e.value)
    # a state dir that is a file
    f = tmp_path / "file"
    f.write_text("x")
    from edge_runtime.cli.common import check_state_dir

    with pytest.raises(cli.CliError, match="not a folder"):
        check_state_dir(f)


def test_demo_too_short_for_its_questions_says_so(capsys):
    assert cli.main(["demo", "--duration", "20"]) == 0
    out = capsys.readouterr()
    assert "no questions to ask: they are about windows of 300 s or more, and this video is 20 s" in out.err
    assert "queries answered" not in out.out


def test_doctor_creates_no_state_dir(tmp_path, capsys):
    target = tmp_path / "a" / "b"
    cli.main(["doctor", "--state-dir", str(target), "--bundle", str(tmp_path / "no-bundle")])
    out = capsys.readouterr().out
    assert not (tmp_path / "a").exists()
    assert "does not exist yet; the runtime can create it" in out
    assert f"bundle {tmp_path / 'no-bundle'}" in out


def test_doctor_says_when_the_state_dir_has_no_room_for_its_snapshots(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10_000_000, 9_000_000, 1_000_000))
    code = cli.main(["doctor", "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "1 MB free, under the 24 MB the snapshots need to be written" in out, out


def test_doctor_checks_a_runtime_config_its_sources_bundle_and_state_dir(tmp_path, capsys):
    missing = "/dev/video" + str(next(i for i in range(90, 200) if not Path(f"/dev/video{i}").exists()))
    cfg = tmp_path / "kiosk.yaml"
    cfg.write_text(f"streams:\n  - name: lane1\n    uri: {missing}\n  - name: lane2\n    uri: 'demo://checkout?seed=3'\n"
                   f"  - name: lane3\n    uri: 'rtsp://user:secret@10.0.0.1/s'\nstate:\n  dir: {tmp_path / 'state'}\n")
    assert cli.main(["doctor", "--config", str(cfg)]) == 1  # a camera the config needs is missing: BAD
    out = capsys.readouterr().out
    assert f"[ok ] config                 {cfg}: valid; no alert rules" in out
    assert "[BAD] lane1" in out and "no such camera" in out
    # doctor is where the runtime's own message sends the user: it says what to do instead
    assert "plug it in" in out and "demo://checkout" in out and "lvm-edge doctor`" not in out
    assert "[ok ] lane2" in out and "[ - ] lane3                  rtsp://user:***@10.0.0.1/s: rtsp (not contacted)" in out
    assert "secret" not in out and "bundle lvm-tiny-fp32" in out and f"{tmp_path / 'state'} does not exist yet" in out
    assert not (tmp_path / "state").exists()
    cfg.write_text("bundle: x\nnope: 1\n")
    assert cli.main(["doctor", "--config", str(cfg)]) == 1
    assert f"[BAD] config                 {cfg}: unknown key 'nope'" in capsys.readouterr().out


def test_one_runtime_per_state_dir_and_a_named_run_says_where_the_unnamed_memory_is(tmp_path, capsys):
    import os

    from edge_runtime.serve.state_lock import lock_state_dir

    run = ["run", "--source", "demo://checkout?seed=3&duration=32", "--api", "none", "--state-dir", str(tmp_path)]
    held = lock_state_dir(tmp_path)  # a runtime already running on this state dir
    try:
        assert cli.main(run) == 2
        err = capsys.readouterr().err
        assert f"state dir {tmp_path} is in use by lvm-edge run (pid {os.getpid()})" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "snapshot.npz").exists()
    finally:
        held.close()
    assert cli.main(run) == 0 and (tmp_path / "snapshot.npz").is_file()
    capsys.readouterr()
    named = [("lane1=" + a if a.startswith("demo://") else a) for a in run]
    assert cli.main(named) == 0
    assert "snapshot.npz holds the memory of an unnamed stream, not in this run" in capsys.readouterr().err


def test_doctor_reads_each_snapshot_as_a_start_would(tmp_path, capsys):
    import numpy as np

    (tmp_path / "streams" / "lane2").mkdir(parents=True)
    (tmp_path / "snapshot.npz").write_bytes(np.random.default_rng(0).bytes(4096))  # not an archive at all
    (tmp_path / "streams" / "lane2" / "snapshot.npz").write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a cut one
    assert cli.main(["doctor", "--state-dir", str(tmp_path), "--bundle", "engines/lvm-tiny-fp32"]) == 1
    out = capsys.readouterr().out
    assert "[BAD] snapshot               " in out and "damaged snapshot (not an archive of arrays)" in out
    assert "[BAD] snapshot lane2" in out and "the next start sets it aside and starts empty" in out
    assert "pickle" not in out and "2 problem(s)" in out


def test_demo_names_the_settings_of_a_live_run_it_ignores():
    # the demo streams demo:// in-process: a kiosk config's source, API and state do not apply, and it says so
    from edge_runtime.cli.demo import DEMO_IGNORES, given_settings

    assert not given_settings("configs/runtime/demo.yaml") & set(DEMO_IGNORES)
    assert {"source", "api", "state"} <= given_settings("configs/runtime/kiosk.yaml") & set(DEMO_IGNORES)
    assert given_settings(None) == set()


def test_doctor_refuses_a_snapshot_without_the_timeline_its_bundle_keeps_and_lists_parked_memories(tmp_path, capsys):
    import numpy as np

    from edge_runtime.backends.bundle import load_bundle
    from edge_runtime.engine.snapshot import write_snapshot

    bundle = load_bundle("engines/lvm-tiny-fp32")
    assert bundle.timeline is not None
    meta = {"bundle_id": bundle.bundle_id, "coverage": {"start": 0.0, "end": 500.0}, "source": "demo://checkout"}
    write_snapshot(tmp_path / "snapshot.npz", {"memory_mem": np.zeros((1, 4), np.float32)}, meta)  # no timeline.*
    (tmp_path / "streams" / "lane3").mkdir(parents=True)
    (tmp_path / "streams" / "lane3" / "snapshot.npz.other-bundle-20261126T235549Z").write_bytes(b"kept")
    assert cli.main(["doctor", "--state-dir", str(tmp_path), "--bundle", "engines/lvm-tiny-fp32"]) == 1
    out = capsys.readouterr().out
    assert "[BAD] snapshot " in out and "holds no timeline" in out and "the next start refuses it" in out
    assert "1 memory(ies) of another bundle" in out and "lane3/snapshot.npz.other-bundle-20261126T235549Z" in out


def test_doctor_says_when_a_bundles_ood_statistics_are_damaged(tmp_path, capsys):
    import json
    import shutil

    copy = tmp_path / "b"
    shutil.copytree("engines/lvm-tiny-fp32", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["ood"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["doctor", "--bundle", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "[BAD] ood b" in out and "does not match its sha256" in out and "re-export the bundle" in out
