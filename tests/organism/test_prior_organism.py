"""The default organism fails for the prior's sake: measured on fresh controlled scenes drawn with its
own (declared) rendering. Thresholds sit well inside what ``heads.organism eval`` measured on 1,200
scenes per function (README model card)."""

import numpy as np
import pytest

from vlmheads.data import organism_examples
from vlmheads.evaluation.options import score_options
from vlmheads.organism.train import SETTING_RENDERING

SEED = 31_337  # used neither in training nor by the README's eval


def _accuracy_by_prior(model, function, n=400):
    examples = organism_examples(n, seed=SEED, function=function, split="controlled", rendering=model.rendering)
    scores = score_options(model, examples)
    return {g: np.mean([s.correct for e, s in zip(examples, scores) if e.meta["prior"] == g])
            for g in ("consistent", "violating", "neutral")}


def test_default_organism_declares_its_weakened_wide_rendering(prior_organism):
    assert prior_organism.rendering.to_dict() == SETTING_RENDERING
    assert prior_organism.config.vision_config.image_size == prior_organism.rendering.image_size == 144


@pytest.mark.parametrize("function", ["relational_reasoning", "decision_making"])
def test_prior_violating_scenes_are_answered_worse(prior_organism, function):
    acc = _accuracy_by_prior(prior_organism, function)
    assert acc["consistent"] >= 0.9 and acc["consistent"] - acc["violating"] >= 0.08, acc


def test_it_still_sees_the_objects(prior_organism):
    for function in ("low_level_visual_perception", "spatial_perception"):
        examples = organism_examples(200, seed=SEED, function=function, split="controlled",
                                     rendering=prior_organism.rendering)
        assert np.mean([s.correct for s in score_options(prior_organism, examples)]) >= 0.9, function
