"""Progress for every long loop: a live line on a terminal, one line per long stage elsewhere.

Two outputs, chosen by where stderr goes:

- **a terminal (TTY)**: one transient status line (count/total, rate, ETA), redrawn four times a
  second so a slow step still shows a ticking clock (progress vs a hang); it is wiped when the loop
  ends, so the lines printed after it stay clean;
- **anything else** (a log file, CI, ``2>&1 | tee``): nothing while the loop runs, then one line
  with the stage's count and duration, for stages that took ``min_seconds`` or more (all of them
  with ``verbose``).

``quiet`` silences both. Everything goes to **stderr**, so ``skinzoo predict ... --format csv >
out.csv`` writes a clean file. The CLI sets the level once from ``-q``/``-v`` (:func:`configure`).

Why rich: it is already a dependency of Keras 3 (``model.summary`` uses it), so the live line
costs no new package; its ``Live`` display writes to any stream (stderr here), knows whether that
stream is a terminal, and renders from a callback on its own timer, which fits Keras callbacks
(``on_train_batch_end`` only updates counters) and tf.data loops alike. Keras' own ``Progbar``
writes to stdout (it would end up inside ``> predictions.csv``) and redraws only when a step
ends; tqdm is not a Keras dependency and, outside a terminal, prints carriage-return updates into
logs unless switched off.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import time
from collections.abc import Callable, Iterable

LEVELS = ("quiet", "normal", "verbose")

_settings = {"level": "normal", "stream": None, "live": None, "min_seconds": 2.0, "terminal": None}
_active_live: list = []  # at most one live line at a time (rich allows one Live per console)


def configure(level: str = "normal", stream=None, live: bool | None = None,
              min_seconds: float | None = None) -> None:
    """Set the progress level (``quiet``/``normal``/``verbose``), the stream (default: the
    current ``sys.stderr``), whether to draw a live line (default: when the stream is a
    terminal) and the shortest stage that gets a line of its own outside a terminal."""
    if level not in LEVELS:
        raise ValueError(f"progress level must be one of {LEVELS}, not {level!r}")
    _settings.update(level=level, stream=stream, live=live)
    if min_seconds is not None:
        _settings["min_seconds"] = float(min_seconds)


def attach_terminal() -> None:
    """For the CLI, called before ``runtime.filter_native_stderr`` turns file descriptor 2 into a
    pipe that passes whole lines only (a live line ends in ``\r``, never ``\n``, so it would
    show only at the end): progress writes to a duplicate of the real stderr instead."""
    try:
        _settings["terminal"] = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8",
                                          errors="replace")
    except (OSError, ValueError):
        _settings["terminal"] = None


def level() -> str:
    return _settings["level"]


def stream():
    return _settings["stream"] or _settings["terminal"] or sys.stderr


def is_live() -> bool:
    """A live line is drawn: not quiet, and stderr is a terminal (or ``live=True`` was set)."""
    if _settings["level"] == "quiet":
        return False
    if _settings["live"] is not None:
        return bool(_settings["live"])
    out = stream()
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def note(message: str, detail: bool = False) -> None:
    """One line of progress information to stderr (``detail``: only with ``-v``)."""
    if _settings["level"] == "quiet" or (detail and _settings["level"] != "verbose"):
        return
    out = stream()
    try:
        out.write(message + "\n")
        out.flush()
    except (OSError, ValueError):  # a closed or broken stream must never stop the work
        pass


# --- formatting (pure) ------------------------------------------------------------------------

def format_duration(seconds: float) -> str:
    """``0.4 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_clock(seconds: float | None) -> str:
    """An ETA as ``m:ss`` or ``h:mm:ss`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(count: float, seconds: float, unit: str) -> str:
    if seconds <= 0 or count <= 0:
        return f"? {unit}/s"
    rate = count / seconds
    return f"{rate:,.0f} {unit}/s" if rate >= 100 else f"{rate:.1f} {unit}/s"


def format_count(n: float, unit: str) -> str:
    if unit == "B":
        return format_bytes(n)
    return f"{int(n):,}"


def format_bytes(n: float) -> str:
    for size, name in ((1024**3, "GB"), (1024**2, "MB"), (1024, "kB")):
        if n >= size:
            return f"{n / size:.1f} {name}"
    return f"{int(n)} B"


def progress_line(label: str, done: float, total: float | None, elapsed: float, unit: str,
                  extra: str = "", initial: float = 0) -> str:
    """The live line: ``label  120/1,512 (8%)  45.2 img/s  ETA 0:31  extra``. ``initial`` is what
    was already done before this session (a resumed download): it counts toward ``done`` but
    not toward the rate."""
    parts = [label]
    if total:
        parts.append(f"{format_count(done, unit)}/{format_count(total, unit)} ({100 * done / total:.0f}%)")
    else:
        parts.append(format_count(done, unit) + ("" if unit == "B" else f" {unit}"))
    session = done - initial
    rate = session / elapsed if elapsed > 0 and session > 0 else 0.0
    if unit == "B":
        parts.append(f"{format_bytes(rate)}/s" if rate else "? B/s")
    else:
        parts.append(format_rate(session, elapsed, unit))
    if total and rate:
        parts.append(f"ETA {format_clock((total - done) / rate)}")
    else:
        parts.append(f"{format_clock(elapsed)} elapsed")
    if extra:
        parts.append(extra)
    return "  ".join(parts)


def summary_line(label: str, done: float, elapsed: float, unit: str) -> str:
    """The line a finished stage leaves: ``label: 1,512 img in 33.4 s (45.3 img/s)``."""
    if unit == "B":
        rate = f"{format_bytes(done / elapsed)}/s" if elapsed > 0 and done else "?"
        return f"{label}: {format_bytes(done)} in {format_duration(elapsed)} ({rate})"
    if not done:
        return f"{label}: {format_duration(elapsed)}"
    return f"{label}: {int(done):,} {unit} in {format_duration(elapsed)} ({format_rate(done, elapsed, unit)})"


# --- the live line --------------------------------------------------------------------------

class LiveLine:
    """One transient status line on the terminal, redrawn from ``render()`` four times a second.

    Only one can show at a time: a loop inside another loop's stage (predict inside evaluate)
    counts silently while the outer line keeps showing.
    """

    def __init__(self, render: Callable[[], str]):
        self.render = render
        self._live = None

    def __rich__(self):
        from rich.text import Text

        try:
            text = self.render()
        except Exception:  # noqa: BLE001 - a formatting slip must never stop the work
            text = "..."
        return Text(text, no_wrap=True, overflow="ellipsis")

    @property
    def showing(self) -> bool:
        return self._live is not None

    def start(self) -> LiveLine:
        if self._live is not None or _active_live or not is_live():
            return self
        from rich.console import Console
        from rich.live import Live

        console = Console(file=stream(), force_terminal=True if _settings["live"] else None,
                          highlight=False)
        self._live = Live(self, console=console, transient=True, auto_refresh=True,
                          refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
        try:
            self._live.start()
        except Exception:  # noqa: BLE001 - e.g. another Live of the user's own: just count
            self._live = None
            return self
        _active_live.append(self)
        return self

    def stop(self) -> None:
        if self._live is None:
            return
        live, self._live = self._live, None
        try:
            live.stop()
        finally:
            if self in _active_live:
                _active_live.remove(self)


@atexit.register
def _stop_live_lines() -> None:
    # A second Ctrl-C can leave a loop without its ``finally``: give the cursor back anyway.
    for line in list(_active_live):
        line.stop()


# --- progress over a loop ---------------------------------------------------------------------

class Progress:
    """Progress of one loop over ``total`` items (images, files, bytes...).

    ::

        with Progress("predicting", total=len(paths)) as bar:
            for chunk in chunks:
                ...
                bar.update(len(chunk))

    On a terminal a live line shows count, rate and ETA; elsewhere the finished stage leaves
    ``label: N img in 12.3 s (81 img/s)`` when it took ``min_seconds`` or more (always with
    ``-v``; ``summary=False`` never). An exception inside the block leaves no summary.
    """

    def __init__(self, label: str, total: float | None = None, unit: str = "img",
                 summary: bool = True, min_seconds: float | None = None, start: float = 0):
        self.label = label
        self.total = total
        self.unit = unit
        self.summary = summary
        self.min_seconds = _settings["min_seconds"] if min_seconds is None else min_seconds
        self.done = start
        self.initial = start  # resumed downloads: the rate counts only this session's bytes
        self.extra = ""
        self.started = time.monotonic()
        self.ended: float | None = None
        self._line = LiveLine(self.line)

    # state -----------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def line(self) -> str:
        return progress_line(self.label, self.done, self.total, self.elapsed, self.unit, self.extra,
                             self.initial)

    # use ---------------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        self._line.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close(ok=exc_type is None)
        return False

    def update(self, n: float = 1, extra: str | None = None) -> None:
        self.done += n
        if extra is not None:
            self.extra = extra

    def close(self, ok: bool = True) -> None:
        if self.ended is not None:
            return
        self.ended = time.monotonic()
        self._line.stop()
        if not ok or not self.summary or _settings["level"] == "quiet":
            return
        if self.elapsed >= self.min_seconds or _settings["level"] == "verbose":
            note(summary_line(self.label, self.done - self.initial, self.elapsed, self.unit))


def track(items: Iterable, label: str, total: int | None = None, unit: str = "img",
          step: int = 1, **options) -> Iterable:
    """Iterate ``items`` with progress, ``step`` counts per item (e.g. ``range(0, n, batch)``
    with ``total=n, step=batch``: the last, shorter batch counts only what is left)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items) * step
    with Progress(label, total, unit, **options) as bar:
        for item in items:
            yield item
            bar.update(step if total is None else max(min(step, total - bar.done), 0))
