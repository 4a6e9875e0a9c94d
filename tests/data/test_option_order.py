"""Options listed in another order: the prompt's listing rewritten in place, separators and words kept."""

from __future__ import annotations

import pytest

from vlmheads.data import load
from vlmheads.data.example import Example
from vlmheads.data.option_order import listing, orders, reorder


def _example(prompt, options=("left", "right", "above", "below"), answer="left"):
    return Example("x", None, prompt, options, answer, "relational", answer, "a", "b")


def test_orders_circular_and_all():
    assert orders(3, "circular") == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert len(orders(4, "all")) == 24 and orders(4, "all")[0] == (0, 1, 2, 3) and len(set(orders(4, "all"))) == 24
    with pytest.raises(ValueError, match="circular or all"):
        orders(3, "random")


@pytest.mark.parametrize("prompt,order,expected", [
    ("Where is the cat in relation to the dog? Answer with left, right, above or below.", (3, 2, 1, 0),
     "Where is the cat in relation to the dog? Answer with below, above, right or left."),
    ("Where is the mug? Answer with left, right, above, or below.", (1, 2, 3, 0),  # AdaptVis's Oxford comma
     "Where is the mug? Answer with right, above, below, or left."),
    ("USER: Where is the cup?\nAnswer with Left, Right, Above or Below.\nASSISTANT:", (2, 3, 0, 1),
     "USER: Where is the cup?\nAnswer with Above, Below, Left or Right.\nASSISTANT:"),
])
def test_reorder_rewrites_the_listing_in_place(prompt, order, expected):
    moved = reorder(_example(prompt), order)
    assert moved.prompt == expected
    assert moved.options == tuple(("left", "right", "above", "below")[i] for i in order)
    assert moved.answer == "left" and moved.meta["option_order"] == list(order)


def test_a_statement_after_the_listing_is_left_alone():
    e = _example("Answer with yes or no: the cat is left of the dog, yes or no?", ("yes", "no"), "no")
    assert reorder(e, (1, 0)).prompt == "Answer with no or yes: the cat is left of the dog, yes or no?"


def test_prompts_that_do_not_list_their_options_are_refused():
    e = _example("Where is the car in relation to the bus? Answer with one word or phrase.")
    assert listing(e.prompt, e.options) is None
    with pytest.raises(ValueError, match="does not list its options"):
        reorder(e, (1, 0, 2, 3))
    with pytest.raises(ValueError, match="is not an order"):
        reorder(_example("Answer with left, right, above or below."), (0, 0, 1, 2))


@pytest.mark.parametrize("name", ["organism:controlled", "organism:vsr"])
def test_every_organism_prompt_can_be_reordered(name):
    for e in load(name, split="test", seed=0, limit=20):
        for order in orders(len(e.options), "all"):
            moved = reorder(e, order)
            assert moved.prompt.replace(" or ", ", ").count(", ") == e.prompt.replace(" or ", ", ").count(", ")
            assert reorder(moved, tuple(order.index(i) for i in range(len(order)))).prompt == e.prompt
