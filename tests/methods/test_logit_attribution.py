"""Direct logit attribution: against a hand computation from the weights (the organism: o_proj's head
slices, RMSNorm's formula, z read through nnsight), on every family (the head parts add up to o_proj's
output), through Gemma's sandwich norm, and a planted writer that the method must find."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import FAMILIES
from vlmheads.methods.batches import OptionBatch, option_batches
from vlmheads.methods.logit_attribution import direct_effects, head_parts, head_roles, sandwich_norm
from vlmheads.models.adapter import resolve
from vlmheads.tracing import read_heads


def _fake_batch(loaded, inputs, seed=0):
    """Two options per row from the vocabulary, the first correct: enough to define the answer direction."""
    g = torch.Generator().manual_seed(seed)
    b = inputs["input_ids"].shape[0]
    vocab = resolve(loaded.model, loaded.adapter.lm_head).weight.shape[0]
    return OptionBatch(inputs=inputs, option_ids=torch.randint(0, vocab, (b, 2), generator=g),
                       answer=torch.zeros(b, dtype=torch.long), examples=())


def test_by_hand_on_the_organism(organism):
    batch = option_batches(organism, organism.examples(6, seed=2, function="spatial", split="controlled"), 6)[0]
    dla = direct_effects(organism, batch)  # [B, L, H]
    g, model = organism.geometry, organism.model
    z = read_heads(organism, batch.inputs)  # nnsight's view: {layer: [B, S, H, D]}
    seen = {}
    norm = resolve(model, organism.adapter.final_norm)
    handle = norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0][:, -1]))
    with torch.no_grad():
        logits = organism.last_logits(batch.inputs)
    handle.remove()
    x = seen["x"].float()  # [B, hidden]
    scale = norm.weight.float() / (x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()  # RMSNorm
    opts = logits.float().gather(1, batch.option_ids)
    wrong = batch.option_ids.gather(1, opts.scatter(1, batch.answer[:, None], float("-inf")).argmax(1, keepdim=True))[:, 0]
    correct = batch.option_ids.gather(1, batch.answer[:, None])[:, 0]
    w_u = model.lm_head.weight.float()
    direction = (w_u[correct] - w_u[wrong]) * scale  # [B, hidden]
    for layer in range(g.n_layers):
        w_o = organism.adapter.o_proj_module(model, layer).weight.float()  # [hidden, H * D]
        for head in range(g.n_heads):
            cols = slice(head * g.head_dim, (head + 1) * g.head_dim)
            part = z[layer][:, -1, head].float() @ w_o[:, cols].T  # [B, hidden]
            torch.testing.assert_close(dla[:, layer, head], (part * direction).sum(-1), atol=1e-4, rtol=1e-4)
    # the direct effects of every component add up to the logit difference: heads + the rest of the stream
    rest = x - sum(head_parts(organism.adapter.o_proj_module(model, l), z[l][:, -1]).sum(1) for l in range(g.n_layers))
    torch.testing.assert_close(dla.sum((1, 2)) + (rest * direction).sum(-1),
                               opts.gather(1, batch.answer[:, None])[:, 0] - logits.float().gather(1, wrong[:, None])[:, 0],
                               atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_head_parts_add_up_and_effects_are_finite(tiny_models, family):
    loaded, inputs = tiny_models(family)
    z = read_heads(loaded, inputs)
    for layer in range(loaded.geometry.n_layers):
        o_proj = loaded.adapter.o_proj_module(loaded.model, layer)
        last = z[layer][:, -1]  # [B, H, D]
        parts = head_parts(o_proj, last)  # [B, H, hidden]
        with torch.no_grad():
            whole = o_proj(last.flatten(-2)).float() - o_proj(torch.zeros_like(last.flatten(-2)[:1])).float()
        torch.testing.assert_close(parts.sum(1), whole, atol=1e-5, rtol=1e-4)
    dla = direct_effects(loaded, _fake_batch(loaded, inputs))
    assert dla.shape == (inputs["input_ids"].shape[0], loaded.geometry.n_layers, loaded.geometry.n_heads)
    assert torch.isfinite(dla).all() and dla.abs().sum() > 0


def test_gemma_s_sandwich_norm_is_on_the_path(tiny_models):
    """Gemma adds post_attention_layernorm(attention output) to the stream: summed over a layer's heads,
    the direct effects are that normed output's, read from the norm module itself."""
    loaded, inputs = tiny_models("gemma3")
    layers = resolve(loaded.model, loaded.adapter.layers)
    assert all(sandwich_norm(layer) is not None for layer in layers)
    batch = _fake_batch(loaded, inputs)
    dla = direct_effects(loaded, batch)
    seen, handles = {}, []
    for i, layer in enumerate(layers):
        handles.append(layer.post_attention_layernorm.register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(i, out[:, -1].float())))
    norm = resolve(loaded.model, loaded.adapter.final_norm)
    handles.append(norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0][:, -1])))
    with torch.no_grad():
        loaded.last_logits(batch.inputs)  # the pass the hooks read
        final_scale = norm(seen["x"][:, None])[:, 0].float() / seen["x"].float()
    for h in handles:
        h.remove()
    wrong = batch.option_ids[:, 1]  # two options, the first correct: the best wrong one is the other
    w_u = resolve(loaded.model, loaded.adapter.lm_head).weight.float()
    direction = (w_u[batch.option_ids[:, 0]] - w_u[wrong]) * final_scale
    for i in range(len(layers)):
        torch.testing.assert_close(dla[:, i].sum(-1), (seen[i] * direction).sum(-1), atol=1e-4, rtol=1e-3)


def test_a_planted_writer_is_found(organism):
    """A head of the last layer whose o_proj slice is made 30x larger writes 30x more straight into the
    stream (nothing after it but the last MLP reads it): the head with the largest direct effect is it."""
    batch = option_batches(organism, organism.examples(8, seed=3, function="relational", split="controlled"), 8)[0]
    before = direct_effects(organism, batch).mean(0).abs()  # [L, H]
    layer = organism.geometry.n_layers - 1
    head, d = int(before[layer].argmin()), organism.geometry.head_dim  # the last layer's weakest writer
    planted = copy.copy(organism)
    planted.model = copy.deepcopy(organism.model)
    with torch.no_grad():
        planted.adapter.o_proj_module(planted.model, layer).weight[:, head * d:(head + 1) * d] *= 30
    after = direct_effects(planted, batch).mean(0).abs()
    assert divmod(int(after.argmax()), after.shape[1]) == (layer, head)
    assert divmod(int(before.argmax()), before.shape[1]) != (layer, head)


def test_roles_by_hand():
    direct = torch.tensor([[3.0, 0.1], [-2.0, 0.0]])
    total = torch.tensor([[4.0, 5.0], [3.0, 0.0]])
    roles = head_roles([(0, 0), (0, 1), (1, 0), (1, 1)], direct, total)
    assert [roles[k]["role"] for k in ("L0H0", "L0H1", "L1H0", "L1H1")] == ["writing", "routing", "routing",
                                                                          "routing"]
    assert roles["L0H0"] == {"role": "writing", "direct": 3.0, "total": 4.0}
