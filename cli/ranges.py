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
