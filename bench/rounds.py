"""Alternating rounds: how every ratio in the benchmarks gets its spread.

A shared machine's load comes and goes; timing the baseline once and then skinzoo once puts a
load change between them into the ratio. So each side is timed once per round, the order rotates
from round to round, and a ratio is the median of the per-round ratios with its [min, max].
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def alternating_calls(sides: dict[str, Callable[[int], T]], rounds: int) -> dict[str, list[T]]:
    """What each side's call returns in every round (the call gets the round's number); round r
    starts with side r mod n. For measurements other than wall time (peak RSS, CPU seconds)."""
    names = list(sides)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(sides[name](r))
    return results


def alternating_rounds(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each side's call in every round; round r starts with side r mod n."""
    def timed(call):
        def run(_round):
            started = time.perf_counter()
            call()
            return time.perf_counter() - started
        return run

    return alternating_calls({name: timed(call) for name, call in sides.items()}, rounds)


def ratio_summary(numerators, denominators) -> tuple[float, list[float]] | None:
    """Median of the per-round ratios and their [min, max]; rounds where a side has no figure
    (None, or a zero denominator: a failed or empty measurement) are left out; None when no round
    has both."""
    per_round = [a / b for a, b in zip(numerators, denominators, strict=True)
                 if a is not None and b is not None and b > 0]
    if not per_round:
        return None
    return round(statistics.median(per_round), 2), [round(min(per_round), 2), round(max(per_round), 2)]
