"""Ids and tokens: message ids sort in the order they were made, even within a millisecond."""

from __future__ import annotations

import re

import pytest

from interapp.server import tokens


def test_sortable_ids_made_one_after_another_sort_in_that_order() -> None:
    ids = [tokens.sortable_id() for _ in range(20_000)]  # many share a millisecond
    assert all(re.fullmatch(r"[0-9a-f]{25}", i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_sortable_ids_stay_ordered_when_the_clock_steps_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000.0]
    monkeypatch.setattr(tokens.time, "time", lambda: now[0])
    first = tokens.sortable_id()
    now[0] -= 5  # e.g. NTP stepped the clock back
    second = tokens.sortable_id()
    now[0] += 10
    third = tokens.sortable_id()
    assert first < second < third
    assert third.startswith(f"{int(now[0] * 1000):013x}")
