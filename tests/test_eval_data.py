"""Evaluating and exporting with a dataset folder: lvm-eval --data, lvm-export --data (calibration
frames spread over the train split; the INT8 export that reads them: test_export), the accuracy gate
on the test split, and the labels a checkpoint must share with the folder."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from edge_runtime.checkout import BASE_ACTIVITIES as ACTIVITIES  # the shipped model's (videos without shrink)
from edge_runtime.config import resolve_model_config
from export.cli import eval as cli_eval
from export.cli import export as cli_export
from export.dataset.render import like_eval, like_train, render_dataset
from export.dataset.eval_data import DataSplit

DUR = 48.0     # 3 clips of 16 s at lvm-tiny's 1 fps
QUERIES = 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two train and two test generator videos written as mp4 files (lvm-data render)."""
    root = tmp_path_factory.mktemp("evalds") / "shop"
    render_dataset(root, like_train([0, 1]) + like_eval([0, 1]), duration_s=DUR, size=112, fps=1.0,
                   progress=False, say=lambda s: None)
    return root


def _main(mod, argv, capsys):
    threads = torch.get_num_threads()
    try:
        rc = mod.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    return rc, out, err


def _nine_activities(src: Path, dest: Path) -> Path:
    """The same folder whose labels.yaml names one activity more (still a valid dataset)."""
    shutil.copytree(src, dest)
    lab = yaml.safe_load((dest / "labels.yaml").read_text())
    (dest / "labels.yaml").write_text(yaml.safe_dump({**lab, "activities": [*lab["activities"], "wave"]}))
    return dest


