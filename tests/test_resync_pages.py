"""Answers in pages (hamirror/resync/pages.py): every page within the bound, the pages together
exactly the whole answer, pages that do not follow each other refused; and the receiver's two
forms of CHANGES and LISTDIR (paged with a cursor, whole without: a previous release's primary)."""

from __future__ import annotations

import json

import pytest

from hamirror.link import protocol
from hamirror.link.protocol import MAX_ANSWER, OK, Op, ProtocolError, decode, encode
from hamirror.resync.meta import encode_json
from hamirror.resync.pages import (PageError, changes_page, listing_page, merge_changes, merge_listing,
                                   next_cursor)
from tests.conftest import needs_root
from tests.mirror_fixtures import hostile_receiver


def _all_pages(first_page, budget: int) -> list[dict]:
    pages = [first_page(0, budget)]
    while (cursor := next_cursor(pages)) is not None:
        pages.append(first_page(cursor, budget))
    return pages


@pytest.mark.parametrize("budget", [700, 1000, 4096 * 3])
def test_changes_pages_are_bounded_and_whole(budget):
    doc = {"complete": True, "generations": {"current": {"id": "g1"}}, "unsynced_peer": False,
           "paths": [f"dir/{'é' * (i % 40)}{i}" for i in range(500)], "unsynced": [f"lost{i}" for i in range(77)]}
    pages = _all_pages(lambda c, b: changes_page(doc, c, b), budget)
    assert len(pages) > 1
    assert all(len(encode_json(page)) <= budget for page in pages), [len(encode_json(p)) for p in pages]
    assert merge_changes(pages) == doc


def test_changes_unsynced_none_means_everything():
    doc = {"complete": False, "generations": None, "unsynced_peer": True, "unsynced": None,
           "paths": [f"p{i}" * 30 for i in range(200)]}
    merged = merge_changes(_all_pages(lambda c, b: changes_page(doc, c, b), 2000))
    assert merged == doc and merged["unsynced"] is None


def test_a_real_page_fits_a_message():
    """Paths near PATH_MAX, 20 MB of them: each page under MAX_ANSWER, so under MAX_FRAME."""
    doc = {"complete": True, "generations": None, "paths": [f"{i:05d}" + "x" * 4000 for i in range(5000)],
           "unsynced": []}
    pages = _all_pages(lambda c, b: changes_page(doc, c, b), MAX_ANSWER)
    assert len(pages) == 2
    assert all(len(encode_json(page)) <= MAX_ANSWER for page in pages)
    assert merge_changes(pages) == doc


def test_listing_pages_are_bounded_and_whole():
    names = sorted(f"n{i:04d}" + "z" * (i % 200) for i in range(600))
    metas = {n: ["link", 0o120777, 0, 0, 0, i, 0, "t" * (i % 300), i, 1, {}] for i, n in enumerate(names)}
    metas[names[7]] = None   # went between the listing and its stat
    pages = _all_pages(lambda c, b: listing_page(names, c, metas.get, b), 5000)
    assert len(pages) > 10
    assert all(len(encode_json(page)) <= 5000 for page in pages)
    assert merge_listing(pages) == {n: m for n, m in metas.items() if m is not None}


@pytest.mark.parametrize("pages, message", [
    ([{"next": 5, "count": 10}, {"next": 5, "count": 10}], "cursor 5 after 5"),
    ([{"next": 5, "count": 10}, {"next": 8, "count": 12}], "count 12"),
    ([{"next": 10, "count": 10}], "cursor 10 after 0"),
    ([{"next": "1", "count": 10}], "cursor '1'"),
])
def test_pages_that_do_not_follow_each_other_are_refused(pages, message):
    with pytest.raises(PageError, match=message):
        next_cursor(pages)


def test_the_cursor_on_the_wire():
    assert protocol.offers_pages(protocol.hello_answer())
    assert not protocol.offers_pages(b'{"link":3,"software":"0.3.0","durable":1}')   # an older receiver
    for op, strs in ((Op.CHANGES, ()), (Op.LISTDIR, (b"d",))):
        assert decode([encode(op, 1, 1, (), strs)]).ints == ()
        assert decode([encode(op, 1, 1, (7,), strs)]).ints == (7,)
        with pytest.raises(ProtocolError, match=f"{op.name}: negative cursor"):
            decode([encode(op, 1, 1, (-1,), strs)])


@needs_root
def test_receiver_answers_both_forms(tmp_path):
    """With a cursor: a page (count, next); without: the whole answer as a previous release's
    primary reads it."""
    with hostile_receiver(str(tmp_path)) as (pair, sender, _):
        whole = sender.op(Op.LISTDIR, (), (b".",))
        page = sender.op(Op.LISTDIR, (0,), (b".",))
        assert whole.status == OK and page.status == OK, (whole, page)
        page_doc = json.loads(page.payload)
        assert page_doc["next"] is None and page_doc["count"] == len(json.loads(whole.payload))
        assert page_doc["entries"] == json.loads(whole.payload)
        missing = sender.op(Op.LISTDIR, (0,), (b"nothing-here",))
        assert missing.status == OK and json.loads(missing.payload) is None
        whole = json.loads(sender.op(Op.CHANGES).payload)
        page_doc = json.loads(sender.op(Op.CHANGES, (0,)).payload)
        assert "next" not in whole and page_doc["next"] is None
        assert merge_changes([page_doc]) == whole


def test_a_live_listing_may_count_differently_between_pages():
    """The online verify reads a live directory: only a cursor that does not advance is refused."""
    pages = [{"next": 5, "count": 10}, {"next": 8, "count": 12}]
    assert next_cursor(pages, fixed=False) == 8
    with pytest.raises(PageError, match="cursor 5 after 5"):
        next_cursor([{"next": 5, "count": 10}, {"next": 5, "count": 12}], fixed=False)


def test_a_page_that_is_not_an_object_is_refused():
    with pytest.raises(PageError, match="a page that is not an object: list"):
        next_cursor([{"next": 5, "count": 10}, [1, 2]])
