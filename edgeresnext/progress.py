"""Progress of long loops: a live tqdm bar on a terminal, a few plain lines in a log.

tqdm redraws its bar with carriage returns; written into a file (``edgeresnext build ... > log 2>&1``, CI) every
refresh stays as its own line, thousands per build. :func:`progress_bar` gives a terminal (stderr a TTY) the tqdm
bar unchanged, and anything else a start line, a line per quarter done or per half minute (at most one per
``MIN_GAP_S``), and an end line with the rate. tqdm is imported only for a terminal: device apps
(``edgeresnext.runtime``) run without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TextIO

EVERY_S = 30.0  # a log line at least this often while a loop runs
MIN_GAP_S = 5.0  # quarter lines closer than this to the previous line are left out (short loops: start and end)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str = "",
    total: float | None = None,
    unit: str = "it",
    unit_scale: bool = False,
    disable: bool = False,
    leave: bool = True,
    file: TextIO | None = None,
) -> Any:
    """A progress bar over ``iterable`` (or updated by hand with ``update(n)``), with tqdm's keywords.

    ``file`` (default stderr) a TTY: a tqdm bar (``leave=False``: cleared when done). Otherwise a
    :class:`LogProgress`, whose end line always stays. ``disable``: neither (the loop runs silently)."""
    stream = file if file is not None else sys.stderr
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    if not disable and _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, leave=leave, file=stream)
    return LogProgress(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, file=stream, quiet=disable)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LogProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``, ``with``) writing whole lines: start,
    quarters or every ``EVERY_S`` seconds, end with the rate. ``quiet``: writes nothing."""

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        *,
        desc: str,
        total: float | None,
        unit: str,
        unit_scale: bool,
        file: TextIO,
        quiet: bool = False,
        clock=time.monotonic,
    ) -> None:
        self.iterable, self.desc, self.total, self.unit = iterable, desc or "progress", total, unit
        self.unit_scale, self.file, self.quiet, self.clock = unit_scale, file, quiet, clock
        self.n: float = 0
        self.postfix = ""
        self.started = self.last_line = clock()
        self.quarters_written = 0
        self.closed = False
        self._write(f"{self.desc}: {self._count()}")

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError(f"{self.desc}: progress bar has no iterable to iterate")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total and self.n >= self.total:
            return  # done: the end line says it, with the rate
        now = self.clock()
        quarter = int(4 * self.n / self.total) if self.total else 0
        new_quarter = 0 < quarter < 4 and quarter > self.quarters_written and now - self.last_line >= MIN_GAP_S
        if new_quarter or now - self.last_line >= EVERY_S:
            self.quarters_written = max(self.quarters_written, quarter)
            percent = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
            self._write(f"{self.desc}: {self._count()}{percent}, {now - self.started:.0f} s{self.postfix}")

    def set_postfix(self, **values: Any) -> None:
        self.postfix = "".join(f", {key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = self.clock() - self.started
        rate = f", {self._amount(self.n / elapsed)}/s" if elapsed > 0 and self.n else ""
        self._write(f"{self.desc}: {self._count()} in {elapsed:.1f} s{rate}{self.postfix}")

    def _count(self) -> str:
        """``40/157 batch``, or with ``unit_scale`` ``41.2MB/170.5MB``."""
        if self.unit_scale:
            done = self._amount(self.n)
            return f"{done}/{self._amount(self.total)}" if self.total else done
        done = _scaled(self.n, False)
        return f"{done}/{_scaled(self.total, False)} {self.unit}" if self.total else f"{done} {self.unit}"

    def _amount(self, value: float) -> str:
        """One amount with its unit: ``6.71 batch`` or, with ``unit_scale``, ``41.2MB``."""
        return f"{_scaled(value, True)}{self.unit}" if self.unit_scale else f"{_scaled(value, False)} {self.unit}"

    def _write(self, line: str) -> None:
        if not self.quiet:
            self.file.write(line + "\n")
            self.file.flush()
        self.last_line = self.clock()


def _scaled(value: float, unit_scale: bool) -> str:
    """``value`` as a count (``157``), a rate (``6.71``), or with ``unit_scale`` in SI steps (``41.2M``)."""
    if unit_scale:
        for prefix in ("", "k", "M", "G"):
            if abs(value) < 1000 or prefix == "G":
                return f"{value:.1f}{prefix}" if prefix else f"{value:.0f}"
            value /= 1000
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"
