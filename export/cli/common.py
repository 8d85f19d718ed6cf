"""What every lvm-* command shares: one-line errors, never a traceback for bad input."""
from __future__ import annotations

import sys
from collections.abc import Callable

from edge_runtime.config import ConfigError


class UsageError(ValueError):
    """Bad input the user can fix; printed as one line."""


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    from export.model.checkpoint import CheckpointError
    from export.dataset import DatasetError

    try:
        return int(body() or 0)
    except (UsageError, ConfigError, CheckpointError, DatasetError, FileNotFoundError, PermissionError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)  # on a line of its own, after a progress bar
        return 130
