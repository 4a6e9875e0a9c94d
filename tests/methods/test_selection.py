"""Selection rules and summary numbers on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from vlmheads.methods.probing import probe_scores
from vlmheads.methods.selection import bootstrap_ci, elbow_k, measured, ranked, sparsity, specificity, top_k


def test_ranking_topk_and_k_errors():
    s = torch.tensor([[0.1, 5.0], [3.0, 0.2]])
    assert ranked(s) == [(0, 1), (1, 0), (1, 1), (0, 0)]
    assert top_k(s, 2) == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match=r"k=5 is out of range: the model has 4 heads \(2 layers x 2\)"):
        top_k(s, 5)


def test_elbow_and_sparsity_by_hand():
    s = torch.tensor([[10.0, 9.0, 1.0, 0.5, 0.2, 0.0]])
    assert elbow_k(s) == 2
    assert elbow_k(s, max_k=1) == 1
    assert sparsity(s) == pytest.approx(2 / 6)  # 10 + 9 = 19 >= 0.8 * 20.7
    assert sparsity(torch.tensor([[1.0, 1.0, 1.0, 1.0]])) == pytest.approx(4 / 4)
    # a screen verified 4 of 8 heads: the fraction is of those 4, the unmeasured ones are not zeros
    nan = float("nan")
    screened = torch.tensor([[10.0, nan, 1.0, nan], [nan, 1.0, nan, 0.0]])
    assert sparsity(screened) == pytest.approx(1 / 4) and measured(screened) == 4
    assert sparsity(torch.full((2, 2), nan)) != sparsity(torch.full((2, 2), nan))  # nothing measured: NaN
    assert elbow_k(torch.ones(2, 2)) == 1


def test_specificity_and_bootstrap():
    sets = {"a": [(0, 0), (0, 1)], "b": [(0, 1), (1, 1)], "c": [(2, 2)]}
    spec = specificity(sets)
    assert spec == {"a|b": pytest.approx(1 / 3), "a|c": 0.0, "b|c": 0.0}
    x = torch.tensor([[1.0], [1.0], [1.0]])
    lo, hi = bootstrap_ci(x)
    assert float(lo) == float(hi) == 1.0
    lo, hi = bootstrap_ci(torch.tensor([[0.0], [1.0]] * 50))
    assert float(lo) < 0.5 < float(hi)


def test_probe_finds_the_one_informative_head():
    g = torch.Generator().manual_seed(0)
    n = 200
    labels = ["spatial_perception" if i % 2 else "decision_making" for i in range(n)]
    feats = torch.randn(n, 2, 3, 4, generator=g)
    feats[:, 1, 2, 0] += torch.tensor([3.0 if lab == "spatial_perception" else -3.0 for lab in labels])
    scores = probe_scores(feats, labels, "spatial_perception")
    assert scores[1, 2] > 0.95
    others = scores.clone()
    others[1, 2] = 0
    assert others.max() < 0.75
    with pytest.raises(ValueError, match="at least two examples"):
        probe_scores(feats[:3], labels[:3], "math_reasoning")
