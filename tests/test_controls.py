"""Controls of an intervene claim, on hand-made scorers: what each control counts, and when it cannot run."""

from __future__ import annotations

import math

import pytest
import torch

from vlmheads.controls import CONTROLS, Chosen, Skip, blank, spread_of
from vlmheads.data.option_order import listing
from vlmheads.intervene import INTERVENE_METHODS, InterveneConfig
from vlmheads.methods.batches import option_batches


def _first_listed(example) -> str:
    found = listing(example.prompt, example.options)
    return found.group(1).lower()


def _chosen(organism, examples, rule, method="none", heads=(), **config):
    """A Chosen whose 'model' is ``rule(example) -> bool`` (right or not), whatever it is shown."""
    def score(batches, m, ivs):
        ok = torch.tensor([float(rule(e)) for b in batches for e in b.examples])
        return {"prediction": torch.zeros(len(ok), dtype=torch.long), "p_correct": ok, "correct": ok}

    config = InterveneConfig(**config)
    test_b = option_batches(organism, examples, 8)
    correct = score(test_b, None, [])["correct"]
    return Chosen(organism, config, method, INTERVENE_METHODS[method], {}, heads, {}, test_b, correct, score=score,
                  plain=INTERVENE_METHODS["none"])


@pytest.fixture(scope="module")
def examples(organism):
    return organism.examples(12, seed=3, function="relational", split="controlled")


def test_option_orders_count_only_answers_that_survive_every_order(organism, examples):
    """A 'model' that answers whatever is listed first is right in exactly one cyclic shift of every example
    (and in its given order only when the answer is listed first); one that is always right survives all."""
    run = CONTROLS["option_orders"].run
    first = run(_chosen(organism, examples, lambda e: _first_listed(e) == e.answer, option_orders="circular"))
    assert first["correct"].sum() == 0 and [s["orders_right"] for s in first["samples"]] == [1] * len(examples)
    assert first["params"] == {"orders": 4, "scheme": "circular"}
    every = run(_chosen(organism, examples, lambda e: True, option_orders="all"))
    assert every["correct"].tolist() == [1.0] * len(examples) and every["params"]["orders"] == 24
    assert {s["orders_right"] for s in every["samples"]} == {24}


def test_option_orders_skip_prompts_that_do_not_list_options(organism, examples):
    import dataclasses

    unlisted = [dataclasses.replace(e, prompt=e.prompt.split(" Answer with")[0] + " Answer in one word.")
                for e in examples]
    with pytest.raises(Skip, match="do not list their options"):
        CONTROLS["option_orders"].run(_chosen(organism, unlisted, lambda e: True, option_orders="circular"))


def test_blind_shows_a_grey_image_of_the_same_size(organism, examples):
    from vlmheads.data import as_pil

    seen = []
    out = CONTROLS["blind"].run(_chosen(organism, examples, lambda e: seen.append(e) or True, blind=True))
    shown = seen[len(examples):]  # the first pass is the method's own, on the real images
    assert len(shown) == len(examples) and out["correct"].tolist() == [1.0] * len(examples)
    for e, b in zip(examples, shown):
        image = as_pil(b.image)
        assert image.size == as_pil(e.image).size and image.getextrema() == ((128, 128),) * 3
        assert b.prompt == e.prompt and b.answer == e.answer
    assert blank(examples[0]).image.getextrema() == ((128, 128),) * 3


def test_random_attention_matches_the_methods_log_spread():
    assert spread_of({"alpha": 0.8}) == pytest.approx(abs(math.log(0.8)))
    assert spread_of({"alpha_low": 0.5, "alpha_high": 1.5, "threshold": 0.4}) == pytest.approx(math.log(2))
    with pytest.raises(Skip, match="no log spread"):
        spread_of({"alpha": 0.0})


def test_which_methods_each_control_applies_to(organism, examples):
    applies = {name: [m for m in INTERVENE_METHODS
                      if c.applies(_chosen(organism, examples[:2], bool, method=m, heads=((0, 1),)))]
               for name, c in CONTROLS.items()}
    assert applies["random_attention"] == ["scalingvis", "adaptvis", "head_adaptvis", "head_scalingvis"]
    assert applies["blind"] == ["none"]
    assert "steer" not in applies["random_heads"] and "emphasize" in applies["random_heads"]
    assert "none" not in applies["random_heads"] and applies["option_orders"] == list(INTERVENE_METHODS)
