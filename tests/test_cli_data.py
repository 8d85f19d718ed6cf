"""lvm-data: exit codes, one line per problem, never a traceback. One real subprocess (the console
script as users run it); the rest call main() in-process."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.cli.data import main, parse_seeds
from export.dataset.render import like_train, render_dataset

A = "train-0000-s0-l0"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "good"
    render_dataset(root, like_train([0, 1]), duration_s=60.0, progress=False, say=lambda s: None)
    return root


@pytest.fixture
def broken(good, tmp_path) -> Path:
    """Three problems: an unknown activity, an event of no instance, an undecodable video."""
    root = Path(shutil.copytree(good, tmp_path / "broken"))
    p = root / "annotations" / f"{A}.json"
    ann = json.loads(p.read_text())
    ann["events"][0]["activity"] = "bagg"
    ann["events"][1]["instance_id"] = 99
    p.write_text(json.dumps(ann))
    (root / "videos" / "train-0001-s1-l1.mp4").write_bytes(b"junk" * 64)
    return root


def test_check_cli_lists_every_problem_and_exits_1(broken):
    exe = Path(sys.executable).parent / "lvm-data"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "export.cli.data"]
    res = subprocess.run([*cmd, "check", str(broken)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    out = res.stdout.strip().splitlines()
    assert out[0] == f"annotations/{A}.json: events[0].activity: 'bagg' not in labels.yaml activities"
    assert out[1] == f"annotations/{A}.json: events[1].instance_id: 99 is not an instance in instances"
    assert out[2].startswith("videos/train-0001-s1-l1.mp4: ") and len(out) == 3
    assert res.stderr.strip() == f"lvm-data check: {broken}: 3 errors, 0 warnings"
    assert "Traceback" not in res.stdout + res.stderr


def test_check_ok_and_json(good, tmp_path, capsys):
    assert main(["check", str(good), "--json", str(tmp_path / "p.json")]) == 0
    assert capsys.readouterr().out.strip() == f"lvm-data check: {good}: ok (videos opened; 0 warnings)"
    assert json.loads((tmp_path / "p.json").read_text())["problems"] == []
    assert main(["check", str(good), "--no-decode", "--full"]) == 0


def test_stats_ok_and_broken(good, broken, capsys):
    assert main(["stats", str(good), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["all"]["videos"] == 2 and st["all"]["duration_s"] == 120.0
    assert main(["stats", str(broken)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lvm-data: error: {broken}: 2 problems (first: annotations/")
    assert err[0].endswith(f"run lvm-data check {broken}")


def test_render_cli(tmp_path, capsys):
    assert main(["render", "--seeds", "4", "--out", str(tmp_path / "d"), "--duration", "3", "--look", "steel",
                 "--split", "val", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("lvm-data render: videos/s4-l5.mp4: 3 frames, PSNR of the decoded frames ")
    assert "dB mean" in out[-1] and "render.json" in out[-1]
    ann = json.loads((tmp_path / "d" / "annotations" / "s4-l5.json").read_text())
    assert ann["split"] == "val" and ann["look"] == 5 and ann["seed"] == 4


@pytest.mark.parametrize("argv, msg", [
    (["render", "--seeds", "3-1", "--out", "X"], "--seeds '3-1': '3-1' is not an ascending range"),
    (["render", "--seeds", "a", "--out", "X"], "--seeds 'a': 'a' is not N or N-M"),
    (["render", "--seeds", "1", "--out", "X", "--duration", "0.5"], "--duration 0.5 at --fps 1 gives no frame"),
    (["render", "--seeds", "1", "--out", "X", "--like", "train", "--look", "oak"], "--like fixes the looks"),
    (["render", "--seeds", "1", "--out", "X", "--look", "marble"], "--look: unknown look 'marble'"),
    (["import-cvat", "nosuch.xml", "--video", "v.mp4", "--out", "X"], None),
])
def test_usage_errors_are_one_line_exit_2(argv, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    if msg:
        assert err[0].startswith(f"lvm-data: error: {msg}"), err
    assert not (tmp_path / "X").exists()


def test_import_cvat_without_the_converter(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "export.dataset.cvat", None)   # as if cvat.py were not installed
    assert main(["import-cvat", "a.xml", "--video", "v.mp4", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("lvm-data import-cvat: not available in this installation "
                                              "(export/dataset/cvat.py is missing)")


def test_parse_seeds():
    assert parse_seeds("0-3,7, 5") == [0, 1, 2, 3, 5, 7]


@pytest.mark.parametrize("module", ["export.cli.data", "export.cli.eval", "export.cli.train", "export.cli.export"])
def test_export_clis_describe_every_option_and_their_examples_name_shipped_paths(module):
    # lvm-eval --help showed --no-progress undescribed and an example bundle, build/..., that does not exist
    import argparse
    import importlib
    import re

    parser = importlib.import_module(module).build_parser()
    parsers = [parser] + [c for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                          for c in a.choices.values()]
    undescribed = [f"{p.prog} {a.option_strings[0]}" for p in parsers for a in p._actions
                   if a.option_strings and not a.help]
    assert undescribed == []
    repo = Path(__file__).resolve().parent.parent
    for p in parsers:  # what a shipped folder holds; runs/ and data/ are the user's own
        for path in re.findall(r"(?<![\w/.-])((?:engines|checkpoints|configs)/[\w./-]+)", p.epilog or ""):
            assert (repo / path).exists(), f"{p.prog} --help names {path}, which the checkout does not have"
