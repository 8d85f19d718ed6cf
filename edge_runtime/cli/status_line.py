"""The one-line progress report ``run`` and ``demo`` keep on stderr while the stream goes in."""
from __future__ import annotations

import sys
import time


class StatusLine:
    """One status line, rewritten in place on a terminal; plain lines otherwise."""

    def __init__(self, runtime, every_s: float, stream=sys.stderr) -> None:
        self.runtime, self.every_s, self.stream = runtime, every_s, stream
        self.tty = stream.isatty()
        self._last = 0.0
        # A log file or journal gets a line per tick: tick less often there than on a terminal.
        self._plain_every = max(every_s, 10.0)

    def text(self) -> str:
        s = self.runtime.status()
        cov = s["coverage"]
        cov_txt = f"{cov['start']:.0f}-{cov['end']:.0f}s" if cov["start"] is not None else "empty"
        mem = s["memory_bytes"] / 1e6
        err = f"  error: {s['error']}" if s["error"] else ""
        return (f"[{s['state']}] t={s['stream_time'] or 0:.0f}s  {s['fps']:.1f} fps ({s['stream_rate']:.1f}x)  "
                f"drops {s['dropped']}  coverage {cov_txt}  gaps {len(s['gaps'])}  mem {mem:.1f} MB  "
                f"clips {s['clips']}{err}")

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (self.every_s if self.tty else self._plain_every):
            return
        self._last = now
        line = self.text()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
