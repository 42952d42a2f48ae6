"""The one common-prefix helper (and its suffix twin): same answers as an item-by-item loop."""

from __future__ import annotations

import random

from superpie.cache.diff import common_prefix, common_suffix


def _prefix_loop(a, b) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def _suffix_loop(a, b, floor: int) -> int:
    n = min(len(a), len(b)) - floor
    i = 0
    while i < n and a[len(a) - 1 - i] == b[len(b) - 1 - i]:
        i += 1
    return i


def test_matches_the_item_loop_on_ids_texts_and_mixed_sequences():
    rng = random.Random(0)
    for _ in range(400):
        base = [rng.randrange(4) for _ in range(rng.choice([0, 1, 7, 8, 9, 300, 3000]))]
        a, b = list(base), list(base)
        for _ in range(rng.randrange(3)):  # a few edits, anywhere (sometimes none)
            if a:
                a[rng.randrange(len(a))] = 9
        b = b[: rng.randrange(len(b) + 1)] + [rng.randrange(4) for _ in range(rng.randrange(3))] + b[len(b) // 2 :]
        for x, y in ((a, b), (tuple(a), tuple(b)), (a, tuple(b)), ("".join(map(str, a)), "".join(map(str, b)))):
            head = common_prefix(x, y)
            assert head == _prefix_loop(x, y)
            for floor in (0, head, min(len(x), len(y)) + 1):
                assert common_suffix(x, y, floor) == _suffix_loop(x, y, floor)


def test_edges():
    assert common_prefix([], [1]) == 0 and common_prefix((1, 2), [1, 2, 3]) == 2
    assert common_prefix("a.", "a.b.") == 2 and common_suffix("a.", "a.b.", 2) == 0
    assert common_suffix([1, 2, 3], [9, 2, 3]) == 2 and common_suffix([1], [1], 1) == 0
