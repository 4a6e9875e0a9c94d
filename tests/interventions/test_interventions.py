"""Interventions: identities bit for bit, a hand-computed attention case, cleanup, AdaptVis's rule."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data import organism_examples
from vlmheads.interventions import (Ablate, AdaptVis, Emphasize, RandomScaling, ScalingVis, adaptvis_alpha,
                                    adaptvis_logits, apply)
from vlmheads.sites import attention
from vlmheads.models import wrap_model
from vlmheads.testing import TINY_BUILDERS
from vlmheads.world.scenes import CLEAN


@pytest.fixture(scope="module")
def batch(organism):
    return organism.encode_examples(organism.examples(8, seed=4, function="relational", split="controlled"))


def _logits(loaded, inputs, ivs=()):
    with torch.no_grad(), apply(loaded, list(ivs), inputs=inputs):
        return loaded.model(**inputs).logits


@pytest.mark.parametrize("iv", [ScalingVis(1.0), ScalingVis(1.0, heads=[(0, 1)]), Emphasize([(1, 2), (3, 0)], 1.0),
                                Emphasize(None, 1.0), Ablate([]), Emphasize([], 5.0), RandomScaling(0.0),
                                RandomScaling(0.0, heads=[(1, 2)], seed=7)])
def test_identities_are_bit_identical(organism, batch, iv):
    assert torch.equal(_logits(organism, batch, [iv]), _logits(organism, batch))


@pytest.mark.parametrize("family", list(TINY_BUILDERS))
def test_scaling_identity_and_effect_on_every_family(family):
    model, inputs, processor = TINY_BUILDERS[family](gqa=True)
    loaded = wrap_model(model, processor)  # the inputs are given: no processor needed
    base = _logits(loaded, inputs)
    assert torch.equal(_logits(loaded, inputs, [ScalingVis(1.0)]), base)
    scaled = _logits(loaded, inputs, [ScalingVis(3.0)])
    assert torch.equal(scaled[:, :-1], base[:, :-1])  # only the last prompt query is scaled
    assert not torch.equal(scaled[:, -1], base[:, -1])
    assert model.config.get_text_config()._attn_implementation == "eager"  # restored


def test_hand_computed_attention_case():
    """One head, three keys (key 1 is an image token), alpha 2: softmax([s0, 2*s1, s2]) on the last row only."""
    q = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])  # [B=1, H=1, Q=2, D=2]
    k = torch.tensor([[[[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]]]])  # [1, 1, K=3, 2]
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]])
    scale = 2 ** -0.5
    mask = torch.zeros(1, 1, 2, 3)

    class Mod(torch.nn.Module):
        layer_idx = 0

    spec = attention.ScaleSpec(layers={0: None}, alpha=torch.tensor([2.0]),
                               image_keys=torch.tensor([[False, True, False]]), prompt_len=3)
    with attention.scaling(spec):
        out, probs = attention.scaled_attention(Mod().eval(), q, k, v, mask, scaling=scale)
    s_last = torch.tensor([0.5 * 1 + 1 * 1, 0.5 * 2, 1.0]) * scale  # q_last . k_j / sqrt(d)
    s_last[1] *= 2.0
    expected_last = torch.softmax(s_last, 0)
    s_first = torch.tensor([1.0, 2.0, 0.0]) * scale  # the first query row is not scaled
    torch.testing.assert_close(probs[0, 0, 1], expected_last)
    torch.testing.assert_close(probs[0, 0, 0], torch.softmax(s_first, 0))
    torch.testing.assert_close(out[0, 1, 0], expected_last @ v[0, 0])


def test_random_attention_factors_by_hand():
    """The random-attention control on a hand case: two heads, four keys (keys 1 and 2 are image tokens).
    From the last row's probabilities each key's factor is read back (log p_j - log p_0 = f_j s_j - s_0):
    the text keys keep factor 1, each image key gets its own factor within [e^-s, e^s], the two heads draw
    different factors, the same seed draws the same ones and another seed others."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)  # [B, H, Q/K, D]
    mask, image = torch.zeros(1, 1, 2, 4), torch.tensor([[False, True, True, False]])
    spread, scale = 0.5, 0.5

    class Mod(torch.nn.Module):
        layer_idx = 0

    def factors(seed):
        spec = attention.ScaleSpec(layers={0: None}, alpha=torch.tensor([1.0]), image_keys=image, prompt_len=4,
                                   noise=(spread, seed))
        with attention.scaling(spec):
            _, probs = attention.scaled_attention(Mod().eval(), q, k, v, mask, scaling=scale)
        s = (q[0, :, -1:] @ k[0].transpose(1, 2))[:, 0] * scale  # [H, K] unscaled last-row logits
        logp = probs[0, :, -1].double().log()  # [H, K]
        # softmax is shift-invariant: f_j s_j = log p_j - log p_0 + s_0 (key 0 is text: factor 1)
        return (logp - logp[:, :1] + s[:, :1].double()) / s.double()  # [H, K]

    f = factors(seed=3)
    torch.testing.assert_close(f[:, [0, 3]], torch.ones(2, 2, dtype=torch.float64), atol=1e-4, rtol=0)
    image_f = f[:, [1, 2]]
    assert bool((image_f.log().abs() <= spread + 1e-4).all()) and bool(((image_f - 1).abs() > 1e-3).all())
    assert abs(float(image_f[0, 0] - image_f[1, 0])) > 1e-3  # a factor of its own per head
    torch.testing.assert_close(factors(seed=3), f)
    assert not torch.allclose(factors(seed=4)[:, [1, 2]], image_f, atol=1e-3)
    expected = attention.random_factors((spread, 3), 0, torch.empty(1, 2, 4))[0][:, [1, 2]].double()
    torch.testing.assert_close(image_f, expected, atol=1e-4, rtol=1e-4)


