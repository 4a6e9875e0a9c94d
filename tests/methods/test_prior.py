"""The prior locator: the split, the net share by hand, and its flips checked against a plain forward pass
with the head zeroed at the answer position (a hook, not the layer sweep the method runs)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from vlmheads import site
from vlmheads.methods.batches import metric, option_batches
from vlmheads.methods.prior import net_interval, prior_effects, prior_split


def test_split_by_the_examples_own_mark():
    ex = [SimpleNamespace(meta={"prior": p}) for p in ("violating", "neutral", "consistent", "violating")] + \
        [SimpleNamespace(meta={})]
    violating, grounded = prior_split(ex)
    assert len(violating) == 2 and len(grounded) == 2  # unmarked examples are in neither


def test_net_is_flip_share_minus_break_share():
    flip = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]])  # [4, L=1, H=2]
    broken = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]])  # [2, 1, 2]
    net, low, high = net_interval(flip, broken, n_boot=200, seed=0)
    torch.testing.assert_close(net, torch.tensor([[0.75, 0.25 - 0.5]]))
    assert (low <= net).all() and (net <= high).all() and (low >= -1).all() and (high <= 1).all()


def test_flips_match_a_plain_pass_with_the_head_zeroed_at_the_answer(prior_organism):
    loaded = prior_organism
    examples = loaded.examples(96, seed=5, function="relational", split="controlled")
    violating, grounded = prior_split(examples)
    r = prior_effects(loaded, violating, grounded, "answer", batch_size=32)
    assert len(r.flip) > 0 and r.flip.shape[1:] == (loaded.geometry.n_layers, loaded.geometry.n_heads)
    assert set(r.flip.unique().tolist()) <= {0.0, 1.0} and set(r.broken.unique().tolist()) <= {0.0, 1.0}
    layer, head = divmod(int(r.flip.mean(0).argmax()), loaded.geometry.n_heads)  # the best flipper
    batch = option_batches(loaded, violating, 64)
    flipped = []
    for b in batch:
        with torch.no_grad():
            before = metric(loaded.last_logits(b.inputs), b.option_ids, b.answer, "accuracy")

            def zero_answer(z):
                z[:, -1, head] = 0.0
            with site.hook(loaded, layer, zero_answer):
                after = metric(loaded.last_logits(b.inputs), b.option_ids, b.answer, "accuracy")
        flipped.append(after[before == 0])
    assert torch.equal(torch.cat(flipped), r.flip[:, layer, head])
