"""The set of paths an online resync has not reached yet, with O(depth) "is this held?" checks.

A live operation must be held back (recorded, not streamed) when its path, an ancestor of it, or
a *descendant* of it is still pending: renaming a directory whose child the peer does not have
yet would otherwise move stale data on the peer under a name the resync will never revisit.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator


def _ancestors(path: str) -> Iterator[str]:
    """"a/b/c" -> "a", "a/b" (the root "." is an ancestor of everything)."""
    if path != ".":
        yield "."
    end = path.find("/")
    while end != -1:
        yield path[:end]
        end = path.find("/", end + 1)


class PendingSet:
    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._paths: set[str] = set()
        self._below: Counter[str] = Counter()   # directory -> pending paths strictly below it
        for p in paths:
            self.add(p)

    def __contains__(self, path: str) -> bool:
        return path in self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._paths))

    def add(self, path: str) -> None:
        if path not in self._paths:
            self._paths.add(path)
            for a in _ancestors(path):
                self._below[a] += 1

    def update(self, paths: Iterable[str]) -> None:
        for p in paths:
            self.add(p)

    def discard(self, path: str) -> None:
        if path in self._paths:
            self._paths.remove(path)
            for a in _ancestors(path):
                self._below[a] -= 1
                if not self._below[a]:
                    del self._below[a]

    def held(self, path: str) -> bool:
        """True if ``path``, an ancestor or a descendant of it is pending."""
        if not self._paths:
            return False
        if path in self._paths or self._below.get(path):
            return True
        return any(a in self._paths for a in _ancestors(path))
