"""Type checks of JSON read back into dataclasses: hand-made cases, with the line named."""

import json
from dataclasses import dataclass

from vlmheads.typed import describe, field_problem, fits, line_of


@dataclass(frozen=True)
class Options:
    n: int = 1
    rate: float = 0.5
    name: str = "a"
    cap: int | None = None
    on: bool = False
    names: tuple[str, ...] = ()
    heads: tuple[tuple[int, int], ...] = ()
    extra: dict | None = None


def test_every_kind_of_field_accepts_its_json_and_refuses_the_rest():
    good = {"n": 3, "rate": 2, "name": "x", "cap": None, "on": True, "names": ["a", "b"], "heads": [[0, 1], [2, 3]],
            "extra": {"k": 1}}
    assert field_problem(Options, good) is None
    for field, bad in (("n", "3"), ("n", True), ("n", 2.5), ("rate", "fast"), ("rate", False), ("name", 17),
                       ("cap", "none"), ("on", 1), ("names", "a"), ("names", ["a", 2]), ("heads", [[0, 1, 2]]),
                       ("heads", [[0, "1"]]), ("extra", []), ("n", None)):
        problem = field_problem(Options, {**good, field: bad})
        assert problem is not None and problem[1].startswith(f"{field} must be "), (field, bad)


def test_the_reason_names_the_line_and_the_type_in_words():
    text = json.dumps({"name": "x", "n": "abc", "cap": 3}, indent=2)
    assert field_problem(Options, json.loads(text), text) == (3, "n must be a whole number, got 'abc'")
    assert line_of(text, "absent") == "?"
    hints = {"cap": "a whole number or null", "names": "a list of strings", "on": "true or false",
             "heads": "a list of [whole number, whole number] lists", "rate": "a number"}
    import typing

    for name, words in hints.items():
        assert describe(typing.get_type_hints(Options)[name]) == words


def test_fits_reads_lists_as_tuples():
    assert fits([1, 2], tuple[int, int]) and not fits([1], tuple[int, int]) and fits((), tuple[str, ...])