def test_random_attention_touches_only_its_heads(organism, batch):
    """RandomScaling on one head changes that head's output at the last position and no other head's."""
    o_proj = organism.adapter.o_proj_module(organism.model, 1)
    seen = {}
    handle = o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__(len(seen), a[0].detach().clone()))
    try:
        _logits(organism, batch)
        _logits(organism, batch, [RandomScaling(1.0, heads=[(1, 2)], seed=1)])
    finally:
        handle.remove()
    g = organism.geometry
    base, noisy = (seen[i].view(*seen[i].shape[:2], g.n_heads, g.head_dim) for i in (0, 1))
    changed = (base[:, -1] != noisy[:, -1]).any(-1).any(0)  # [H] at the last position, layer 1
    assert changed.tolist() == [h == 2 for h in range(g.n_heads)]
    assert torch.equal(base[:, :-1], noisy[:, :-1])


def test_heads_are_selected_and_others_untouched(organism, batch):
    """Head-selective scaling on one head changes only what that head can reach."""
    captured = {}

    def grab(name):
        def hook(mod, args):
            captured[name] = args[0].detach().clone()
        return hook

    o_proj = organism.adapter.o_proj_module(organism.model, 0)
    handle = o_proj.register_forward_pre_hook(grab("base"))
    _logits(organism, batch)
    handle.remove()
    handle = o_proj.register_forward_pre_hook(grab("scaled"))
    _logits(organism, batch, [ScalingVis(0.2, heads=[(0, 3)])])
    handle.remove()
    g = organism.geometry
    base = captured["base"].view(*captured["base"].shape[:2], g.n_heads, g.head_dim)
    scaled = captured["scaled"].view_as(base)
    changed = (base[:, -1] != scaled[:, -1]).any(-1).any(0)  # [H] at the last position, layer 0
    assert changed.tolist() == [h == 3 for h in range(g.n_heads)]


def test_ablate_and_emphasize_by_hand(organism, batch):
    g = organism.geometry
    seen = {}

    def hook(mod, args):
        seen["z"] = args[0].detach().view(*args[0].shape[:2], g.n_heads, g.head_dim).clone()

    handle = organism.adapter.o_proj_module(organism.model, 2).register_forward_pre_hook(hook)
    try:
        _logits(organism, batch)
        clean = seen["z"]  # layer 2's head outputs, unmodified
    finally:
        handle.remove()
    # under the interventions o_proj must see: emphasised head x3, ablated head 0, the rest unchanged
    o_proj = organism.adapter.o_proj_module(organism.model, 2)
    z = clean.clone()
    z[:, :, 1] *= 3.0
    z[:, :, 4] = 0
    with torch.no_grad():
        expected = o_proj(z.flatten(-2))
        got = {}
        h2 = o_proj.register_forward_hook(lambda m, a, o: got.__setitem__("out", o.detach().clone()))
        try:
            with apply(organism, [Emphasize([(2, 1)], 3.0), Ablate([(2, 4)])], inputs=batch):
                organism.model(**batch)
        finally:
            h2.remove()
    torch.testing.assert_close(got["out"], expected, atol=1e-5, rtol=1e-5)


