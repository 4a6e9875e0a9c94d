"""The head site: hand-computed edits, the one ablation, hooks that read exactly what o_proj reads and clean up."""

from __future__ import annotations

import pytest
import torch

from vlmheads import site
from vlmheads.methods.batches import option_batches
from vlmheads.methods.effects import ablation_effects
from vlmheads.methods.checks import correct_under
from vlmheads.tracing import read_heads


@pytest.fixture(scope="module")
def batch(organism):
    return organism.encode_examples(organism.examples(6, seed=2, function="spatial", split="controlled"))


def test_edits_by_hand():
    z = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).view(2, 3, 4, 2)  # [B, S, H, D]
    a = z.clone()
    site.replace_(a, [1, 3], 0.0, positions=site.LAST)
    assert a[:, -1, [1, 3]].abs().sum() == 0 and torch.equal(a[:, :-1], z[:, :-1])
    assert torch.equal(a[:, -1, [0, 2]], z[:, -1, [0, 2]])
    b = z.clone()
    site.scale_(b, [2], 0.5)
    assert torch.equal(b[:, :, 2], z[:, :, 2] * 0.5) and torch.equal(b[:, :, 3], z[:, :, 3])
    c = z.clone()
    site.add_(c, [0], torch.tensor([1.0, -1.0]), positions=[0, 2])
    assert torch.equal(c[:, [0, 2], 0], z[:, [0, 2], 0] + torch.tensor([1.0, -1.0]))
    assert torch.equal(c[:, 1], z[:, 1])


def test_ablation_is_defined_once():
    z_head = torch.arange(3 * 2 * 2, dtype=torch.float32).view(3, 2, 2)  # [B, S, D]
    means = torch.full((4, 8, 2), 7.0)
    assert site.ablation_value("zero", z_head, 0, 0) == 0.0
    assert torch.equal(site.ablation_value("mean", z_head, 1, 5, means), torch.full((2,), 7.0))
    assert torch.equal(site.ablation_value("resample", z_head, 0, 0), z_head[[2, 0, 1]])  # rows rolled by one
    with pytest.raises(site.AblationError, match="unknown ablation mode 'median'"):
        site.ablation_value("median", z_head, 0, 0)


def test_read_matches_the_nnsight_trace_and_hooks_clean_up(organism, batch):
    z, _ = site.read(organism, batch, layers=[0, 3])
    traced = read_heads(organism, batch, layers=[0, 3])
    assert torch.equal(z[0], traced[0]) and torch.equal(z[3], traced[3])
    o_proj = organism.adapter.o_proj_module(organism.model, 2)
    with pytest.raises(RuntimeError), site.hook(organism, 2, lambda z: None):
        assert len(o_proj._forward_pre_hooks) == 1
        raise RuntimeError("the body fails")
    assert not o_proj._forward_pre_hooks


def test_empty_hook_is_bit_identical(organism, batch):
    with torch.no_grad():
        plain = organism.model(**batch).logits
        with site.hooks(organism, {layer: (lambda z: None) for layer in range(4)}):
            hooked = organism.model(**batch).logits
    assert torch.equal(plain, hooked)


@pytest.mark.parametrize("mode", ["zero", "resample"])
def test_the_sweep_and_the_check_ablate_the_same_way(organism, mode):
    """ablation_effects (restarted sweep) and correct_under (the Ablate intervention) agree head by head."""
    batches = option_batches(organism, organism.examples(8, seed=3, function="spatial", split="controlled"), 8)
    effects = ablation_effects(organism, batches, mode, metric_name="accuracy").effects  # [N, L, H]
    base = correct_under(organism, batches, [])
    for layer, head in [(0, 4), (2, 1), (3, 7)]:
        ablated = correct_under(organism, batches, [(layer, head)], mode=mode)
        assert torch.allclose(base - ablated, effects[:, layer, head])
