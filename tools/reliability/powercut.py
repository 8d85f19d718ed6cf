"""Power cut during snapshots: SIGKILL a streaming `lvm-edge run` at random moments, restart it.

Snapshots are made as frequent as the runtime allows (``--snapshot-every`` far below one clip's
wall time: one snapshot per committed clip), so many kills land inside a snapshot write; a
snapshot's temp file still present after the kill says so. Before each restart the snapshot on
disk is read back here (checksums and all); the restart must restore exactly that one: same frames
processed, no crash, no warning. Memory lost = stream time the process had reached before the kill
minus the stream time the restored snapshot ends at.

Then the damage a power cut leaves on some file systems: the last snapshot truncated, or its tail
zero-filled. The runtime must start, say in one line that it set the damaged snapshot aside, and
answer with an empty memory (the design keeps one snapshot, so there is no older one to fall back to).
"""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from edge_runtime.engine.snapshot import SNAPSHOT_NAME, SnapshotError, read_snapshot
from tools.reliability.common import RunProcess, ScenarioError, percentile

SOURCE = "demo://checkout?seed=11&duration=86400"
TMP_GLOB = f".{SNAPSHOT_NAME}.*.tmp"


def _on_disk(state: Path) -> dict[str, Any] | None:
    """The snapshot a restart should restore: its meta, or None if there is none / it is unreadable."""
    path = state / SNAPSHOT_NAME
    if not path.exists():
        return None
    try:
        return read_snapshot(path)[1]
    except SnapshotError as err:
        return {"unreadable": str(err)}


