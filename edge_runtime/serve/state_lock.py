"""One runtime per state directory: an advisory lock held for the run's life.

Two runtimes on one state dir each keep their own catalog and write it over the other's, and write
the same snapshot files: a second ``lvm-edge run`` there is refused. The lock is the kernel's
(``flock``), so a SIGKILLed or power-cut runtime holds nothing after it is gone.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = "lvm-edge.lock"


class StateDirBusy(Exception):
    """Another process holds the state directory (one line naming it)."""


def lock_state_dir(state_dir: str | Path, holder: str = "lvm-edge run") -> IO[str]:
    """Take ``<state_dir>/lvm-edge.lock`` for this process (``holder``: the command, named to whoever
    finds it taken); keep the returned file open for as long as the lock must hold (closing it, or
    exiting, releases it). StateDirBusy when another process has it."""
    path = Path(state_dir) / LOCK_NAME
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 — held open for the run's life
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise StateDirBusy(f"state dir {state_dir} is in use by {holder}: one runtime per state dir "
                           f"(stop it, or give this run its own --state-dir)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{holder} (pid {os.getpid()})\n")
    f.flush()
    return f
