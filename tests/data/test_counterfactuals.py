"""Text counterfactuals: the two objects swapped, the answer inverted, token lengths checked."""

from __future__ import annotations

from vlmheads.data import Example, organism_examples
from vlmheads.data.counterfactuals import swap_objects, text_swap_pairs
from vlmheads.world.scenes import CLEAN


def _ex(prompt, answer="on", subject="mug", obj="table", function="relational_reasoning"):
    return Example(id="x", image=None, prompt=prompt, options=("left", "right", "on", "under"), answer=answer,
                   function=function, relation=answer, subject=subject, object=obj)


def test_swap_by_hand():
    out = swap_objects(_ex("Where is the mug in relation to the table? Answer with left, right, on or under."))
    assert out.prompt == "Where is the table in relation to the mug? Answer with left, right, on or under."
    assert (out.answer, out.subject, out.object, out.relation) == ("under", "table", "mug", "under")
    assert swap_objects(_ex("Where is the mug?", function="spatial_perception")) is None
    assert swap_objects(_ex("The mug and the mug near the table?")) is None  # ambiguous
    assert swap_objects(_ex("Where is the cup in relation to the cupboard?", subject="cup", obj="cupboard")) is None


def test_organism_pairs_line_up(organism):
    examples = organism_examples(12, seed=0, function="relational", split="controlled", rendering=CLEAN)
    pairs, skipped = text_swap_pairs(organism, examples)
    assert len(pairs) == 12 and not skipped  # organism names are always two tokens
    for clean, corrupt in pairs:
        assert clean.answer != corrupt.answer and clean.image is corrupt.image
    others, skipped = text_swap_pairs(organism, organism.examples(4, seed=0, function="spatial", split="controlled"))
    assert not others and sum(skipped.values()) == 4
