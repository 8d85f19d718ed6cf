"""The one-line progress report ``run`` and ``demo`` keep on stderr while the stream goes in."""
from __future__ import annotations

import sys
import time


# States in which nothing moves: a log gets one line for each, not one every tick.
SETTLED = ("ended", "stopped", "failed")


class StatusLine:
    """One status line, rewritten in place on a terminal; plain lines otherwise. Errors are not in
    it: the command says them once, in its own line."""

    def __init__(self, target, every_s: float, stream=None) -> None:
        """``target``: one Runtime, or a Streams hub (one stream: its line; several: a summary).
        ``stream``: where lines go (default: sys.stderr as it is now, not as it was at import)."""
        self.target, self.every_s = target, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        # A log file or journal keeps every line, for weeks: a line a minute there (1,440 a day), and
        # none that repeats the one before (a source out for hours moves nothing)
        self._plain_every = max(every_s, 60.0)
        self._settled: str | None = None  # the settled state a plain line was written for
        self._written: str | None = None  # the last plain line

    def status(self) -> dict:
        t = self.target
        if hasattr(t, "summary"):
            if len(t) != 1:
                rows = t.summary()
                states = sorted({r["state"] for r in rows})
                # the summary's state is settled only when every stream is
                settled = states[0] if len(states) == 1 else "mixed" if states else "no streams"
                return {"state": settled, "streams": rows}
            t = next(iter(t))  # the one stream left: the default one, or another once it was removed
        return t.status()

    def text(self, s: dict | None = None) -> str:
        s = s if s is not None else self.status()
        if "streams" in s:
            rows = s["streams"]
            counts = {}
            for r in rows:
                counts[r["state"]] = counts.get(r["state"], 0) + 1
            states = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            frames = sum(r["frames_processed"] for r in rows)
            mem = sum(r["memory_bytes"] for r in rows) / 1e6
            return (f"[{len(rows)} streams: {states}]  {sum(r['fps'] for r in rows):.1f} fps  frames {frames}  "
                    f"mem {mem:.1f} MB")
        cov = s["coverage"]
        cov_txt = f"{cov['start']:.0f}-{cov['end']:.0f}s" if cov["start"] is not None else "empty"
        mem = s["memory_bytes"] / 1e6
        out = f" (since t={s['outage_since']:.0f}s)" if s.get("outage_since") is not None else ""
        return (f"[{s['state']}]{out} t={s['stream_time'] or 0:.0f}s  {s['fps']:.1f} fps ({s['stream_rate']:.1f}x)  "
                f"drops {s['dropped']}  coverage {cov_txt}  gaps {len(s['gaps'])}  mem {mem:.1f} MB  "
                f"clips {s['clips']}")

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (self.every_s if self.tty else self._plain_every):
            return
        self._last = now
        status = self.status()
        line = self.text(status)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            if status["state"] == self._settled or line == self._written:
                return  # an idle server: its [ended] line was written once
            self._settled = status["state"] if status["state"] in SETTLED else None
            self._written = line
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