def test_lvm_eval_data_prints_the_table(dataset, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc, stdout, err = _main(cli_eval, ["--data", dataset, "--queries", QUERIES, "--json", out, "--no-progress"], capsys)
    assert rc == 0, err
    assert "queries on 2 videos of" in stdout and "(split test)" in stdout
    for row in ("activity   short", "object     long", "time       medium"):
        assert row in stdout
    res = json.loads(out.read_text())
    assert res["data"] == {"path": str(dataset), "split": "test", "videos": 2,
                           "stems": [s.stem for s in like_eval([0, 1])]}
    assert 0 < res["queries"] <= 2 * QUERIES and "looks" not in res and "video_s" not in res


def test_bad_data_is_one_line(dataset, tmp_path, capsys):
    j = tmp_path / "x.json"
    rc, _, err = _main(cli_eval, ["--data", dataset, "--split", "val", "--json", j], capsys)
    assert rc == 2 and err.count("\n") == 1 and "'val'" in err and "test" in err and "train" in err
    rc, _, err = _main(cli_eval, ["--data", dataset, "--videos", "3", "--json", j], capsys)
    assert rc == 2 and "--data" in err and err.count("\n") == 1
    rc, _, err = _main(cli_eval, ["--split", "val", "--json", j], capsys)
    assert rc == 2 and "--data" in err and err.count("\n") == 1
    rc, _, err = _main(cli_eval, ["--data", tmp_path / "nothing", "--json", j], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    # a folder as --json is refused before the evaluation, not after it (which lost its results)
    rc, _, err = _main(cli_eval, ["--data", dataset, "--json", tmp_path], capsys)
    assert rc == 2 and err.count("\n") == 1 and "is a folder" in err


def test_labels_mismatch_exits_2_naming_both_lists(dataset, tmp_path, capsys):
    nine = _nine_activities(dataset, tmp_path / "nine")
    rc, _, err = _main(cli_eval, ["--data", nine, "--json", tmp_path / "x.json"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"[{', '.join(ACTIVITIES)}]" in err and f"[{', '.join([*ACTIVITIES, 'wave'])}]" in err
    rc, _, err = _main(cli_export, ["--precision", "fp16", "--data", nine, "--out", tmp_path / "b"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "wave" in err and not (tmp_path / "b").exists()


def test_calibration_frames_spread_over_the_train_split(dataset):
    cfg = resolve_model_config("lvm-tiny")
    from export.onnx.calibration import read_video_files

    files = [it.video for it in DataSplit.open(dataset, "train").items]
    cal = read_video_files(files, "train", cfg, max_frames=40)
    assert [v["frames"] for v in cal.videos] == [32, 8]  # whole clips first; what is left from the second
    assert len(cal) == 40 and np.all(np.diff(cal.times) > 0)  # one stream: the second file's times go on


def test_calib_wins_over_data_for_the_frames(dataset):
    from export.onnx.inputs import read_calibration
    from export.onnx.ui import UI

    cfg = resolve_model_config("lvm-tiny")
    train = DataSplit.open(dataset, "train")
    a = SimpleNamespace(calib="demo://checkout?seed=5&duration=32", calib_frames=32, precision="int8")
    assert read_calibration(a, cfg, UI(False), [], train=train).uri == a.calib
    a.calib = None
    assert read_calibration(a, cfg, UI(False), [], train=train).uri.startswith(f"{dataset} (train split, 2 videos")


def test_gate_evaluator_scores_a_bundle_on_the_test_split(dataset, tiny_bundle):
    from export.evaluate.accuracy_gate import engine_evaluator, run_gate

    ev = engine_evaluator(queries=QUERIES, data=DataSplit.open(dataset, "test"), progress=False, threads=2)
    res = run_gate(tiny_bundle, tiny_bundle, ev, 1.0)  # a bundle against itself: every delta 0
    assert res.passed and res.evaluation["queries"] > 0
    data = res.manifest()["evaluation"]["data"]
    assert (data["path"], data["split"], data["videos"]) == (str(dataset), "test", 2)
    assert all(d in (0.0, None) for qt in res.deltas["recall@1x"].values() for d in qt.values())
    # paired: the same queries, none answered differently, every scored one counted in its cell
    cells = [c for ws in res.paired.values() for c in ws.values()]
    assert sum(c["queries"] for c in cells) > 0 and not any(c["better"] or c["worse"] for c in cells)
    assert res.evaluation["changed_answers"] == 0


def test_bundle_options_are_one_line(tmp_path, capsys):
    j = tmp_path / "x.json"
    for argv, needle in ((["--answers", "reader"], "--bundle"), (["--absent-share", "0.1"], "--bundle"),
                         (["--bundle", tmp_path, "--checkpoint", "c.safetensors"], "--checkpoint"),
                         (["--bundle", tmp_path, "--absent-share", "1.5"], "--absent-share"),
                         (["--bundle", tmp_path / "none"], "--bundle")):
        rc, _, err = _main(cli_eval, [*argv, "--json", j], capsys)
        assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_lvm_eval_bundle_scores_not_seen_from_the_runtime_answers(dataset, tiny_bundle, tmp_path, capsys):
    """The shipped checkpoint's bundle (with its reader) through the Engine: the heads' answers carry
    no confidence (n/a cells), the reader's do; absent queries are asked, present ones unchanged."""
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    kinds = ["heads"] + (["reader"] if manifest["answers"].get("kind") == "reader" else [])
    res = {}
    for kind in kinds:
        out = tmp_path / f"{kind}.json"
        rc, stdout, err = _main(cli_eval, ["--bundle", tiny_bundle, "--answers", kind, "--data", dataset,
                                           "--queries", QUERIES, "--absent-share", "0.3", "--threads", "1",
                                           "--json", out, "--no-progress"], capsys)
        assert rc == 0, err
        res[kind] = json.loads(out.read_text())
        assert f"answers from the {kind}" in stdout and "->not seen" in stdout
        assert res[kind]["answers"] == kind and res[kind]["answered_by"].get(kind, 0) > 0
        cells = res[kind]["not_seen"]
        assert cells["all"]["absent"] > 0 and cells["all"]["present"] > 0
        assert cells["all"]["absent"] + cells["all"]["present"] == res[kind]["queries"]
    heads = res["heads"]["not_seen"]["all"]
    assert heads["ece"] is None and heads["confident_precision"] is None and heads["with_confidence"] == 0
    if "reader" in res:
        reader = res["reader"]["not_seen"]["all"]
        assert reader["with_confidence"] == res["reader"]["queries"] - res["reader"]["answered_by"].get("unknown", 0)
        assert reader["ece"] is not None and 0.0 <= reader["ece"] <= 1.0
        assert res["reader"]["count"] == res["heads"]["count"]  # the same present queries
    if "reader" not in kinds:  # a bundle without a reader: asking for one is one line
        rc, _, err = _main(cli_eval, ["--bundle", tiny_bundle, "--answers", "reader", "--data", dataset,
                                      "--json", tmp_path / "x.json"], capsys)
        assert rc == 2 and err.count("\n") == 1 and "reader" in err
