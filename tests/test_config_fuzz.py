"""Whatever a TOML file holds, parsing reports ConfigErrors and never crashes."""

from __future__ import annotations

import copy
import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from hamirror.config.cluster import parse_cluster
from hamirror.config.errors import ErrorList
from hamirror.config.module import parse_module
from tests.configfiles import CLUSTER, MODULE

# Values a TOML document can hold.
toml_values = st.recursive(
    st.none().map(lambda _: "") | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["198.18.0.1", "::1", "1.2.3.4/24", "node1", "{{ x }}", "/srv/a"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def paths(doc, prefix=()):
    """Every (container, key) pair of a parsed document, to overwrite one at a time."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        yield prefix + (key,)
        if isinstance(value, (dict, list)):
            yield from paths(value, prefix + (key,))


def mutate(base: dict, data) -> dict:
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(paths(doc))))
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(toml_values)
    return doc


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_cluster_parsing_never_crashes(data):
    errors = ErrorList("/etc/hamirror/hamirror.toml")
    parse_cluster(mutate(tomllib.loads(CLUSTER), data), errors.file, errors)
    assert all(str(error).startswith("/etc/hamirror/hamirror.toml: ") for error in errors.items)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_module_parsing_never_crashes(data):
    errors = ErrorList("/m/app/module.toml")
    parse_module(mutate(tomllib.loads(MODULE), data), "/m/app", errors)
    assert all(str(error).startswith("/m/app/") for error in errors.items)
