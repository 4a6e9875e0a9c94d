"""Generation scoring with each protocol's rule, on hand-written outputs and on the organism."""

from __future__ import annotations

import pytest

from vlmheads.data import Example, load
from vlmheads.evaluation.generation import generate_answers, score_generations, vsr_summary


def _ex(answer, options, **meta):
    return Example(id="x", image=None, prompt="q", options=options, answer=answer, function="decision_making",
                   relation="", subject="", object="", meta=meta)


def test_whatsup_rule_uses_the_gold_word():
    ex = _ex("on", ("left", "right", "on", "under"), gold="On")
    got = score_generations(["On", "In front of it", "on the table", "Under"], [ex] * 4, "whatsup")
    assert [s.correct for s in got] == [True, False, True, False]


def test_vsr_rule_and_its_honestly_named_f1():
    exs = [_ex("yes", ("yes", "no"), label=1), _ex("yes", ("yes", "no"), label=1),
           _ex("no", ("yes", "no"), label=0), _ex("no", ("yes", "no"), label=0)]
    got = score_generations(["Yes", "No", "No", "Yes"], exs, "vsr")
    assert [s.correct for s in got] == [True, False, True, False]
    summary = vsr_summary(got, exs)
    assert summary == {"accuracy": 0.5, "tpr_tnr_harmonic_mean": 0.5}


def test_exact_rule_and_unknown_scorer():
    ex = _ex("left", ("left", "right"))
    assert [s.correct for s in score_generations(["left", "Left.", "left of"], [ex] * 3, "exact")] == \
        [True, True, False]
    with pytest.raises(ValueError, match="unknown scorer"):
        score_generations(["x"], [ex], "bleu")
    with pytest.raises(ValueError, match="1 generations for 2 examples"):
        score_generations(["x"], [ex, ex], "exact")


def test_organism_generates_its_vsr_answers(organism):
    data = load("organism:vsr", limit=16, rendering=organism.rendering)
    gens = generate_answers(organism, list(data), max_new_tokens=3)
    scores = score_generations(gens, list(data), data.scorer)
    assert all(g in ("yes", "no") for g in gens)
    assert sum(s.correct for s in scores) >= 14  # the organism's decision accuracy is ~0.95
    assert 0.8 <= vsr_summary(scores, list(data))["tpr_tnr_harmonic_mean"] <= 1.0
