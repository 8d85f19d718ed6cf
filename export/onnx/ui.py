"""What lvm-export shows while it runs: progress per step, log lines, warnings, one-line errors."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from collections.abc import Callable, Iterator

PROG = "lvm-export"


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


class UI:
    """Progress for every step.

    On an interactive stderr: a tqdm bar per counted step, left on screen when done, and log lines on
    stderr. Otherwise plain lines on stdout, so logs stay readable and stderr carries only warnings
    and errors: a line when a step starts (a piped or logged export is never silent for minutes, as
    it would be during the accuracy gate) and one when it finishes. With --no-progress
    (``enabled=False``) only the finished lines."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars = enabled and sys.stderr.isatty()

    def log(self, msg: str) -> None:
        if self.bars:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)  # above any bar still drawn
        else:
            print(f"{PROG}: {msg}", flush=True)

    def progress(self, msg: str) -> None:
        """A line that only says how far the export is: dropped with --no-progress."""
        if self.enabled:
            self.log(msg)

    def warn(self, msg: str) -> None:
        print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, desc: str, total: int | None = None) -> Iterator[Callable[..., object]]:
        """``with ui.step(desc, total) as tick:`` ... ``tick()`` / ``tick(n)`` per unit of work done."""
        t0 = time.time()
        if self.bars and total is not None:
            from tqdm import tqdm

            with tqdm(total=total, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True) as bar:
                yield bar.update
                bar.update(total - bar.n)
            return
        # no count to draw (the accuracy gate: its evaluator draws its own bars), or no terminal
        self.progress(f"{desc} ...")
        yield lambda n=1: None
        self.log(f"{desc}: done ({time.time() - t0:.1f} s)")


@contextlib.contextmanager
def quiet():
    """The exporters and quantisers print chatter to stdout and the root logger; keep it out."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        root.setLevel(level)
