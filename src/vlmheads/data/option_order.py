"""The answer options listed in another order: the option-order control (arXiv 2606.01914).

Every dataset here spells its options out in the prompt ("Answer with left, right, above or below.",
"Answer with yes or no: ..."). ``reorder`` finds that listing (the options in their own order, joined by
", ", ", or " or " or ") and writes them in another order, keeping the separators and the words as the
prompt spells them; the example's ``options`` follow, the answer stays. A prompt that does not list its
options (VSR's open "Answer with one word or phrase.") cannot be reordered: ``listing`` returns None.

    orders(4, "circular")  (0,1,2,3) (1,2,3,0) (2,3,0,1) (3,0,1,2)   every option at every place
    orders(3, "all")       all 3! permutations, the identity first
"""

from __future__ import annotations

import dataclasses
import re
from itertools import permutations

from .example import Example
from ..errors import InputError

SCHEMES = ("circular", "all")
_SEPARATOR = r"(,\s*or\s+|,\s*|\s+or\s+)"


def orders(k: int, scheme: str) -> list[tuple[int, ...]]:
    """The option orders of a ``k``-option example, the given order first: ``circular`` (the k cyclic shifts,
    MMBench's CircularEval) or ``all`` (the k! permutations)."""
    if scheme not in SCHEMES:
        raise InputError(f"option orders are {' or '.join(SCHEMES)}, got {scheme!r}")
    if scheme == "circular":
        return [tuple((s + i) % k for i in range(k)) for s in range(k)]
    return list(permutations(range(k)))


def listing(prompt: str, options: tuple[str, ...]) -> re.Match | None:
    """Where ``prompt`` lists ``options`` in their order (the first listing after the last "answer with",
    else the first anywhere); None when it does not list them."""
    pattern = r"\b" + _SEPARATOR.join(f"({re.escape(o)})" for o in options) + r"\b"
    tail = [m.end() for m in re.finditer(r"answer with", prompt, flags=re.I)]
    start = tail[-1] if tail else 0
    return re.compile(pattern, flags=re.I).search(prompt, start) or re.search(pattern, prompt, flags=re.I)


def reorder(example: Example, order: tuple[int, ...]) -> Example:
    """``example`` with its options listed in ``order`` (indices into its options) in the prompt and in
    ``options``; ``meta["option_order"]`` records the order."""
    if sorted(order) != list(range(len(example.options))):
        raise InputError(f"example {example.id}: {order} is not an order of its {len(example.options)} options")
    found = listing(example.prompt, example.options)
    if found is None:
        raise InputError(f"example {example.id}: its prompt does not list its options {example.options} "
                         f"('a, b or c'), so their order cannot be changed")
    groups = found.groups()  # word, separator, word, ..., word
    words, separators = groups[0::2], groups[1::2]
    text = words[order[0]] + "".join(sep + words[i] for sep, i in zip(separators, order[1:]))
    prompt = example.prompt[:found.start()] + text + example.prompt[found.end():]
    return dataclasses.replace(example, prompt=prompt, options=tuple(example.options[i] for i in order),
                               meta={**example.meta, "option_order": list(order)})
