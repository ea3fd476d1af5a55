"""Progress that knows where it writes, and durations as a person says them.

    on a terminal (the stream is a TTY)   a live tqdm bar; the run's log lines are written above it (the
                                          bar is cleared first), never glued to it
    elsewhere (a file, a pipe, a job log) no bar at all: with `line_every`, a log line each time another
                                          fraction of the total is done (`eval_tones: 120/1200 examples
                                          (10%), 14 s elapsed, about 2 min 6 s left`); the caller's own
                                          log lines can carry `status()`, as training's step lines do

A bar redrawn into a file writes every update (a 642 KB log for the demo's 5,000 steps); a line every N
steps says the same in a few kilobytes. The time left is the pace of this session so far (units since
the progress began) applied to the units left.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator

log = logging.getLogger("lalmbench")


def format_duration(seconds: float) -> str:
    """`53 s`, `4 min 5 s`, `2 h 05 min`: seconds are said below an hour, minutes above."""
    whole = max(0, int(round(seconds)))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60:02d} min"


def is_terminal(stream: IO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def _log_lines_above(bar, stream: IO) -> Iterator[None]:
    """While `bar` is live, the lalmbench console handlers that write to `stream` write through tqdm, which
    clears the bar, writes the line and draws the bar again below it."""
    # hand-written: tqdm's logging_redirect_tqdm matches only stdout/stderr, drops the level, adds a console handler
    from tqdm import tqdm

    logger = logging.getLogger("lalmbench")
    swapped = []
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler and handler.stream is stream:
            handler.flush()
            original_emit = handler.emit

            def emit(record, handler=handler):
                try:
                    tqdm.write(handler.format(record), file=stream)
                except Exception:
                    handler.handleError(record)

            handler.emit = emit
            swapped.append((handler, original_emit))
    try:
        yield
    finally:
        for handler, original_emit in swapped:
            handler.emit = original_emit


class Progress:
    """Progress over `total` units (None: unknown) of `unit`, starting at `initial`; see the module docstring.
    `enabled` False: nothing is shown, `status()` still works."""

    def __init__(self, desc: str, total: int | None, unit: str, *, initial: int = 0, enabled: bool = True,
                 stream: IO | None = None, line_every: float | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = self.first = initial
        self.started = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and is_terminal(self.stream)
        self.lines = enabled and not self.live and line_every is not None and bool(total)
        self._line_every = line_every
        self._next_line = self._line_after(initial)
        self._bar = self._redirect = None
        if self.live:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=self.stream)
            self._redirect = _log_lines_above(self._bar, self.stream)
            self._redirect.__enter__()

    def _line_after(self, done: int) -> int | None:
        """The count at which the next plain line is due (the next multiple of the fraction past `done`)."""
        if not self.lines:
            return None
        step = max(1, round(self.total * self._line_every))
        return min(self.total, (done // step + 1) * step)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(**postfix)
        elif self._next_line is not None and self.done >= self._next_line:
            log.info("%s: %s", self.desc, self.status())
            self._next_line = self._line_after(self.done) if self.done < self.total else None

    def seconds_left(self) -> float | None:
        """The time the units left take at this session's pace; None before the first unit or without a total."""
        elapsed, done = time.perf_counter() - self.started, self.done - self.first
        if self.total is None or done <= 0:
            return None
        return max(0, self.total - self.done) * elapsed / done

    def timing(self) -> str:
        """`14 s elapsed, about 2 min 6 s left` (the time left once it is known)."""
        left = self.seconds_left()
        text = f"{format_duration(time.perf_counter() - self.started)} elapsed"
        return text + (f", about {format_duration(left)} left" if left is not None else "")

    def status(self) -> str:
        """`120/1200 examples (10%), 14 s elapsed, about 2 min 6 s left` (what is known of it)."""
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        done = f"{self.done}/{self.total} {units} ({100 * self.done / self.total:.0f}%)" if self.total else \
            f"{self.done} {units}"
        return f"{done}, {self.timing()}"

    def close(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
