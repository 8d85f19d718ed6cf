"""Class names travel with the model: checkpoint metadata -> bundle manifest -> the runtime's answers."""
from __future__ import annotations

import json

import pytest

from edge_runtime.config import load_model_config
from export.model.checkpoint import REPO_ROOT, CheckpointError, checkpoint_labels, read_metadata, save_checkpoint

TINY = REPO_ROOT / "configs" / "models" / "lvm-tiny.yaml"
MINE = {"activities": ["walk", "stand", "meet"], "products": ["person"]}
MINE8 = {"activities": ["walk", "stand", "meet", "wave", "sit", "run", "carry", "wait"], "products": ["person"]}


def _net(num_activities: int):
    import torch

    from export.model.lvmnet import LVMNet

    cfg = load_model_config(TINY)
    cfg = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"num_activities": num_activities})})
    torch.manual_seed(0)
    return LVMNet(cfg)


def test_checkpoint_keeps_labels_and_refuses_a_count_mismatch(tmp_path):
    net = _net(3)
    path = save_checkpoint(net, tmp_path / "c.safetensors", {"seed": 0}, labels=MINE)
    assert checkpoint_labels(read_metadata(path)) == MINE
    with pytest.raises(CheckpointError, match="3 classes"):
        save_checkpoint(net, tmp_path / "bad.safetensors", labels={"activities": ["a", "b"]})
    bare = save_checkpoint(net, tmp_path / "bare.safetensors")
    assert checkpoint_labels(read_metadata(bare)) is None


@pytest.mark.slow  # a whole export of another checkpoint (its own labels): traced and checked anew
def test_export_writes_the_checkpoint_labels_and_the_engine_answers_in_them(tmp_path, capsys, fast_export):
    """The shipped weights under 8 names of the user's own: the graphs are the shipped model's and only
    the names differ."""
    from edge_runtime.engine.engine import Engine
    from export.cli import export as cli_export
    from export.model.checkpoint import load_checkpoint

    net, _ = load_checkpoint(REPO_ROOT / "checkpoints" / "lvm-tiny.safetensors")
    ck = save_checkpoint(net, tmp_path / "mine.safetensors", {"seed": 0}, labels=MINE8)
    out = tmp_path / "bundle"
    rc = cli_export.main(["--checkpoint", str(ck), "--precision", "fp32", "--out", str(out), "--calib",
                          "demo://checkout?seed=7000000&duration=64", "--calib-frames", "32", "--bench-runs", "1",
                          "--no-progress", "--skip-gate"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == MINE8 and "labels" not in manifest["checkpoint"]
    engine = Engine(out)
    assert engine.labels == MINE8["activities"] and engine.products == MINE8["products"]
    assert engine.activity_id("meet") == 2
