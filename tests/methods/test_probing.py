"""The one multinomial probe trainer: it learns what is there, is the same from the same seed, and leaves
the global random generator where it was (it used to reseed it, twice)."""

from __future__ import annotations

import torch

from vlmheads.methods.probing import fit_softmax_probe


def _separable(n=60, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 5, generator=g) * 0.3
    x[torch.arange(n), y] += 3.0  # class c lifts feature c
    return x, y


def test_it_learns_separable_classes_and_the_seed_fixes_it():
    x, y = _separable()
    probe = fit_softmax_probe(x, y, 3, steps=100, weight_decay=1e-3, seed=4)
    again = fit_softmax_probe(x, y, 3, steps=100, weight_decay=1e-3, seed=4)
    first, other = (fit_softmax_probe(x, y, 3, steps=0, weight_decay=1e-3, seed=s) for s in (4, 5))
    with torch.no_grad():
        assert (probe(x).argmax(1) == y).all()
    assert torch.equal(probe.weight, again.weight) and not torch.equal(first.weight, other.weight)


def test_the_global_generator_is_left_as_it_was():
    x, y = _separable()
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    fit_softmax_probe(x, y, 3, steps=5, weight_decay=1e-3, seed=0)
    assert torch.equal(torch.rand(4), expected)
