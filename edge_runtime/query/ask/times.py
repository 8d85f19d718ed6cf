"""Time phrases in a question -> a window [start, end] in stream seconds.

A ``StreamClock`` knows what "now" is and how wall-clock times map to stream time: a live source's
stream time 0 is a known unix time (``wall_origin``), so "since 14:05" is that local time; a file or
the demo has no wall clock, so clock-like times are offsets into the stream ("between 2:05 and
2:20" = minutes 2:05 to 2:20 of the video) and times of day (am/pm, "today's morning") are refused.
No time phrase means the whole memory.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "couple": 2, "couple of": 2, "few": 3,
}
UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "mins": 60,
         "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600}


class TimeError(ValueError):
    """A time phrase that cannot be placed on this stream's clock (one line)."""


EMPTY_MEMORY = "the memory holds nothing yet (no frames streamed)"


def stream_time_now(memory_end: float, wall_origin: float | None) -> float:
    """The stream time of now: for a live source the wall clock's (a camera out for a minute leaves
    that minute uncovered, not the minute before it), for a file or the demo the memory's end."""
    return max(memory_end, time.time() - wall_origin) if wall_origin is not None else memory_end


@dataclass(frozen=True)
class StreamClock:
    """What "now" is, in stream seconds, and how local wall time maps to stream time.

    stream_now: the latest stream time to ask about; memory_start: the earliest (the whole memory is
    [memory_start, stream_now]); wall_origin: unix time of stream time 0 for live sources, None for
    files (then clock times are offsets into the stream); tz: the local zone (None = this host's)."""
    stream_now: float
    memory_start: float = 0.0
    wall_origin: float | None = None
    tz: tzinfo | None = field(default=None, compare=False)

    @property
    def live(self) -> bool:
        return self.wall_origin is not None

    def wall(self, stream_t: float) -> datetime:
        return datetime.fromtimestamp(self.wall_origin + stream_t, self.tz).astimezone(self.tz)

    def stream(self, wall: datetime) -> float:
        return wall.timestamp() - self.wall_origin


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    said: str        # the words read as the window ("" = none: the whole memory)
    meaning: str     # how they were read, for the answer


_NUM = r"(?:\d+(?:\.\d+)?|" + "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True)) + r")"
_UNIT = r"(?:" + "|".join(sorted(UNITS, key=len, reverse=True)) + r")"
_CLOCK = r"(?:\d{1,2}(?::\d{2}){1,2}|\d{1,2}\s*(?:am|pm|a\.m\.|p\.m\.)|noon|midnight)(?:\s*(?:am|pm|a\.m\.|p\.m\.))?"
_LAST = r"(?:in\s+|over\s+|during\s+|within\s+|for\s+)?(?:the\s+)?(?:last|past|previous)"

# Order matters: longer, more specific phrases first; each regex is tried on the whole question.
_PATTERNS: list[tuple[str, re.Pattern]] = [(name, re.compile(rx, re.I)) for name, rx in [
    ("half_hour", rf"\b{_LAST}\s+half\s+(?:an\s+)?hour\b"),
    ("hour_and_half", rf"\b{_LAST}\s+(?:(?:an?|one)\s+)?hour\s+and\s+a\s+half\b"),
    ("last_n", rf"\b{_LAST}\s+(?P<n>{_NUM})?\s*(?P<unit>{_UNIT})\b"),
    ("ago", rf"\b(?:since\s+|in\s+the\s+)?(?P<n>{_NUM})\s*(?P<unit>{_UNIT})\s+ago\b"),
    ("half_hour_ago", r"\b(?:since\s+)?half\s+an\s+hour\s+ago\b"),
    ("first_n", rf"\b(?:in\s+|during\s+|within\s+)?the\s+first\s+(?P<n>{_NUM})?\s*(?P<unit>{_UNIT})\b"),
    ("between", rf"\b(?:between|from)\s+(?P<a>{_CLOCK}|\d{{1,2}})\s+(?:and|to|till|until|-)\s+(?P<b>{_CLOCK})"),
    ("since", rf"\b(?:since|after|from)\s+(?P<a>{_CLOCK})"),
    ("before", rf"\b(?:before|until|till|up\s+to)\s+(?P<a>{_CLOCK})"),
    ("around", rf"\b(?:around|about|at)\s+(?P<a>{_CLOCK})"),
    ("yesterday", r"\byesterday\b"),
    ("part_of_day", r"\bthis\s+(?P<part>morning|afternoon|evening)\b"),
    ("today", r"\b(?:today|so\s+far|all\s+day|ever|at\s+any\s+time|anytime)\b"),
]]