def test_cleanup_on_error_and_bad_input(organism, batch):
    o_proj = organism.adapter.o_proj_module(organism.model, 1)
    before = len(o_proj._forward_pre_hooks)
    with pytest.raises(RuntimeError, match="boom"):
        with apply(organism, [Emphasize([(1, 1)], 2.0), ScalingVis(2.0)], inputs=batch):
            raise RuntimeError("boom")
    assert len(o_proj._forward_pre_hooks) == before
    assert organism.model.config.get_text_config()._attn_implementation == "eager"
    assert attention._SPEC.get() is None
    with pytest.raises(IndexError, match="layer 7 out of range"):
        with apply(organism, [Ablate([(7, 0)])]):
            pass
    with pytest.raises(ValueError, match="one attention-logit intervention"):
        with apply(organism, [ScalingVis(2.0), AdaptVis()]):
            pass


def test_adaptvis_rule_and_shared_prefix(organism, batch):
    iv = AdaptVis(alpha_low=0.5, alpha_high=1.5, threshold=0.6)
    assert adaptvis_alpha(torch.tensor([0.594, 0.595, 0.9, 0.1]), iv).tolist() == [0.5, 1.5, 1.5, 0.5]
    shared, conf, alpha = adaptvis_logits(organism, batch, iv, shared_prefix=True)
    two, conf2, alpha2 = adaptvis_logits(organism, batch, iv, shared_prefix=False)
    torch.testing.assert_close(shared, two, atol=1e-4, rtol=1e-4)
    assert torch.equal(alpha, alpha2)
    plain = _logits(organism, batch)[:, -1]
    torch.testing.assert_close(conf, plain.float().softmax(-1).max(-1).values, atol=1e-5, rtol=1e-5)
    same, _, _ = adaptvis_logits(organism, batch, AdaptVis(1.0, 1.0, 0.5))
    torch.testing.assert_close(same, plain.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family,window", [(f, None) for f in TINY_BUILDERS] + [("qwen2_vl", 4)])
def test_shared_prefix_adaptvis_on_every_family(family, window):
    """The KV-cached prefix + one-token step equals two full passes on every family: M-RoPE models get
    the prompt's own 3-D positions (the step once got positions for the whole mask and crashed), and a
    cache that cannot be cropped (sliding-window layers past their window) is rebuilt instead."""
    model, inputs, processor = TINY_BUILDERS[family](gqa=True, **({"sliding_window": window} if window else {}))
    loaded = wrap_model(model, processor)  # the inputs are given: no processor needed
    for heads in (None, [(0, 1), (1, 3)]):
        iv = AdaptVis(0.5, 8.0, threshold=0.0, heads=heads)  # threshold 0: every row sharpened, so it acts
        shared, conf, alpha = adaptvis_logits(loaded, inputs, iv)
        two, conf2, alpha2 = adaptvis_logits(loaded, inputs, iv, shared_prefix=False)
        torch.testing.assert_close(shared, two, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conf, conf2, atol=1e-6, rtol=1e-6)
        assert (shared - _logits(loaded, inputs)[:, -1].float()).abs().max() > 1e-5  # tiny random logits move little


def test_scalingvis_in_generate_acts_on_prefill_only(organism, batch):
    with torch.no_grad():
        plain = organism.model.generate(**batch, max_new_tokens=3, do_sample=False)
        with apply(organism, [ScalingVis(1.0)], inputs=batch):
            same = organism.model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert torch.equal(plain, same)


def test_vision_boost_identity_projection_and_cleanup(organism, batch):
    from vlmheads.interventions import VisionBoost
    from vlmheads.methods.directions import layout_directions

    examples = organism_examples(32, seed=8, function="relational", split="controlled", rendering=CLEAN)
    directions, accuracy = layout_directions(organism, examples)
    assert directions.shape == (4, 128) and 0 <= accuracy <= 1
    torch.testing.assert_close(directions @ directions.T, torch.eye(4), atol=1e-5, rtol=0)
    assert torch.equal(_logits(organism, batch, [VisionBoost(0.0, directions)]), _logits(organism, batch))
    seen = {}
    first = organism.model.model.language_model.layers[0]

    def grab(m, a, k):
        seen["h"] = (a[0] if a else k["hidden_states"]).clone()

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        _logits(organism, batch)
    finally:
        handle.remove()
    clean = seen["h"]
    with torch.no_grad(), apply(organism, [VisionBoost(2.0, directions)], inputs=batch):
        handle = first.register_forward_pre_hook(grab, with_kwargs=True)  # runs after the boost's hook
        try:
            organism.model(**batch)
        finally:
            handle.remove()
    image = organism.image_token_mask(batch)
    h = clean[image]
    torch.testing.assert_close(seen["h"][image], h + 2.0 * (h @ directions.T) @ directions, atol=1e-5, rtol=1e-5)
    assert torch.equal(seen["h"][~image], clean[~image])  # text tokens untouched
    assert len(first._forward_pre_hooks) == 0  # removed after the block
    with pytest.raises(ValueError, match=r"\[r, hidden_size\]"):
        with apply(organism, [VisionBoost(1.0, torch.ones(3))], inputs=batch):
            pass


def test_steer_identity_by_hand_and_too_few_errors(organism, batch):
    from vlmheads.interventions import Steer
    from vlmheads.methods.directions import steering_directions

    direction = torch.zeros(16)
    direction[3] = 1.0
    steer = {(2, 5): (direction, 0.5)}
    assert torch.equal(_logits(organism, batch, [Steer(0.0, steer)]), _logits(organism, batch))
    o_proj = organism.adapter.o_proj_module(organism.model, 2)
    seen = {}
    handle = o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0].detach().clone()))
    try:
        _logits(organism, batch)
        clean = seen["z"].view(*seen["z"].shape[:2], 8, 16)
        with torch.no_grad(), apply(organism, [Steer(4.0, steer)], inputs=batch):
            handle.remove()
            handle = o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0].detach().clone()))
            organism.model(**batch)
    finally:
        handle.remove()
    steered = seen["z"].view_as(clean)
    expected = clean.clone()
    expected[:, -1, 5, 3] += 4.0 * 0.5  # alpha * std * direction, last position, that head only
    torch.testing.assert_close(steered, expected, atol=1e-6, rtol=0)
    examples = organism_examples(24, seed=2, function="relational", split="controlled", rendering=CLEAN)
    with pytest.raises(ValueError, match=r"answers 2[0-9] of 24 examples correctly"):
        steering_directions(organism, examples, [(0, 4)])


