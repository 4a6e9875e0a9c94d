from collections import Counter

import pytest

from vlmheads.data import FUNCTIONS, canonical_function, organism_examples
from vlmheads.world.scenes import CLEAN


def test_examples_are_reproducible_and_seeded():
    a = organism_examples(12, seed=7, split="controlled", rendering=CLEAN)
    b = organism_examples(12, seed=7, split="controlled", rendering=CLEAN)
    c = organism_examples(12, seed=8, split="controlled", rendering=CLEAN)
    assert [e.prompt for e in a] == [e.prompt for e in b]
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b))
    assert [e.image.tobytes() for e in a] != [e.image.tobytes() for e in c]
    assert len({e.id for e in a}) == 12


def test_example_fields():
    (e,) = organism_examples(1, seed=0, function="relational", rendering=CLEAN)
    assert e.function == "relational_reasoning"
    assert e.options == ("left", "right", "above", "below")
    assert e.answer == e.relation and e.answer_index == e.options.index(e.answer)
    assert e.subject in e.prompt and e.object in e.prompt
    assert e.image.size == (64, 64) and e.image.mode == "RGB"
    assert {"prior", "split", "seed", "layout"} <= set(e.meta)


def test_function_filter_cycle_and_controlled_balance():
    mixed = organism_examples(40, seed=1, rendering=CLEAN)
    assert Counter(e.function for e in mixed) == {f: 10 for f in (
        "low_level_visual_perception", "spatial_perception", "relational_reasoning", "decision_making")}
    controlled = organism_examples(80, seed=1, function="spatial", split="controlled", rendering=CLEAN)
    assert {e.function for e in controlled} == {"spatial_perception"}
    assert Counter(e.relation for e in controlled) == {"left": 20, "right": 20, "above": 20, "below": 20}
    assert organism_examples(0) == []


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown cognitive function 'spatiall'"):
        organism_examples(2, function="spatiall")
    with pytest.raises(ValueError, match="has no 'math_reasoning' questions"):
        organism_examples(2, function="math")
    with pytest.raises(ValueError, match="unknown organism split"):
        organism_examples(2, split="val")
    with pytest.raises(ValueError, match="n must be >= 0"):
        organism_examples(-1)


def test_function_names_and_aliases():
    assert len(FUNCTIONS) == 8
    assert canonical_function("Spatial") == "spatial_perception"
    assert canonical_function("relational reasoning") == "relational_reasoning"
    assert canonical_function("decision") == "decision_making"
