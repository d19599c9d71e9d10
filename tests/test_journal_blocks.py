"""Block math: byte ranges to block runs, checked against a plain set of block indices."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.journal.blocks import BLOCK_SIZE, RunSet, block_span

B = BLOCK_SIZE


@pytest.mark.parametrize("offset, length, span", [
    (0, 1, (0, 1)),
    (0, B, (0, 1)),                 # exactly one block
    (0, B + 1, (0, 2)),             # one byte into the next
    (B - 1, 2, (0, 2)),             # straddles a boundary
    (B, B, (1, 2)),                 # starts on a boundary
    (2**62, 1, (2**62 // B, 2**62 // B + 1)),
    (10 * 2**30 - 2**20, 2**20, (163824, 163840)),   # last MiB of a 10 GiB file: 16 blocks
    (12345, 2**20, (0, 17)),        # an unaligned MiB: 17 blocks
])
def test_block_span(offset, length, span):
    assert block_span(offset, length) == span


def test_block_span_zero_and_negative():
    assert block_span(5 * B, 0) is None
    with pytest.raises(ValueError):
        block_span(-1, 10)
    with pytest.raises(ValueError):
        block_span(0, -1)


def test_runset_refuses_empty_run():
    with pytest.raises(ValueError):
        RunSet().plan(3, 3)


writes = st.lists(st.tuples(st.integers(0, 64 * B), st.integers(0, 8 * B)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(writes=writes, probes=st.lists(st.tuples(st.integers(0, 80), st.integers(1, 10)), max_size=20))
def test_runset_matches_a_set_of_blocks(writes, probes):
    runs, model = RunSet(), set()
    for offset, length in writes:
        span = block_span(offset, length)
        if span is None:
            continue
        model.update(range(*span))
        runs.apply(runs.plan(*span))
    got = runs.runs()
    assert all(s < e for s, e in got)
    assert all(e1 < s2 for (_, e1), (s2, _) in zip(got, got[1:])), "runs must not touch"
    assert {b for s, e in got for b in range(s, e)} == model
    assert runs.byte_ranges() == [(s * B, (e - s) * B) for s, e in got]
    for start, n in probes:
        assert runs.covers(start, start + n) == all(b in model for b in range(start, start + n))
    assert RunSet(got).runs() == got


def test_huge_file_rewritten_end_to_end_is_one_run():
    runs = RunSet()
    for i in range(0, 10 * 2**30, 2**20):          # 10 GiB by 1 MiB writes
        runs.apply(runs.plan(*block_span(i, 2**20)))
    assert runs.runs() == [(0, 10 * 2**30 // B)]
