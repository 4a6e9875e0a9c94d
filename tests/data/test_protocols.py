"""AdaptVis's protocol pieces on hand-written cases."""

from __future__ import annotations

import random

import pytest

from vlmheads.data.protocols import accuracy, adaptvis_split, tpr_tnr_harmonic_mean, vsr_correct, whatsup_correct


def test_split_is_the_seed_1_sample_and_its_complement():
    random.seed(1)
    expected_val = sorted(random.sample(range(412), int(0.2 * 412)))
    assert adaptvis_split(412, "val") == expected_val
    test = adaptvis_split(412, "test")
    assert len(test) == 330 and sorted(set(test) | set(expected_val)) == list(range(412))
    with pytest.raises(ValueError, match="'val'"):
        adaptvis_split(10, "dev")


@pytest.mark.parametrize("generation,gold,correct", [
    ("Left", "Left", True), ("left of the table", "Left", True), ("The mug is LEFT", "Left", True),
    ("Right", "Left", False), ("On", "On", True), ("on top", "On", True),
    ("In front", "On", False),  # "on" is inside "front": the special case
    ("front", "Front", True), ("", "Under", False), ("Under", "Under", True),
])
def test_whatsup_substring_rule(generation, gold, correct):
    assert whatsup_correct(generation, gold) is correct


@pytest.mark.parametrize("generation,label,correct", [
    ("Yes", 1, True), ("Yes, it is.", 1, True), ("yes", 1, False),  # case-sensitive, as AdaptVis
    ("No", 0, True), ("No.", 0, True), ("Yes", 0, False), ("no", 0, False),
])
def test_vsr_yes_no_rule(generation, label, correct):
    assert vsr_correct(generation, label) is correct


def test_tpr_tnr_harmonic_mean_by_hand():
    labels = [True, True, True, True, False, False]
    preds = [True, True, True, False, False, True]  # TPR 3/4, TNR 1/2
    assert tpr_tnr_harmonic_mean(preds, labels) == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert tpr_tnr_harmonic_mean([True] * 6, labels) == 0.0  # always "yes": TNR 0
    assert accuracy([p == t for p, t in zip(preds, labels)]) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="both true and false"):
        tpr_tnr_harmonic_mean([True], [True])
    with pytest.raises(ValueError, match="empty"):
        accuracy([])
