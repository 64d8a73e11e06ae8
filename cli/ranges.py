"""Click types for the ranges in :mod:`skinzoo.ranges` (the one definition of each range)."""

from __future__ import annotations

import click

from skinzoo.ranges import TRAIN_RANGES, Range


def click_type(allowed: Range | str):
    """``click.IntRange``/``FloatRange`` for a Range (or the name of a training option)."""
    r = TRAIN_RANGES[allowed] if isinstance(allowed, str) else allowed
    if r.kind is int:
        return click.IntRange(None if r.low is None else int(r.low),
                              None if r.high is None else int(r.high),
                              min_open=r.low_open, max_open=r.high_open)
    return click.FloatRange(r.low, r.high, min_open=r.low_open, max_open=r.high_open)


class AutoOr(click.ParamType):
    """``auto`` (passed on as None: the library decides) or a value of the wrapped click type."""

    def __init__(self, inner: click.ParamType):
        self.inner = inner
        self.name = f"auto|{inner.name}"

    def convert(self, value, param, ctx):
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        return self.inner.convert(value, param, ctx)

    def __repr__(self) -> str:
        return f"AutoOr({self.inner!r})"
