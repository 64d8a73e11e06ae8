"""bench/rounds.py: the order rotates between rounds and a ratio is the median of per-round ratios."""

from __future__ import annotations

from bench.rounds import alternating_calls, alternating_rounds, ratio_summary


def test_each_round_starts_with_the_next_side():
    calls = []
    seconds = alternating_rounds({name: (lambda n=name: calls.append(n)) for name in "abc"}, rounds=4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert {k: len(v) for k, v in seconds.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for v in seconds.values() for t in v)


def test_calls_get_their_round_and_every_result_is_kept_in_round_order():
    calls = []

    def side(name):
        def call(r):
            calls.append(name)
            return f"{name}{r}"
        return call

    results = alternating_calls({"disk": side("disk"), "array": side("array")}, rounds=3)
    assert calls == ["disk", "array", "array", "disk", "disk", "array"]
    assert results == {"disk": ["disk0", "disk1", "disk2"], "array": ["array0", "array1", "array2"]}


def test_ratio_is_the_median_of_per_round_ratios_with_its_range():
    # per-round ratios 1, 0.5, 30: the median is 1, while the ratio of the sums would be 8
    assert ratio_summary([1, 1, 30], [1, 2, 1]) == (1.0, [0.5, 30.0])


def test_rounds_without_a_figure_are_left_out():
    assert ratio_summary([2, None, 6], [1, 1, 0]) == (2.0, [2.0, 2.0])
    assert ratio_summary([None], [1]) is None
