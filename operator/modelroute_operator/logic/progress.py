"""Progress reporting for `modelroute` commands that take time, kept out of the output machines read.

The result of a command (a table, JSON, YAML) goes to stdout and stays byte-for-byte the same whether
progress is shown or not. Progress goes to stderr:

- on a terminal, one line rewritten in place (`\\r`, erase to end of line) and erased when the work is
  done, so the screen ends with the result only;
- in a log (CI, a pipe), nothing for short steps (offline compiles take well under a second), but a
  line for every change while *waiting* on the cluster, stamped with the time waited, so a minute of
  `status --wait` never looks like a hang and the log tells what it was waiting for.

`--quiet` turns both off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TextIO

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """Seconds in a kubectl-style duration: `90`, `90s`, `2m`, `1m30s`, `1h`; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 2m or 1m30s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class Progress:
    """Writes progress to `stream` (stderr): transient steps, and waits that a log should record."""

    def __init__(
        self, stream: TextIO, *, enabled: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._enabled = enabled
        self._terminal = enabled and stream.isatty()
        self._clock = clock
        self._started = clock()
        self._shown = ""
        """What the terminal line shows now ("" when nothing)."""
        self._last_logged = ""

    def step(self, message: str) -> None:
        """A step of short work: shown on a terminal only, replaced by the next step."""
        if self._terminal:
            self._show(message)

    def waiting(self, message: str) -> None:
        """A state of a wait: on a terminal, shown in place; in a log, one line each time it changes."""
        if not self._enabled:
            return
        stamped = f"[{self._clock() - self._started:5.1f}s] {message}"
        if self._terminal:
            self._show(stamped)
        elif message != self._last_logged:
            self._last_logged = message
            print(stamped, file=self._stream, flush=True)

    def done(self) -> None:
        """Erase the terminal line, so the result that follows stands alone."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = ""

    def _show(self, message: str) -> None:
        self._stream.write("\r\x1b[K" + message)
        self._stream.flush()
        self._shown = message
