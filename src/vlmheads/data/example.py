"""The one example type every dataset yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .images import ImageLike
from ..errors import InputError


@dataclass(frozen=True)
class Example:
    """One image + question with a closed set of answer options.

    ``prompt`` is the user's question text (options spelled out in it, WhatsUp style), without any
    model's chat template: the loaded model wraps it (``LoadedModel.chat_prompt``).
    ``relation``/``subject``/``object`` describe the scene's queried pair even when the question
    itself asks about one object (perception sub-questions), so examples can be grouped by scene.
    """

    id: str
    image: ImageLike | None  # PIL image, or a path opened when a batch is encoded
    prompt: str
    options: tuple[str, ...]
    answer: str
    function: str
    relation: str
    subject: str
    object: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer not in self.options:
            raise InputError(f"example {self.id}: answer {self.answer!r} is not among options {self.options}")

    @property
    def answer_index(self) -> int:
        return self.options.index(self.answer)
