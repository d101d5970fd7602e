"""Padding-aware batch cutting (serving/backends/batching.py), as the int8 backend uses it."""

from __future__ import annotations

import itertools
import random

import pytest

from serving.backends.batching import padding_aware_batches


def _cost(batches: list[list[int]], lengths: list[int], run_cost: int) -> int:
    return sum(run_cost + len(b) * max(lengths[i] for i in b) for b in batches)


def _brute_force(lengths: list[int], max_items: int, budget: int, run_cost: int) -> int:
    """The cheapest cut of the length-sorted items into consecutive runs, by enumeration."""
    size = sorted(lengths)
    n = len(size)
    best = None
    for mask in range(2 ** (n - 1)):
        bounds = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        runs = [size[a:b] for a, b in itertools.pairwise(bounds)]
        if any(len(r) > max_items or (len(r) > 1 and len(r) * r[-1] > budget) for r in runs):
            continue
        cost = sum(run_cost + len(r) * r[-1] for r in runs)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


def test_a_request_mix_is_cut_where_the_lengths_jump() -> None:
    lengths = [120, 9, 11, 118, 10, 12, 9, 10, 11, 12]
    batches = [[int(i) for i in b] for b in padding_aware_batches(lengths, 16, 512, 6)]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    # No title shares a run with a description; the titles split once more where that saves work.
    for b in batches:
        assert max(lengths[i] for i in b) < 20 or min(lengths[i] for i in b) > 100
    assert sorted(len(b) for b in batches) == [2, 4, 4]
    # One batch of all ten would pad every title to 120 tokens: 1,206 steps against 346.
    assert _cost(batches, lengths, 6) == 6 + 4 * 10 + 6 + 4 * 12 + 6 + 2 * 120


def test_limits_are_kept() -> None:
    lengths = [100] * 7 + [5] * 40
    batches = padding_aware_batches(lengths, 16, 512, 6)
    assert all(len(b) <= 16 for b in batches)
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 512 for b in batches)
    assert sum(len(b) for b in batches) == 47
    # A single item longer than the budget still runs, on its own.
    assert [list(b) for b in padding_aware_batches([700], 16, 512, 6)] == [[0]]
    assert padding_aware_batches([], 16, 512, 6) == []


@pytest.mark.parametrize("seed", range(25))
def test_cuts_are_optimal(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [
        rng.choice([rng.randint(4, 20), rng.randint(30, 128)]) for _ in range(rng.randint(1, 10))
    ]
    max_items, budget, run_cost = (
        rng.choice([2, 4, 16]),
        rng.choice([128, 512]),
        rng.choice([0, 6, 40]),
    )
    batches = [
        [int(i) for i in b] for b in padding_aware_batches(lengths, max_items, budget, run_cost)
    ]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert _cost(batches, lengths, run_cost) == _brute_force(lengths, max_items, budget, run_cost)