def test_steering_directions_on_a_model_that_errs():
    from vlmheads.methods.directions import steering_directions

    model, _, processor = TINY_BUILDERS["llava"](gqa=False)
    loaded = wrap_model(model, processor)  # random weights: right about a quarter of the time
    examples = organism_examples(40, seed=0, function="spatial", split="controlled", rendering=CLEAN)
    found = steering_directions(loaded, examples, [(1, 2), (0, 1)])
    for direction, std in found.values():
        assert direction.shape == (8,) and abs(float(direction.norm()) - 1) < 1e-5 and std > 0


def test_the_public_api_form_finds_the_batch_itself(organism, batch):
    """``with apply(loaded, [ScalingVis(alpha=2.0)]): loaded.model(**inputs)``: no inputs= needed."""
    given = _logits(organism, batch, [ScalingVis(2.0)])
    with torch.no_grad(), apply(organism, [ScalingVis(alpha=2.0)]):
        found = organism.model(**batch).logits
    assert torch.equal(found, given)
    iv = AdaptVis(0.5, 1.5, threshold=1.0)  # the organism is confident: rows at 1.00 sharpen, the rest smooth
    expected, _, alpha = adaptvis_logits(organism, batch, iv, shared_prefix=False)
    assert not torch.equal(expected, _logits(organism, batch)[:, -1].float())
    with torch.no_grad(), apply(organism, [iv]):
        got = organism.model(**batch).logits[:, -1].float()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), apply(organism, [ScalingVis(0.0)]):  # in generate: the prefill call sets the batch
        ids = organism.model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert ids.shape == (batch["input_ids"].shape[0], batch["input_ids"].shape[1] + 2)
    assert attention._SPEC.get() is None


