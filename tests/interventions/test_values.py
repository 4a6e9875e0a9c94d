"""Intervention values: they validate themselves, install themselves, and round-trip through JSON exactly."""

from __future__ import annotations

import json

import pytest
import torch

from vlmheads import site
from vlmheads.interventions import (INTERVENTIONS, Ablate, AdaptVis, Emphasize, Intervention, InterventionError,
                                    RandomScaling, ScalingVis, Steer, Suppress, VisionBoost, apply, from_json)


@pytest.fixture(scope="module")
def batch(organism):
    return organism.encode_examples(organism.examples(6, seed=5, function="relational", split="controlled"))


def _logits(loaded, inputs, ivs):
    with torch.no_grad(), apply(loaded, ivs, inputs=inputs):
        return loaded.model(**inputs).logits[:, -1]


VALUES = [
    Ablate([(0, 4), (2, 1)]), Ablate([(1, 3)], mode="resample"), Emphasize([(2, 3)], 0.5), Emphasize(None, 1.5),
    ScalingVis(1.7), ScalingVis(0.6, heads=[(2, 1)]), AdaptVis(0.5, 1.5, 0.4), AdaptVis(0.8, 2.0, 0.9, heads=[(2, 1)]),
    Steer(3.0, {(0, 4): (torch.linspace(-1, 1, 16), 0.7)}), VisionBoost(2.0, torch.eye(128)[:3]),
    Suppress([(0, 4), (2, 1)]), Suppress([(0, 7)], factor=0.25), RandomScaling(0.7, seed=3),
    RandomScaling(1.2, heads=[(2, 1)]),
]


@pytest.mark.parametrize("iv", VALUES, ids=lambda iv: type(iv).__name__)
def test_json_round_trip_applies_exactly_the_same(organism, batch, iv):
    record = json.loads(json.dumps(iv.to_json()))  # through text, as interventions.json stores it
    again = from_json(record)
    assert type(again) is type(iv) and again.to_json() == iv.to_json()
    assert torch.equal(_logits(organism, batch, [again]), _logits(organism, batch, [iv]))
    assert not torch.equal(_logits(organism, batch, [iv]), _logits(organism, batch, []))  # it does act


def test_every_registered_intervention_is_covered():
    assert set(INTERVENTIONS) == {type(iv).__name__ for iv in VALUES}
    assert all(issubclass(cls, Intervention) for cls in INTERVENTIONS.values())


def test_heads_are_normalised_and_validated():
    assert Ablate([(2, 1), (0, 4), (2, 1)]).heads == ((0, 4), (2, 1))
    assert Emphasize(None).heads is None  # every head of every layer
    with pytest.raises(ValueError, match="negative"):
        Emphasize([(0, -1)])


def test_interventions_compose_in_order_and_clean_up(organism, batch):
    """Emphasize then Ablate on the same head = Ablate alone; all hooks and the attention switch are gone after."""
    both = _logits(organism, batch, [Emphasize([(0, 4)], 3.0), Ablate([(0, 4)]), ScalingVis(1.3)])
    ablate = _logits(organism, batch, [Ablate([(0, 4)]), ScalingVis(1.3)])
    assert torch.equal(both, ablate)
    assert all(not m._forward_pre_hooks for m in organism.model.modules())
    assert organism.model.config.get_text_config()._attn_implementation == "eager"


def test_suppress_is_the_head_zeroed_at_the_answer_position_only(organism, batch):
    """Suppress(heads) = a hook that zeroes those heads at the last position and leaves every other
    position as it was (so the head still writes into the earlier positions, unlike Ablate)."""
    def zero_last(z):
        z[:, -1, 4] = 0.0
    with torch.no_grad(), site.hook(organism, 0, zero_last):
        by_hand = organism.model(**batch).logits[:, -1]
    assert torch.equal(_logits(organism, batch, [Suppress([(0, 4)])]), by_hand)
    assert not torch.equal(_logits(organism, batch, [Suppress([(0, 4)])]), _logits(organism, batch, [Ablate([(0, 4)])]))
    with pytest.raises(InterventionError, match="must be below 1"):
        Suppress([(0, 4)], factor=1.0)
