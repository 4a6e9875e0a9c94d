"""Type checks for what is read back from JSON (a resumed run's config.json, a locate run's heads.json):
each field against its dataclass annotation, so an edited file is refused with the field, what it should
be and the line it is on, before any model loads, never as a traceback from deep inside a run."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def line_of(text: str, key: str) -> int | str:
    """The line of a JSON text where ``key`` first appears as a key (``?`` when it does not)."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if f'"{key}":' in line:
            return lineno
    return "?"


def describe(hint: Any) -> str:
    """An annotation in words: ``int | None`` -> "a whole number or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list [{', '.join(describe(a) for a in args)}]"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            dict: "an object"}.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"[{', '.join(describe(a).removeprefix('a ').removeprefix('an ') for a in typing.get_args(hint))}] lists"
    word = describe(hint)
    return {"a whole number": "whole numbers", "a number": "numbers", "a string": "strings",
            "an object": "objects"}.get(word, word.removeprefix("a "))


def fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value (lists for tuples) is of the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
    if (origin or hint) is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


def field_problem(cls: type, data: dict, text: str = "") -> tuple[int | str, str] | None:
    """Why ``data`` (a JSON object read from ``text``) does not fit dataclass ``cls``: ``(line, reason)`` of
    the first field whose value is not of its annotated type ("n must be a whole number, got 'abc'"); None
    when every field present fits (unknown and missing fields are the constructor's to refuse)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data and not fits(data[f.name], hints[f.name]):
            return line_of(text, f.name), f"{f.name} must be {describe(hints[f.name])}, got {data[f.name]!r}"
    return None
