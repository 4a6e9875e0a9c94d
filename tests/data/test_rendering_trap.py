"""Organism scenes cannot be mis-drawn: drawn for the default organism unless told otherwise, drawn for a
loaded model by ``loaded.examples``, and a model scored on scenes drawn for another warns once."""

import warnings

import numpy as np
import pytest

from vlmheads.data import default_organism_rendering, load, organism_examples
from vlmheads.evaluation.options import score_options
from vlmheads.world.scenes import CLEAN, RenderingMismatch, rendering_of


def test_the_default_draw_is_the_default_organisms_and_every_image_says_how_it_was_drawn(prior_organism):
    assert default_organism_rendering() == prior_organism.rendering != CLEAN
    (plain,) = organism_examples(1, seed=4, function="spatial", split="controlled")
    (own,) = prior_organism.examples(1, seed=4, function="spatial")
    (clean,) = organism_examples(1, seed=4, function="spatial", split="controlled", rendering=CLEAN)
    assert plain.image.tobytes() == own.image.tobytes() != clean.image.tobytes()
    assert plain.image.size == (144, 144) and clean.image.size == (64, 64)
    assert rendering_of(plain.image) == prior_organism.rendering.key and rendering_of(clean.image) == CLEAN.key
    assert rendering_of(load("organism:vsr", limit=1)[0].image) == prior_organism.rendering.key


def test_the_default_organism_scored_the_obvious_way_reads_its_scenes(prior_organism):
    """The trap itself: drawn without a rendering, the default organism's scenes are the ones it was
    trained on (clean ones gave it chance-like spatial accuracy, 0.29-0.51, without a word)."""
    examples = organism_examples(48, seed=77, function="spatial", split="controlled")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderingMismatch)
        accuracy = np.mean([s.correct for s in score_options(prior_organism, examples)])
    assert accuracy >= 0.85, accuracy


def test_scoring_on_scenes_drawn_for_another_model_warns_once(organism):
    """organism-competent sees clean scenes; the default organism's scenes reach it with a warning, once."""
    organism.__dict__.pop("_rendering_warned", None)  # the fixture is shared: forget earlier warnings
    foreign = organism_examples(4, seed=1, function="relational", split="controlled")
    with pytest.warns(RenderingMismatch, match="organism-competent sees organism scenes drawn as") as caught:
        score_options(organism, foreign)
        score_options(organism, foreign)
    assert len([w for w in caught if issubclass(w.category, RenderingMismatch)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderingMismatch)
        score_options(organism, organism.examples(4, seed=1, function="relational"))  # its own: silent
