"""Block math for the changed set: byte ranges -> block runs, kept merged and sorted.

A file's changed blocks are stored as run-length ranges of block indices (``[start, end)``),
so a 10 GiB file rewritten end to end is one run, not 163,840 rows. This module is pure: the
journal persists what it computes.
"""

from __future__ import annotations

import bisect

BLOCK_SIZE = 64 * 1024
"""Granularity of the changed-block map, in bytes."""


def block_span(offset: int, length: int) -> tuple[int, int] | None:
    """The run ``[first, end)`` of block indices touched by ``length`` bytes at ``offset``.

    ``None`` when ``length`` is 0: nothing was written, so no block changed.
    """
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must be >= 0, got {offset}, {length}")
    if length == 0:
        return None
    return offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE + 1


class RunSet:
    """Sorted, disjoint, non-adjacent runs ``[start, end)`` of block indices.

    Only grows (callers replace it to clear). Adding is a plan/apply pair so the journal can
    commit the plan to disk before the in-memory copy says it is recorded.
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self, runs: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in sorted(runs or []):
            self.apply(self.plan(start, end))

    def copy(self) -> RunSet:
        """An independent copy (the journal stages changes on one before committing)."""
        other = RunSet()
        other._starts, other._ends = list(self._starts), list(self._ends)
        return other

    def covers(self, start: int, end: int) -> bool:
        """True when every block of ``[start, end)`` is already in the set."""
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def plan(self, start: int, end: int) -> tuple[int, int, int, int]:
        """What adding ``[start, end)`` does: ``(merged_start, merged_end, lo, hi)``.

        Runs ``lo:hi`` (overlapping or adjacent) are replaced by the merged run. Read-only.
        """
        if start >= end:
            raise ValueError(f"empty run [{start}, {end})")
        lo = bisect.bisect_left(self._ends, start)       # first run ending at/after start
        hi = bisect.bisect_right(self._starts, end)      # runs starting at/before end
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        return start, end, lo, hi

    def apply(self, plan: tuple[int, int, int, int]) -> None:
        """Perform a plan made by :meth:`plan` on this unchanged set."""
        start, end, lo, hi = plan
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def runs(self) -> list[tuple[int, int]]:
        """The runs, in block indices."""
        return list(zip(self._starts, self._ends))

    def byte_ranges(self) -> list[tuple[int, int]]:
        """The runs as merged ``(offset, length)`` byte ranges."""
        return [(s * BLOCK_SIZE, (e - s) * BLOCK_SIZE) for s, e in zip(self._starts, self._ends)]

    def __len__(self) -> int:
        return len(self._starts)
