"""Evaluation protocols that published numbers use (AdaptVis on WhatsUp and VSR).

* ``adaptvis_split``: AdaptVis tunes on a 20% validation sample and reports on the other 80%. The
  sample is ``random.seed(1); random.sample(range(N), int(0.2 * N))`` (sorted).
* ``whatsup_correct``: greedy generation scored by case-insensitive substring match with the gold
  word, except that gold "on" never matches a generation containing "front".
* ``vsr_correct``: label 1 is correct iff the generation contains "Yes", label 0 iff it contains
  "No" (case-sensitive, as in AdaptVis's code).
* ``tpr_tnr_harmonic_mean``: the number AdaptVis reports as VSR "F1". It is the harmonic mean of the
  true-positive rate and the true-negative rate, not the usual F1; outputs name it so.
"""

from __future__ import annotations

import random
from typing import Sequence
from ..errors import InputError

VALIDATION_SHARE = 0.2
PROTOCOL_SPLITS = ("val", "test")


def adaptvis_split(n: int, part: str) -> list[int]:
    """Sorted record indices of AdaptVis's validation (20%) or test (the other 80%) part."""
    if part not in PROTOCOL_SPLITS:
        raise InputError(f"unknown protocol split {part!r}; use 'val' (20%), 'test' (80%) or None (all records)")
    val = sorted(random.Random(1).sample(range(n), int(VALIDATION_SHARE * n)))
    if part == "val":
        return val
    chosen = set(val)
    return [i for i in range(n) if i not in chosen]


def whatsup_correct(generation: str, gold: str) -> bool:
    """AdaptVis's WhatsUp rule (gold is the capitalised answer word, e.g. "On")."""
    hit = gold in generation or gold.lower() in generation.lower()
    return hit and not (gold.lower() == "on" and "front" in generation.strip().lower())


def vsr_correct(generation: str, label: int) -> bool:
    """AdaptVis's VSR rule: "Yes" for true statements, "No" for false ones (case-sensitive)."""
    return ("Yes" in generation) if label == 1 else ("No" in generation)


def accuracy(correct: Sequence[bool]) -> float:
    if not correct:
        raise ValueError("accuracy of an empty set of answers is undefined")
    return sum(bool(c) for c in correct) / len(correct)


def tpr_tnr_harmonic_mean(predicted_true: Sequence[bool], label_true: Sequence[bool]) -> float:
    """AdaptVis's VSR "F1": 2 * TPR * TNR / (TPR + TNR). 0 when either rate is 0."""
    if len(predicted_true) != len(label_true):
        raise ValueError(f"{len(predicted_true)} predictions but {len(label_true)} labels")
    tp = sum(p and t for p, t in zip(predicted_true, label_true))
    tn = sum((not p) and (not t) for p, t in zip(predicted_true, label_true))
    n_pos = sum(bool(t) for t in label_true)
    n_neg = len(label_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the TPR/TNR harmonic mean needs both true and false statements")
    tpr, tnr = tp / n_pos, tn / n_neg
    return 0.0 if tpr + tnr == 0 else 2 * tpr * tnr / (tpr + tnr)
