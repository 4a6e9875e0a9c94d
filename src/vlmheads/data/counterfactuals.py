"""Text counterfactuals for any dataset: swap the two objects of a relational question.

"Where is the mug in relation to the plate?" becomes "Where is the plate in relation to the mug?"
with the same image; the answer inverts (left <-> right, on <-> under, front <-> behind, ...). For
activation patching the two prompts must line up token for token, so ``text_swap_pairs`` keeps only
pairs whose prompts have the same number of tokens and counts the rest. (The organism's own pairs,
``organism_pairs``, re-render the image instead and keep the text.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Sequence

from .example import Example
from .functions import canonical_function

INVERSE_WORDS = {"left": "right", "right": "left", "above": "below", "below": "above", "on": "under",
                 "under": "on", "front": "behind", "behind": "front", "top": "bottom", "bottom": "top"}


def swap_objects(example: Example) -> Example | None:
    """The question with subject and object swapped and the answer inverted, or None if not applicable."""
    s, o, prompt = example.subject, example.object, example.prompt
    if example.function != canonical_function("relational") or not s or not o or s in o or o in s:
        return None
    if prompt.count(s) != 1 or prompt.count(o) != 1:
        return None
    inverse = INVERSE_WORDS.get(example.answer)
    if inverse is None or inverse not in example.options:
        return None
    marker = "\x00"
    swapped = prompt.replace(s, marker).replace(o, s).replace(marker, o)
    return replace(example, id=f"{example.id}-swapped", prompt=swapped, answer=inverse, subject=o, object=s,
                   relation=INVERSE_WORDS.get(example.relation, example.relation),
                   meta={**example.meta, "pair": "corrupt", "corruption": "swap objects"})


def text_swap_pairs(loaded, examples: Sequence[Example]) -> tuple[list[tuple[Example, Example]], dict[str, int]]:
    """(clean, swapped) pairs whose chat prompts have equal token counts, and counts of the rest by reason."""
    pairs, skipped = [], Counter()
    tok = loaded.tokenizer
    for e in examples:
        swapped = swap_objects(e)
        if swapped is None:
            skipped["no object swap (not a two-object relational question)"] += 1
            continue
        lengths = {len(tok(loaded.chat_prompt(x.prompt), add_special_tokens=False)["input_ids"]) for x in (e, swapped)}
        if len(lengths) != 1:
            skipped["swapped names tokenize to other lengths"] += 1
            continue
        pairs.append((e, swapped))
    return pairs, dict(skipped)
