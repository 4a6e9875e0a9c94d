"""A loaded dataset: its examples plus what a run records about where they came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

from .example import Example


class DataError(InputError):
    """A malformed dataset file; the message names the file and line."""


@dataclass(frozen=True)
class Dataset:
    """Examples of one named dataset, in record order.

    ``skipped`` counts records that could not become examples, by reason (never silent);
    ``scorer`` names the generation scorer of the dataset's protocol (``"whatsup"``, ``"vsr"`` or
    ``"exact"``); ``sources`` are the files read, for run metadata.
    """

    name: str
    examples: tuple[Example, ...]
    scorer: str = "exact"
    split: str | None = None
    n_records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index):
        return self.examples[index]

    def identity(self) -> dict[str, Any]:
        """What a run's metadata records: name, sizes, skipped counts and file digests."""
        files = {}
        for src in self.sources:
            p = Path(src)
            if p.is_file():
                files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        return {"name": self.name, "split": self.split, "n_examples": len(self.examples),
                "n_records": self.n_records, "skipped": dict(self.skipped), "scorer": self.scorer,
                "sources": files}

    def skipped_note(self) -> str:
        if not self.skipped:
            return ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{self.name}: skipped {sum(self.skipped.values())} of {self.n_records} records ({parts})"


def read_text(path: Path) -> str:
    """A data file's text; a file that is not UTF-8 raises ``DataError`` naming the file, line and byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); "
                        f"save the file as UTF-8") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs; a malformed line or a file that is not UTF-8 raises ``DataError`` naming
    file and line."""
    import json

    records = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append((lineno, record))
    return records


_KIND_WORDS = {str: "a string", int: "a whole number", float: "a number", list: "a list", dict: "an object",
               bool: "true or false"}


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # JSON true is not a number here
    return isinstance(value, kinds)


def _kind_words(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_KIND_WORDS.get(k, getattr(k, "__name__", str(k))) for k in kinds)


def need(record: dict, key: str, where: str, kind=None):
    """``record[key]``, or a ``DataError`` at ``where`` (file:line) naming the missing field, or the field
    whose value is not of ``kind`` (a type or a tuple of types; JSON true/false is no number)."""
    if key not in record:
        raise DataError(f"{where}: record has no {key!r} field (fields: {', '.join(map(str, record)) or 'none'})")
    return optional(record, key, where, kind)


def optional(record: dict, key: str, where: str, kind=None, default=None):
    """``record[key]`` when present (of ``kind``, else a ``DataError`` at ``where``), else ``default``."""
    import json

    if key not in record:
        return default
    value = record[key]
    if kind is not None and not _is(value, kind):
        raise DataError(f"{where}: field {key!r} must be {_kind_words(kind)}, got {json.dumps(value)[:60]}")
    return value
