"""The backbone probe of tools/accuracy/patch_identity.py: it fits, scores held-out patches, and
refuses what it cannot read with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.accuracy.patch_identity import main

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "lvm-tiny.safetensors"


def test_probe_scores_held_out_patches(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert main(["--backbone", str(SHIPPED), "--train-videos", "2", "--eval-videos", "1", "--video-s", "120",
                 "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["backbones"][str(SHIPPED)]
    assert res["patches"][0] > 50 and res["train_patches"] > 100
    # fitted on its own patches far above chance (14 classes); held-out is a share
    assert res["fitted"] > 0.5 and 0.0 <= res["held_out"] <= 1.0
    act = res["activity"]
    assert act["patches"] == res["patches"] and act["fitted"] > 0.3 and 0.0 <= act["balanced_held_out"] <= 1.0
    both = res["class_and_label"]  # the product and its label colour (3 at most a product)
    assert both["patches"] == res["patches"] and both["fitted"] > 0.3 and 0.0 <= both["held_out"] <= res["held_out"] + 0.05
    assert "held-out patch class accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("content, expect", [(None, "backbone weights file not found"),
                                             (b"not safetensors", "not a readable safetensors file")])
def test_unreadable_backbone_is_one_line(tmp_path, capsys, content, expect):
    f = tmp_path / "bb.safetensors"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        main(["--backbone", str(f)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1
