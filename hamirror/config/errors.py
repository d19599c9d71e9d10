"""Configuration errors, worded for the operator: ``FILE: KEY: PROBLEM``."""

from __future__ import annotations


class ConfigError(Exception):
    """One problem in one file, at one key (``key`` is None for whole-file problems).

    A plain exception rather than a frozen dataclass: Python sets attributes on exceptions
    (``__traceback__``, notes) that a frozen class would refuse.
    """

    def __init__(self, file: str, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key is None:
            return f"{self.file}: {self.problem}"
        return f"{self.file}: {self.key}: {self.problem}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigError) and (self.file, self.key, self.problem) == (
            other.file, other.key, other.problem)

    def __hash__(self) -> int:
        return hash((self.file, self.key, self.problem))


class ErrorList:
    """Collects every problem of one file so that ``config check`` can report them all at once."""

    def __init__(self, file: str, sink: list[ConfigError] | None = None) -> None:
        self.file = file
        self.items: list[ConfigError] = [] if sink is None else sink

    def add(self, key: str | None, problem: str) -> None:
        self.items.append(ConfigError(self.file, key, problem))

    def for_file(self, file: str) -> ErrorList:
        """Another file's errors, collected into the same list."""
        return ErrorList(file, self.items)

    def __len__(self) -> int:
        return len(self.items)