def test_scaling_on_an_sdpa_model_keeps_sdpa_where_nothing_is_scaled(batch):
    """On a model loaded with SDPA, ScalingVis computes eager attention only where it scales; it matches the
    eager-loaded model to rounding, and the implementation is SDPA again afterwards."""
    from vlmheads import load_model

    sdpa, eager = load_model("organism-competent", attn_implementation="sdpa"), load_model("organism-competent")
    for ivs in ([ScalingVis(2.0, heads=[(2, 1)])], [ScalingVis(0.5)]):
        torch.testing.assert_close(_logits(sdpa, batch, ivs), _logits(eager, batch, ivs), atol=1e-4, rtol=1e-4)
    assert sdpa.model.config.get_text_config()._attn_implementation == "sdpa"
    assert attention.FALLBACK.get() == "eager"  # the context variable is reset too


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scaling_on_an_sdpa_model_computes_eager_scores_for_the_last_row_only(dtype, monkeypatch):
    """ScalingVis scales only the last query's row, so on an SDPA model the other rows stay SDPA in the
    scaled layers too: the eager product is ``[B, H, 1, K]``, never ``[B, H, Q, K]``; the logits match the
    eager-everywhere path's to the rounding that separates SDPA from eager (in float32 and bf16)."""
    from vlmheads import load_model

    sdpa = load_model("organism-competent", attn_implementation="sdpa", dtype=dtype)
    eager = load_model("organism-competent", dtype=dtype)
    inputs = sdpa.encode_examples(sdpa.examples(4, seed=4, function="relational"))
    rows, real = [], torch.matmul

    def spy(a, b, *args, **kwargs):
        out = real(a, b, *args, **kwargs)
        if out.dim() == 4 and out.shape[-1] == inputs["input_ids"].shape[1]:
            rows.append(out.shape[-2])  # query rows of an eager score or probability product
        return out

    monkeypatch.setattr(attention.torch, "matmul", spy)
    got = _logits(sdpa, inputs, [ScalingVis(2.0, heads=[(2, 1)])])
    monkeypatch.undo()
    assert rows == [1], rows  # one scaled layer: one eager product, of the last row alone
    monkeypatch.setattr(attention, "_own_is_not_eager", lambda: False)  # every row eager, as before
    whole = _logits(sdpa, inputs, [ScalingVis(2.0, heads=[(2, 1)])])
    monkeypatch.undo()
    expected = _logits(eager, inputs, [ScalingVis(2.0, heads=[(2, 1)])])
    if dtype == torch.float32:
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # the split changes SDPA's rows by nothing and the last row by eager-vs-SDPA rounding only
    gap = (got[:, -1].float() - whole[:, -1].float()).abs().max()
    rounding = (_logits(sdpa, inputs)[:, -1].float() - _logits(eager, inputs)[:, -1].float()).abs().max()
    assert gap <= 2 * rounding + 1e-5, (float(gap), float(rounding))
    assert not torch.equal(got[:, -1], _logits(sdpa, inputs)[:, -1])


def test_an_attention_switch_that_changes_nothing_is_an_error(organism, batch, monkeypatch):
    """A model whose text decoder does not take the registered attention (e.g. no separate text_config)
    would run ScalingVis as a silent no-op: the block ends in an error naming the reason instead."""
    import contextlib

    from vlmheads.interventions import InterventionError, installation

    monkeypatch.setattr(installation, "text_attention", lambda loaded, name: contextlib.nullcontext())
    with pytest.raises(InterventionError, match="ScalingVis changed nothing on organism"):
        with torch.no_grad(), apply(organism, [ScalingVis(2.0)], inputs=batch):
            organism.model(**batch)
    with apply(organism, [ScalingVis(2.0)], inputs=batch):  # no forward pass in the block: nothing to judge
        pass
