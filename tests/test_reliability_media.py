"""Bad media given to a real `lvm-edge run` (tools/reliability/media.py): one line naming the
source, the documented exit status, no traceback; damaged files either refused or streamed up to
the damage with the damage said in that line. Megamind_bugy.avi (Debian opencv-doc, fetched by
tools/fetch_footage.sh) is checked on its own and skipped, visibly, where it is missing."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
from edge_runtime.cli.common import CliError
from edge_runtime.cli.run import preflight_source
from tools.reliability import media


@pytest.fixture
def bundle_env(tiny_bundle, monkeypatch):
    monkeypatch.setenv("LVM_RELIABILITY_BUNDLE", str(tiny_bundle))


@pytest.mark.slow
def test_bad_media_one_line_right_exit_code_no_traceback(bundle_env, tmp_path):
    r = media.run(True, tmp_path)
    failed = [c for c in r["cases"] if not c["passed"]]
    assert not failed, failed
    by = {c["case"]: c for c in r["cases"]}
    assert by["truncated MJPG AVI"]["outcome"] == "streamed what decodes, damage reported"
    assert by["truncated MP4 (index lost)"]["outcome"] == "refused"
    assert by[f"{media.DEAD_RTSP} without --duration"]["outcome"] == "kept retrying"


@pytest.mark.slow
def test_megamind_bugy_streams_what_decodes(bundle_env, tmp_path):
    bugy = media.footage_dir() / "Megamind_bugy.avi"
    if not bugy.is_file():
        pytest.skip(f"Megamind_bugy.avi not at {bugy} (tools/fetch_footage.sh fetches Debian's opencv-doc)")
    name, rc, text = media.MEGAMIND_CASE
    c = media.check_case(name, str(bugy), rc, text, tmp_path / "state")
    assert c["passed"], c
    assert c["outcome"] == "streamed what decodes"


def test_cli_names_a_directory_and_takes_an_image_sequence(tmp_path):
    """`lvm-edge run --source <a directory>` said "no such file", and a frame_%04d.png pattern
    (which the file source reads) was refused the same way: the CLI checked is_file() before the
    source could say what is wrong."""
    import cv2
    import numpy as np

    folder = tmp_path / "looks_like.mp4"
    folder.mkdir()
    with pytest.raises(CliError, match="is a directory"):
        preflight_source(str(folder))
    with pytest.raises(CliError, match="no such file"):
        preflight_source(str(tmp_path / "missing.mp4"))
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f_{i:04d}.png"), np.full((32, 32, 3), 60 * i, np.uint8))
    preflight_source(str(tmp_path / "f_%04d.png"))
