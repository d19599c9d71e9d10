"""The transition table: what is allowed, what is not, and that the module stays a leaf."""

from __future__ import annotations

import ast
import itertools
import pathlib

import pytest

from hamirror.cluster import states
from hamirror.cluster.states import NodeState, TransitionError, check_transition, is_allowed

S = NodeState
EXPECTED = {
    (S.STOP, S.WAIT), (S.WAIT, S.STOP), (S.WAIT, S.SECOND), (S.WAIT, S.ALONE),
    (S.SECOND, S.STOP), (S.SECOND, S.WAIT), (S.SECOND, S.PRIM), (S.SECOND, S.ALONE),
    (S.PRIM, S.STOP), (S.PRIM, S.WAIT), (S.PRIM, S.SECOND), (S.PRIM, S.ALONE),
    (S.ALONE, S.STOP), (S.ALONE, S.WAIT), (S.ALONE, S.PRIM),
}


def test_values_are_the_status_strings() -> None:
    assert [s.value for s in NodeState] == ["STOP", "WAIT", "SECOND", "PRIM", "ALONE"]


@pytest.mark.parametrize("current,target", list(itertools.product(NodeState, NodeState)))
def test_table_is_exactly_the_expected_one(current: NodeState, target: NodeState) -> None:
    allowed = current is target or (current, target) in EXPECTED
    assert is_allowed(current, target) is allowed
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(TransitionError):
            check_transition(current, target)


def test_primary_states() -> None:
    assert {s for s in NodeState if s.is_primary} == {S.PRIM, S.ALONE}


def test_states_module_imports_nothing_of_the_package() -> None:
    tree = ast.parse(pathlib.Path(states.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("hamirror")]
