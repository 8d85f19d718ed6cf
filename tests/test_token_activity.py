"""tools/accuracy/token_activity.py: per-token activity of the shipped reader on short videos of each
set, and one line for what it cannot use."""
from __future__ import annotations

import json
import pytest

from tools.accuracy.token_activity import main

def test_scores_each_set_and_each_held_out_video(tmp_path):
    out = tmp_path / "tok.json"
    assert main(["--videos", "1", "--video-s", "96", "--json", str(out)]) == 0
    sets = json.loads(out.read_text())["sets"]
    assert set(sets) == {"train", "unseen", "held_out"} and len(sets["held_out"]["per_video"]) == 1
    for row in sets.values():
        assert row["tokens"] > 0 and (row["top1"] is None or 0.0 <= row["top1"] <= 1.0)
        assert sum(c["tokens"] for c in row["per_activity"].values()) == row["event_tokens"]


@pytest.mark.parametrize("args, expect", [(["--videos", "0"], "--videos must be at least 1"),
                                          (["--reader", "README.md"], "not a readable safetensors file")])
def test_bad_input_is_one_line(tmp_path, capsys, args, expect):
    with pytest.raises(SystemExit) as e:
        main([*args, "--json", str(tmp_path / "x.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1
