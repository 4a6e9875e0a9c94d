"""Scoring by greedy generation with a dataset's protocol scorer (AdaptVis's rules).

``score_generations`` is pure (strings in, verdicts out) so each rule is testable by hand;
``generate_answers`` produces the strings with a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..data.example import Example
from ..data.protocols import tpr_tnr_harmonic_mean, vsr_correct, whatsup_correct
from ..errors import InputError

SCORERS = ("whatsup", "vsr", "exact")


@dataclass(frozen=True)
class GenerationScore:
    example_id: str
    generation: str
    correct: bool
    said_yes: bool | None = None  # VSR: did the answer say "Yes" (for the TPR/TNR harmonic mean)


def judge(generation: str, example: Example, scorer: str) -> bool:
    if scorer == "whatsup":
        return whatsup_correct(generation, example.meta.get("gold", example.answer))
    if scorer == "vsr":
        label = example.meta.get("label", 1 if example.answer == "yes" else 0)
        return vsr_correct(generation, label)
    if scorer == "exact":
        return generation.strip().lower().rstrip(".") == example.answer.lower()
    raise InputError(f"unknown scorer {scorer!r}; use one of {SCORERS}")


def score_generations(generations: Sequence[str], examples: Sequence[Example], scorer: str) -> list[GenerationScore]:
    if len(generations) != len(examples):
        raise ValueError(f"{len(generations)} generations for {len(examples)} examples")
    return [GenerationScore(e.id, g, judge(g, e, scorer), _said_yes(g, e, scorer)) for g, e in zip(generations, examples)]


def _said_yes(generation: str, example: Example, scorer: str) -> bool | None:
    if scorer == "vsr":
        return "Yes" in generation
    if set(example.options) == {"yes", "no"}:
        return generation.strip().lower().startswith("yes")
    return None


def vsr_summary(scores: Sequence[GenerationScore], examples: Sequence[Example]) -> dict[str, float]:
    """Accuracy and AdaptVis's "F1" under its honest name (TPR/TNR harmonic mean)."""
    labels = [bool(e.meta.get("label", e.answer == "yes")) for e in examples]
    return {"accuracy": sum(s.correct for s in scores) / len(scores),
            "tpr_tnr_harmonic_mean": tpr_tnr_harmonic_mean([bool(s.said_yes) for s in scores], labels)}


def generate_answers(loaded, examples: Sequence[Example], max_new_tokens: int = 8, batch_size: int = 16) -> list[str]:
    """Greedy continuations of each example's chat prompt (special tokens dropped)."""
    if not examples:
        raise InputError("no examples to generate for: the dataset is empty")
    out = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        enc = loaded.encode_examples(batch)
        with torch.no_grad():
            ids = loaded.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=loaded.tokenizer.pad_token_id)
        new = ids[:, enc["input_ids"].shape[1]:]
        out += [t.strip() for t in loaded.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out