def _freeze_inside_write(rt: RunProcess, state: Path, before: set[Path], timeout: float) -> None:
    """Freeze ``rt`` while a snapshot write of its own is unfinished, so that the kill after lands inside
    it: on seeing a new temp file, SIGSTOP, then look again (a frozen process renames nothing); if the
    write finished in between, thaw and wait for the next one (a snapshot per clip). Polling alone
    lost that race on a loaded machine, and the kill then fell between writes. Gives up after
    ``timeout`` seconds (the kill is then counted as outside a write)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and rt.alive():
        if any(e.name.endswith(".tmp") and state / e.name not in before for e in os.scandir(state)):
            rt.freeze()
            if set(state.glob(TMP_GLOB)) - before:
                return
            rt.freeze(False)


def kills(n: int, workdir: Path, log=print, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    state = workdir / "state"
    shutil.rmtree(state, ignore_errors=True)
    restores = consistent = in_write = 0
    lost: list[float] = []
    failures: list[str] = []
    tmp_left_max = 0
    for i in range(n + 1):  # the last start only checks the last kill's restore
        expect = _on_disk(state)
        killed_tmp = set(state.glob(TMP_GLOB))  # temp files of the killed process's write, if any
        rt = RunProcess(["--source", SOURCE, "--snapshot-every", "0.001", "--no-keep-serving"],
                        workdir, state_dir=state, name="powercut")
        try:
            rt.start()
            rt.wait_ready()
            st = rt.status()
            if expect is not None:
                restores += 1
                got = st.get("restored_from") or {}
                if "unreadable" in expect:
                    failures.append(f"start {i}: the snapshot on disk was damaged: {expect['unreadable']}")
                elif got.get("frames_processed") != expect.get("frames_processed"):
                    failures.append(f"start {i}: restored {got.get('frames_processed')} frames, the snapshot "
                                    f"on disk holds {expect.get('frames_processed')}")
                else:
                    consistent += 1
            # temp files of killed writes that the restart kept (not the new process's own: with a
            # snapshot per clip, a slow machine's restart may already be writing its next one)
            left = killed_tmp & set(state.glob(TMP_GLOB))
            tmp_left_max = max(tmp_left_max, len(left))
            if i == n:
                break
            # let it stream (and snapshot) a random while, then cut the power
            st = rt.wait_status(lambda s: (s.get("stream_time") or 0) > 0, timeout=60, every=0.02)
            time.sleep(rng.uniform(0.05, 1.0))
            reached = rt.status().get("stream_time") or 0.0
            if i % 2:  # every other kill lands inside a snapshot write
                _freeze_inside_write(rt, state, killed_tmp, 30.0)
            rt.kill()
            if set(state.glob(TMP_GLOB)) - killed_tmp:
                in_write += 1
            after = _on_disk(state)
            if after and "unreadable" not in after and after.get("last_time") is not None:
                lost.append(max(0.0, reached - after["last_time"]))
        except ScenarioError as err:
            failures.append(f"start {i}: {err}")
        finally:
            rt.close()
        text = rt.log_text()
        if "Traceback" in text:
            failures.append(f"start {i}: a traceback in the log")
            break
        if failures and len(failures) > 5:
            break
        if i % 10 == 0:
            log(f"powercut: {i}/{n} kills, {consistent}/{restores} consistent restores, {in_write} inside a write")
    return {"kills": n, "restores": restores, "consistent_restores": consistent, "kills_inside_snapshot_write": in_write,
            "stale_temp_files_max": tmp_left_max,
            "lost_stream_s": {"p50": round(percentile(lost, 50), 1), "max": round(max(lost, default=0.0), 1)},
            "failures": failures[:10]}


def _damage(src: Path, dest: Path, how: str) -> None:
    data = bytearray(src.read_bytes())
    if how == "truncated-half":
        data = data[: len(data) // 2]
    elif how == "truncated-tail":
        data = data[:-100]
    elif how == "zero-tail":
        data[-4096:] = bytes(4096)
    elif how == "empty":
        data = bytearray()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))


def damaged(workdir: Path, good: Path, log=print) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for how in ("truncated-half", "truncated-tail", "zero-tail", "empty"):
        state = workdir / f"damaged-{how}"
        shutil.rmtree(state, ignore_errors=True)
        _damage(good, state / SNAPSHOT_NAME, how)
        rt = RunProcess(["--source", SOURCE, "--duration", "32", "--keep-serving"], workdir, state_dir=state,
                        name=f"damaged-{how}")
        case = {"started": False}
        try:
            rt.start()
            rt.wait_ready()
            st = rt.wait_status(lambda s: s.get("state") == "ended", timeout=120)
            text = rt.log_text()
            warned = [ln for ln in text.splitlines() if "damaged snapshot" in ln or "starting fresh" in ln]
            case = {"started": True, "warning_lines": len(warned), "warning": warned[0][:200] if warned else None,
                    "set_aside": sorted(p.name for p in state.glob(f"{SNAPSHOT_NAME}.corrupt-*")),
                    "restored": st.get("restored_from") is not None, "traceback": "Traceback" in text,
                    "streamed_s": st.get("stream_time")}
        except ScenarioError as err:
            case["error"] = str(err)
        finally:
            rt.close()
        case["ok"] = bool(case.get("started") and case.get("warning_lines") == 1 and case.get("set_aside")
                          and not case.get("restored") and not case.get("traceback"))
        out[how] = case
        log(f"powercut: damaged snapshot ({how}): {'ok' if case['ok'] else 'FAILED'} — {case.get('warning')}")
    return out


def run(quick: bool, workdir: Path, log=print, n_kills: int | None = None) -> dict[str, Any]:
    workdir = Path(workdir)
    n = n_kills if n_kills is not None else (10 if quick else 100)
    t0 = time.monotonic()
    res = kills(n, workdir / "kills", log)
    good = workdir / "kills" / "state" / SNAPSHOT_NAME
    if good.exists():
        keep = workdir / "good-snapshot.npz"
        shutil.copyfile(good, keep)
        res["damaged"] = damaged(workdir, keep, log)
    else:
        res["damaged"] = {}
        res["failures"].append("no snapshot was ever written")
    res["passed"] = (not res["failures"] and res["restores"] == n and res["consistent_restores"] == n
                     and res["stale_temp_files_max"] == 0 and bool(res["damaged"])
                     and all(c["ok"] for c in res["damaged"].values()))
    res["wall_s"] = round(time.monotonic() - t0, 1)
    return res
