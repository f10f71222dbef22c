"""Progress bars that suit terminals, notebooks and log files alike.

On a terminal (or in a Jupyter/Colab kernel) this is tqdm. When the stream is not a terminal
(output redirected to a file: CI, a cluster job), tqdm's carriage-return redraws would pile a
hundred updates onto one line of the log; there a :class:`LogProgress` prints one plain line
at the start, at most one every ``ILIJAX_PROGRESS_SECONDS`` seconds (default 10) while running,
and one at the end, each a complete line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["LogProgress", "progress_bar"]

#: Seconds between lines of a :class:`LogProgress` (``ILIJAX_PROGRESS_SECONDS`` overrides).
DEFAULT_SECONDS = 10.0


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # noqa: BLE001 - any failure means "no kernel"
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _interval() -> float:
    value = os.environ.get("ILIJAX_PROGRESS_SECONDS")
    try:
        return max(0.0, float(value)) if value else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS


class LogProgress:
    """A tqdm-like bar (``update``, ``set_postfix``, ``set_postfix_str``, ``close``, iteration)
    that writes whole lines, for streams that are not terminals."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", initial: int = 0, leave: bool = True,
                 file: TextIO | None = None, seconds: float | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.leave = int(initial), leave
        self.file = file if file is not None else sys.stderr
        self.seconds = _interval() if seconds is None else float(seconds)
        self.postfix = ""
        self.start = time.perf_counter()
        self.last = self.start
        self.closed = False
        self._write("started")

    def _line(self, state: str) -> str:
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        extra = f", {self.postfix}" if self.postfix else ""
        elapsed = time.perf_counter() - self.start
        return f"{self.desc}: {count} {self.unit}{extra} [{elapsed:.1f} s, {state}]"

    def _write(self, state: str) -> None:
        self.file.write(self._line(state) + "\n")
        self.file.flush()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.perf_counter()
        if now - self.last >= self.seconds:
            self.last = now
            self._write("running")

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        del refresh
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        del refresh
        self.postfix = str(s)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write("done")

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, leave: bool = True,
                 file: TextIO | None = None):
    """tqdm on a terminal or in a notebook, else a :class:`LogProgress` writing whole lines.

    Args:
        iterable: Optional iterable to wrap.
        total: Expected number of updates.
        desc: Label of the bar.
        unit: Unit of one update.
        initial: Starting count (a resumed run).
        leave: Keep tqdm's bar after it closes.
        file: Stream (default ``sys.stderr``).
    """
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if _in_notebook() and file is None:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    if callable(isatty) and isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                    file=stream)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                       leave=leave, file=stream)