AROUND_S = 60.0   # "at 14:05": a minute either side (an event is seconds long; the clock is read to the minute)
PARTS_OF_DAY = {"morning": (0, 12), "afternoon": (12, 18), "evening": (18, 24)}


def number(word: str | None) -> float:
    if word is None:
        return 1.0
    w = word.lower().strip()
    return float(w) if w[0].isdigit() else float(NUMBER_WORDS[w])


def find_window(text: str, clock: StreamClock) -> Window:
    """The first time phrase in ``text`` as a stream window (TimeError when it cannot be placed)."""
    if not clock.stream_now > clock.memory_start:
        raise TimeError(EMPTY_MEMORY)
    for name, rx in _PATTERNS:
        m = rx.search(text)
        if m:
            start, end, meaning = _window(name, m, clock)
            start, end = max(start, clock.memory_start), min(end, clock.stream_now)
            if not end > start:
                raise TimeError(f"'{m.group(0)}' ({meaning}) is outside what the memory holds "
                                f"({_span(clock.memory_start, clock)} to {_span(clock.stream_now, clock)})")
            return Window(start, end, m.group(0), meaning)
    return Window(clock.memory_start, clock.stream_now, "", "the whole memory")


def _window(name: str, m: re.Match, clock: StreamClock) -> tuple[float, float, str]:
    now = clock.stream_now
    if name in ("last_n", "ago", "first_n"):
        secs = number(m.group("n")) * UNITS[m.group("unit").lower()]
        if not secs > 0:
            raise TimeError(f"'{m.group(0).strip()}' is no time at all: give a duration above 0")
        if name == "first_n":
            return clock.memory_start, clock.memory_start + secs, f"the first {_dur(secs)} of the memory"
        return now - secs, now, f"the last {_dur(secs)}"
    if name in ("half_hour", "half_hour_ago"):
        return now - 1800, now, "the last 30 min"
    if name == "hour_and_half":
        return now - 5400, now, "the last 90 min"
    if name == "between":
        a, b = _clock_pair(m.group("a"), m.group("b"), clock)
        return a, b, f"{_span(a, clock)} to {_span(b, clock)}"
    if name in ("since", "before", "around"):
        t = _clock_time(m.group("a"), clock)
        if name == "since":
            return t, now, f"since {_span(t, clock)}"
        if name == "before":
            return clock.memory_start, t, f"before {_span(t, clock)}"
        return t - AROUND_S, t + AROUND_S, f"{_span(t, clock)} ± {AROUND_S:g} s"
    if name == "today":
        if not clock.live:
            return clock.memory_start, now, "the whole memory (a file has no days)"
        midnight = clock.wall(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return clock.stream(midnight), now, "today (since local midnight)"
    if not clock.live:
        raise TimeError(f"'{m.group(0)}' is a time of day, but this stream is a file: times are offsets into it "
                        f"(e.g. 'between 2:05 and 2:20', 'in the first 10 minutes')")
    today = clock.wall(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "yesterday":
        return clock.stream(today - timedelta(days=1)), clock.stream(today), "yesterday (local time)"
    lo, hi = PARTS_OF_DAY[m.group("part").lower()]
    return (clock.stream(today + timedelta(hours=lo)), clock.stream(today + timedelta(hours=hi)),
            f"this {m.group('part').lower()} ({lo:02d}:00 to {hi:02d}:00 local)")


# -- clock times -------------------------------------------------------------------------------
_CLOCK_RX = re.compile(r"^(?:(?P<h>\d{1,2})(?::(?P<m>\d{2}))?(?::(?P<s>\d{2}))?|(?P<word>noon|midnight))"
                       r"\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?$", re.I)


def _parts(text: str) -> tuple[int, int, int, str | None]:
    m = _CLOCK_RX.match(text.strip())
    if not m:
        raise TimeError(f"cannot read '{text}' as a time")
    if m.group("word"):
        return (12 if m.group("word").lower() == "noon" else 0), 0, 0, "clock"
    ampm = (m.group("ampm") or "").replace(".", "").lower() or None
    return int(m.group("h")), int(m.group("m") or 0), int(m.group("s") or 0), ampm


def _candidates(text: str, clock: StreamClock, ampm: str | None = None) -> list[float]:
    """Every stream time ``text`` can mean: one for a file; for a live source each 12-hour reading
    of a bare "2:05" (2:05 and 14:05), today's and yesterday's."""
    h, mi, s, own = _parts(text)
    ampm = own or ampm
    if not clock.live:
        if ampm:
            raise TimeError(f"'{text}' is a time of day, but this stream is a file: times are offsets into it "
                            f"(e.g. 'since 12:30' = 12 min 30 s in)")
        # a file's "M:SS" is minutes and seconds, "H:MM:SS" hours too (how players show positions)
        if mi > 59 or s > 59:
            raise TimeError(f"'{text}' is not a position in the file (M:SS or H:MM:SS, seconds and minutes 0-59)")
        return [float(h * 3600 + mi * 60 + s) if text.count(":") == 2 else float(h * 60 + mi)]
    if mi > 59 or s > 59 or h > 23 or (ampm in ("am", "pm") and not 1 <= h <= 12):
        raise TimeError(f"'{text}' is not a time of day")
    if ampm in ("am", "pm"):
        hours = [h % 12 + (12 if ampm == "pm" else 0)]
    elif ampm == "clock" or h > 12 or h == 0:
        hours = [h]
    else:
        hours = [h % 12, h % 12 + 12]
    today = clock.wall(clock.stream_now).replace(hour=0, minute=0, second=0, microsecond=0)
    return sorted(clock.stream(today + timedelta(days=d, hours=hh, minutes=mi, seconds=s))
                  for d in (-1, 0) for hh in hours)


def _clock_time(text: str, clock: StreamClock) -> float:
    """The latest reading of ``text`` that is not after now (a file: the offset itself)."""
    cands = _candidates(text, clock)
    past = [c for c in cands if c <= clock.stream_now]
    return max(past) if past else cands[0]


def _clock_pair(a: str, b: str, clock: StreamClock) -> tuple[float, float]:
    """'between 2:05 and 2:20 pm': an am/pm on the second time applies to the first too; the end is
    the first reading of the second time after the start."""
    ampm_b = _parts(b)[3]
    inherit = ampm_b if ampm_b in ("am", "pm") and _parts(a)[3] is None else None
    cands_a = _candidates(a, clock, inherit)
    past = [c for c in cands_a if c <= clock.stream_now]
    ta = max(past) if past else cands_a[0]
    later = [c for c in _candidates(b, clock) if c > ta]
    if not later:
        raise TimeError(f"'{a}' to '{b}': the end is not after the start")
    return ta, min(later)


def _dur(secs: float) -> str:
    if secs >= 3600 and secs % 3600 == 0:
        return f"{secs / 3600:g} h"
    if secs >= 60 and secs % 60 == 0:
        return f"{secs / 60:g} min"
    return f"{secs:g} s"


def _span(t: float, clock: StreamClock) -> str:
    """A stream time as the user would say it: local time for live sources, an offset for files."""
    if clock.live:  # another day is named: "since 23:46" asked at 23:41 reads yesterday's 23:46
        wall, today = clock.wall(t), clock.wall(clock.stream_now).date()
        days = (today - wall.date()).days
        day = "" if days == 0 else "yesterday " if days == 1 else wall.strftime("%Y-%m-%d ")
        return day + wall.strftime("%H:%M:%S")
    t = max(0.0, t)
    h, rem = divmod(int(round(t)), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"
