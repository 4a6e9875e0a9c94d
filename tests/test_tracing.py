"""The nnsight head site: reads match a plain torch hook, edits match a plain torch edit, empty is identity."""

import contextlib

import pytest
import torch

from conftest import FAMILIES
from vlmheads.tracing import edit_heads, read_heads, set_head


@contextlib.contextmanager
def o_proj_hooks(loaded, fn):
    """Reference path without nnsight: a forward pre-hook on every o_proj; fn(layer, z[B,S,H,D]) -> z or None."""
    g = loaded.geometry
    handles = []
    try:
        for layer in range(g.n_layers):
            def pre(module, args, layer=layer):
                z = args[0].unflatten(-1, (g.n_heads, g.head_dim))  # [B, S, H, D]
                out = fn(layer, z)
                return None if out is None else (out.flatten(-2),)
            handles.append(loaded.adapter.o_proj_module(loaded.model, layer).register_forward_pre_hook(pre))
        yield
    finally:
        for h in handles:
            h.remove()


def plain_logits(loaded, inputs):
    with torch.no_grad():
        return loaded.model(**inputs).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_edit_is_bit_identical(tiny_models, family):
    loaded, inputs = tiny_models(family)
    reference = plain_logits(loaded, inputs)
    assert torch.equal(edit_heads(loaded, inputs, {}).logits, reference)
    # reading every layer is not an edit either
    assert torch.equal(edit_heads(loaded, inputs, {}, read=range(2)).logits, reference)
    # writing a head's own value back is an identity too
    def write_back(z):
        z[:, :, 1] = z[:, :, 1].clone()
    assert torch.equal(edit_heads(loaded, inputs, {0: write_back, 1: write_back}).logits, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_read_heads_matches_plain_hook(tiny_models, family):
    loaded, inputs = tiny_models(family)
    captured = {}
    with o_proj_hooks(loaded, lambda layer, z: captured.__setitem__(layer, z.clone())):
        plain_logits(loaded, inputs)
    heads = read_heads(loaded, inputs)
    assert sorted(heads) == [0, 1]
    for layer, z in heads.items():
        assert z.shape == (*inputs["input_ids"].shape, 4, 8)  # [batch, pos, n_heads, head_dim]
        assert torch.equal(z, captured[layer])


def test_head_slices_are_the_columns_o_proj_mixes(tiny_models):
    """Hand check of the layout: o_proj(z) = sum over heads of z_h @ W[:, h*D:(h+1)*D]^T (+ bias)."""
    loaded, inputs = tiny_models("llava")
    layer = 1
    o_proj = loaded.adapter.o_proj_module(loaded.model, layer)
    seen = {}
    handle = o_proj.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out.clone()))
    try:
        z = read_heads(loaded, inputs, [layer])[layer]  # [B, S, H, D]
    finally:
        handle.remove()
    D = loaded.geometry.head_dim
    per_head = [z[:, :, h] @ o_proj.weight[:, h * D:(h + 1) * D].T for h in range(loaded.geometry.n_heads)]
    total = torch.stack(per_head).sum(0) + (o_proj.bias if o_proj.bias is not None else 0)
    torch.testing.assert_close(total, seen["out"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroing_a_head_matches_plain_hook(tiny_models, family):
    loaded, inputs = tiny_models(family)
    def zero_l1h2(layer, z):
        if layer == 1:
            z = z.clone()
            z[:, :, 2] = 0
            return z
    with o_proj_hooks(loaded, zero_l1h2):
        expected = plain_logits(loaded, inputs)
    got = edit_heads(loaded, inputs, {1: set_head(2, 0.0)}).logits
    assert torch.equal(got, expected)
    assert not torch.equal(got, plain_logits(loaded, inputs))


def test_edit_changes_only_the_edited_head_and_later_layers(tiny_models):
    loaded, inputs = tiny_models("qwen2_vl")
    clean = read_heads(loaded, inputs)
    result = edit_heads(loaded, inputs, {0: set_head(3, 1.5, positions=-1)}, read=[0, 1])
    edited, later = result.heads[0], result.heads[1]
    assert torch.all(edited[:, -1, 3] == 1.5)
    # every other head and position of layer 0 keeps its clean value
    mask = torch.ones_like(edited, dtype=torch.bool)
    mask[:, -1, 3] = False
    assert torch.equal(edited[mask], clean[0][mask])
    # causal attention: layer 1 changes only at the last position
    assert torch.equal(later[:, :-1], clean[1][:, :-1])
    assert not torch.equal(later[:, -1], clean[1][:, -1])


def test_edit_rejects_out_of_range_layer(tiny_models):
    loaded, inputs = tiny_models("llava")
    with pytest.raises(IndexError, match="model has 2 layers"):
        edit_heads(loaded, inputs, {5: set_head(0, 0.0)})
    with pytest.raises(IndexError):
        read_heads(loaded, inputs, [-1])
