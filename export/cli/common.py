"""What every lvm-* command shares: one-line errors, never a traceback for bad input."""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

from edge_runtime.config import ConfigError


class UsageError(ValueError):
    """Bad input the user can fix; printed as one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, timeout, kill), raised in the command's main thread as Ctrl-C is, so that what
    cleans up after an interruption (an export's temp folder) runs for it too."""


def _on_sigterm(main_pid: int):
    def handler(signum, frame):
        if os.getpid() != main_pid:  # a forked worker: die as SIGTERM would have it, its parent says why
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()
    return handler


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    from export.model.checkpoint import CheckpointError
    from export.dataset import DatasetError

    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _on_sigterm(os.getpid())) if main else None
    try:
        return int(body() or 0)
    except (UsageError, ConfigError, CheckpointError, DatasetError, FileNotFoundError, PermissionError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"\n{prog}: stopped (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)  # on a line of its own, after a progress bar
        return 130
    finally:
        if main:
            signal.signal(signal.SIGTERM, before)
