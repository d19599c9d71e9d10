"""Resync answers in pages: a receiver's list of what it changed (CHANGES) or a directory's listing
(LISTDIR) can be larger than one message may be (``MAX_FRAME``: a peer refuses a bigger frame).

Why pages rather than a refusal and a full compare: in a split brain the list of what the peer
changed on its own is what the resync sets aside; without it the peer's versions would be
overwritten. So the list always arrives whole, in as many bounded pieces as it takes.

A paged query carries one integer, the cursor (0 first). Every page says ``count`` (how many items
the whole answer has) and ``next`` (the cursor of the next page, null after the last). Only a
receiver whose HELLO answer offers ``pages`` is asked this way (protocol.offers_pages); an older
one answers the whole list in one message, as before. Pure: no sockets, no file system.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from hamirror.link.protocol import MAX_ANSWER


class PageError(ValueError):
    """The pages of one answer do not fit together (the peer is broken, or its answer changed)."""


def _size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def page_end(sizes: Callable[[int], int], start: int, total: int, budget: int) -> int:
    """The end of the page starting at ``start``: as many items as ``budget`` bytes hold, and at
    least one (a single item is far smaller than a message: a path, one directory entry)."""
    end, used = start, 0
    while end < total:
        used += sizes(end) + 1   # the item and its separator
        if used > budget and end > start:
            break
        end += 1
    return end


def changes_page(doc: dict, start: int, budget: int = MAX_ANSWER) -> dict:
    """One page of a CHANGES answer: its lists ``paths`` then ``unsynced`` (when a list) as one
    sequence of items, the rest of ``doc`` (a few KB) in every page."""
    paths, lost = doc["paths"], doc.get("unsynced")
    lost = lost if isinstance(lost, list) else []
    items = len(paths) + len(lost)
    head = {k: v for k, v in doc.items() if k not in ("paths", "unsynced")}
    room = budget - _size(head) - 128   # the page's own keys and brackets
    end = page_end(lambda i: _size(paths[i] if i < len(paths) else lost[i - len(paths)]), start, items, room)
    return {**head, "paths": paths[start:end],
            "unsynced": lost[max(start - len(paths), 0):max(end - len(paths), 0)]
            if isinstance(doc.get("unsynced"), list) else None,
            "count": items, "next": end if end < items else None}


def listing_page(names: Sequence[str], start: int, meta: Callable[[str], list | None],
                 budget: int = MAX_ANSWER) -> dict:
    """One page of a LISTDIR answer: ``entries`` {name: metadata} of sorted ``names`` from ``start``
    (``meta`` None: the entry went between the listing and its stat, left out as before)."""
    entries: dict[str, list] = {}

    def size(i: int) -> int:
        found = meta(names[i])
        if found is not None:
            entries[names[i]] = found
        return _size(names[i]) + 1 + _size(found) if found is not None else 0

    end = page_end(size, start, len(names), budget - 128)
    if end < len(names):
        entries.pop(names[end], None)   # measured, found too large for this page: the next one's
    return {"entries": entries, "count": len(names), "next": end if end < len(names) else None}


def next_cursor(pages: list[dict], fixed: bool = True) -> int | None:
    """The cursor to ask for after the last of ``pages`` (None: complete); PageError if the pages
    do not follow each other: a cursor that does not advance, or (``fixed``: the answer cannot
    change between pages) a count that changed. The online verify reads a live directory: its
    pages may count differently, each is compared at its own point of the stream."""
    last = pages[-1]
    if not isinstance(last, dict):
        raise PageError(f"a page that is not an object: {type(last).__name__}")
    cursor, count = last.get("next"), last.get("count")
    if cursor is None:
        return None
    previous = pages[-2]["next"] if len(pages) > 1 else 0
    if type(cursor) is not int or type(count) is not int or not previous < cursor < count \
            or (fixed and any(p.get("count") != count for p in pages)):
        raise PageError(f"pages that do not follow each other (cursor {cursor!r} after {previous}, "
                        f"count {count!r})")
    return cursor


def merge_changes(pages: list[dict]) -> dict:
    """The whole CHANGES answer from its pages, as an unpaged receiver sends it."""
    doc = {k: v for k, v in pages[0].items() if k not in ("count", "next")}
    doc["paths"] = [p for page in pages for p in page.get("paths", ())]
    if isinstance(pages[0].get("unsynced"), list):
        doc["unsynced"] = [p for page in pages for p in page.get("unsynced") or ()]
    return doc


def merge_listing(pages: list[dict]) -> dict[str, list]:
    """The whole LISTDIR answer (name -> metadata) from its pages."""
    return {name: meta for page in pages for name, meta in (page.get("entries") or {}).items()}
