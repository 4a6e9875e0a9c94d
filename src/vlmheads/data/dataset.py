"""A loaded dataset: its examples plus what a run records about where they came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .example import Example


class DataError(ValueError):
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


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs; a malformed line raises ``DataError`` naming file and line."""
    import json

    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
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


def need(record: dict, key: str, where: str, kind=None):
    """``record[key]``, or a ``DataError`` at ``where`` (file:line) naming the missing field."""
    if key not in record:
        raise DataError(f"{where}: record has no {key!r} field (fields: {', '.join(map(str, record)) or 'none'})")
    value = record[key]
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"{where}: field {key!r} should be {getattr(kind, '__name__', kind)}, "
                        f"got {type(value).__name__}")
    return value
