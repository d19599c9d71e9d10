"""Declarative reading of TOML tables: each section lists its keys once, with a check and a default.

Every problem (unknown key, wrong type, missing key, bad value) goes to an :class:`ErrorList`
instead of stopping at the first one, so ``config check`` can report them all.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hamirror.config.errors import ErrorList

REQUIRED: Any = object()


class Invalid(ValueError):
    """Raised by a value check; its text is the problem shown to the operator."""


class InvalidItems(Invalid):
    """An array with bad elements: ``problems`` holds (key suffix such as ``[2]``, problem) for
    every bad element, so that each is reported under its own key, not only the first."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"item {suffix.strip('[]')}: {problem}" for suffix, problem in problems))
        self.problems = problems


Check = Callable[[Any], Any]


@dataclass(frozen=True)
class Field:
    """One key of a table: the check that converts its value, and its default (or REQUIRED)."""

    check: Check
    default: Any = REQUIRED


# Most specific first: bool is an int in Python, but not in TOML.
TOML_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "an array"),
    (dict, "a table"), ((datetime.date, datetime.time), "a date/time"),
)


def toml_type(value: Any) -> str:
    """The TOML name of a value's type, for 'must be X, not Y' messages."""
    return next((name for kind, name in TOML_TYPES if isinstance(value, kind)), type(value).__name__)


def _expect(value: Any, types: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise Invalid(f"must be {what}, not {toml_type(value)}")


def string(pattern: str | None = None, hint: str = "") -> Check:
    """A non-empty string, optionally matching ``pattern`` (``hint`` says what it should look like)."""
    def check(value: Any) -> str:
        _expect(value, (str,), "a string")
        if not value:
            raise Invalid("must not be empty")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise Invalid(f"must be {hint} (got {value!r})")
        return value
    return check


def number(greater_than: float | None = None) -> Check:
    """An integer or float, returned as float; optionally strictly above a bound."""
    def check(value: Any) -> float:
        _expect(value, (int, float), "a number")
        if greater_than is not None and not value > greater_than:
            raise Invalid(f"must be a number greater than {greater_than:g}")
        return float(value)
    return check


def boolean(value: Any) -> bool:
    """``true`` or ``false`` (not a string, not 0 or 1)."""
    _expect(value, (bool,), "true or false")
    return value


def integer(low: int, high: int) -> Check:
    """An integer within [low, high]."""
    def check(value: Any) -> int:
        _expect(value, (int,), "an integer")
        if not low <= value <= high:
            raise Invalid(f"must be an integer from {low} to {high} (got {value})")
        return value
    return check


def port() -> Check:
    """A TCP or UDP port number."""
    return integer(1, 65535)


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address, returned in its canonical text form."""
    _expect(value, (str,), "a string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid(f"must be an IP address (got {value!r})") from None


def endpoint(example: str) -> Check:
    """``IP:PORT`` (IPv6 as ``[IP]:PORT``), returned unchanged once checked; ``example`` is shown
    in the error and must fit the key (the HTTP port is no example for a witness)."""
    def check(value: Any) -> str:
        _expect(value, (str,), "a string")
        host, sep, port_text = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError
        except ValueError:
            raise Invalid(f"must be IP:PORT, e.g. \"{example}\" (got {value!r})") from None
        return value
    return check


def url(schemes: tuple[str, ...], example: str) -> Check:
    """``SCHEME://HOST:PORT`` (no path), ``SCHEME`` among ``schemes``; returned unchanged once checked."""
    def check(value: Any) -> str:
        _expect(value, (str,), "a string")
        match = re.fullmatch(r"([a-z]+)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})/?", value)
        if match is None or match.group(1) not in schemes or not 1 <= int(match.group(3)) <= 65535:
            raise Invalid(f"must be {' or '.join(s + '://HOST:PORT' for s in schemes)}, e.g. \"{example}\" "
                          f"(got {value!r})")
        return value.rstrip("/")
    return check


def list_of(item: Check, min_items: int = 1) -> Check:
    """An array whose every element passes ``item``; returned as a tuple."""
    def check(value: Any) -> tuple:
        _expect(value, (list,), "an array")
        if len(value) < min_items:
            raise Invalid(f"must have at least {min_items} item(s)")
        out, problems = [], []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except Invalid as exc:
                problems.append((f"[{index}]", str(exc)))
        if problems:
            raise InvalidItems(problems)
        return tuple(out)
    return check


def one_of(*choices: str) -> Check:
    """A string among ``choices``."""
    def check(value: Any) -> str:
        _expect(value, (str,), "a string")
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)} (got {value!r})")
        return value
    return check


def read_table(errors: ErrorList, table: Mapping[str, Any], prefix: str,
               fields: Mapping[str, Field]) -> dict[str, Any]:
    """Check ``table`` against ``fields``: every known key converted, defaults filled in.

    A key that is missing or wrong is reported and replaced by its default (None when required),
    so the caller can go on and find further problems.
    """
    for key in table:
        if key not in fields:
            errors.add(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for key, field in fields.items():
        default = None if field.default is REQUIRED else field.default
        if key not in table:
            if field.default is REQUIRED:
                errors.add(f"{prefix}{key}", "missing required key")
            values[key] = default
            continue
        try:
            values[key] = field.check(table[key])
        except InvalidItems as exc:
            for suffix, problem in exc.problems:
                errors.add(f"{prefix}{key}{suffix}", problem)
            values[key] = default
        except Invalid as exc:
            errors.add(f"{prefix}{key}", str(exc))
            values[key] = default
    return values


def section(errors: ErrorList, doc: Mapping[str, Any], name: str, required: bool) -> dict[str, Any] | None:
    """The top-level table ``name``: {} when optional and absent, None when it is not a table."""
    if name not in doc:
        if required:
            errors.add(name, "missing required section")
        return {} if not required else None
    value = doc[name]
    if not isinstance(value, dict):
        errors.add(name, f"must be a table ([{name}]), not {toml_type(value)}")
        return None
    return value


def table_array(errors: ErrorList, doc: Mapping[str, Any],
                name: str) -> list[tuple[str, dict[str, Any]]] | None:
    """The array of tables ``[[name]]`` as (key prefix, table) pairs; [] when absent, None when not one."""
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        errors.add(name, f"must be an array of tables ([[{name}]]), not {toml_type(value)}")
        return None
    return [(f"{name}[{index}].", item) for index, item in enumerate(value)]


def unknown_sections(errors: ErrorList, doc: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Report top-level keys that are not one of ``known``."""
    for key in doc:
        if key not in known:
            errors.add(key, f"unknown section (expected one of: {', '.join(sorted(known))})")
