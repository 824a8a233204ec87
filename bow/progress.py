"""Progress bars that behave on a terminal and in logs.

``progress(...)`` is a tqdm bar on a terminal. When standard error is not a terminal (a log
file, CI), thousands of carriage-return updates would fill the log, so the bar instead writes
one plain line at most every ``LOG_SECONDS`` (and a last one when it closes). ``enabled=False``
(``--no-progress``) turns it off.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_SECONDS = 30.0


class _Lines:
    """A file for tqdm that turns each redraw into one line and drops the erasures."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs) on a terminal; sparse plain lines elsewhere; off if not enabled."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    kwargs.update(file=_Lines(sys.stderr), mininterval=LOG_SECONDS, maxinterval=LOG_SECONDS,
                  ascii=True, dynamic_ncols=False, leave=True)
    return tqdm(iterable, **kwargs)
