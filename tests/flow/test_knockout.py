"""Attention knockout: the identity, the edge classes by hand, and a model whose answer has one known route."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data import organism_examples
from vlmheads.flow import EDGES, edge_mask, knockout, knockout_drops, windows
from vlmheads.flow.knockout import object_tokens
from vlmheads.methods.batches import option_batches
from vlmheads.models import wrap_model
from vlmheads.testing import TINY_BUILDERS


def test_edge_classes_by_hand():
    #            pad  txt  img  img  img  q1   q2   last
    image = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    attn = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]])
    objects = torch.tensor([[0, 0, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    m = edge_mask("image->answer", image, attn)
    assert m[0, 7].tolist() == [False, False, True, True, True, False, False, False] and m[0, :7].sum() == 0
    m = edge_mask("image->question", image, attn)
    assert m[0, 5, 2:5].all() and m[0, 6, 2:5].all() and m.sum() == 6  # q1, q2 x 3 image tokens
    m = edge_mask("question->answer", image, attn)
    assert m[0, 7].tolist() == [False] * 5 + [True, True, False]  # never the answer position itself
    assert edge_mask("object->answer", image, attn, objects)[0, 7].nonzero().flatten().tolist() == [3]
    assert edge_mask("background->answer", image, attn, objects)[0, 7].nonzero().flatten().tolist() == [2, 4]
    with pytest.raises(ValueError, match="scene layouts"):
        edge_mask("object->answer", image, attn)
    assert windows(4, 2) == [(0, 2), (1, 3), (2, 4)]
    with pytest.raises(ValueError, match="window size"):
        windows(4, 5)


def test_blocking_nothing_is_bit_identical(organism):
    batch = option_batches(organism, organism.examples(8, seed=0, function="relational", split="controlled"), 8)[0]
    image = organism.image_token_mask(batch.inputs)
    nothing = torch.zeros(*image.shape, image.shape[1], dtype=torch.bool)
    with torch.no_grad():
        plain = organism.model(**batch.inputs).logits
        with knockout(organism, range(4), nothing):
            cut = organism.model(**batch.inputs).logits
    assert torch.equal(plain, cut)
    assert organism.model.config.get_text_config()._attn_implementation == "eager"


def test_the_answer_has_one_route_in_a_hand_made_model():
    """Tiny LLaVA where only layer 1's head 2 writes anything: context reaches the answer position only
    through layer 1's attention from the answer position. Cutting image->answer there changes the answer;
    cutting it in layer 0, or cutting image->question anywhere, changes nothing at the answer position."""
    model, _, processor = TINY_BUILDERS["llava"](gqa=True, seed=3)
    loaded = wrap_model(model, processor)
    g = loaded.geometry
    with torch.no_grad():
        for layer in range(g.n_layers):
            w = loaded.adapter.o_proj_module(model, layer).weight
            for h in range(g.n_heads):
                if (layer, h) != (1, 2):
                    w[:, h * g.head_dim:(h + 1) * g.head_dim] = 0
            w *= 40
    batches = option_batches(loaded, loaded.examples(8, seed=1, function="relational", split="controlled"), 8)
    assert knockout_drops(loaded, batches, "image->answer", [1]).abs().max() > 1e-3
    assert knockout_drops(loaded, batches, "image->answer", [0]).abs().max() == 0
    assert knockout_drops(loaded, batches, "image->question", [0, 1]).abs().max() == 0


def test_on_the_organism_the_relation_reaches_the_answer_from_the_objects(organism):
    """Measured here: cutting image->answer in every layer drops relational accuracy by about two thirds;
    the objects' two patches carry most of it, the background little."""
    batches = option_batches(organism, organism.examples(64, seed=0, function="relational", split="controlled"), 32)
    every = range(organism.geometry.n_layers)
    image = float(knockout_drops(organism, batches, "image->answer", every, "accuracy").mean())
    objects = float(knockout_drops(organism, batches, "object->answer", every, "accuracy").mean())
    background = float(knockout_drops(organism, batches, "background->answer", every, "accuracy").mean())
    assert image > 0.5 and objects > 0.4 and background < 0.25 and objects > 2 * background
    assert object_tokens(organism, batches[0]).sum(1).tolist() == [2] * 32


@pytest.mark.parametrize("family", list(TINY_BUILDERS))
def test_knockout_runs_on_every_family(family):

    model, inputs, processor = TINY_BUILDERS[family](gqa=True)
    loaded = wrap_model(model, processor)  # the inputs are given: no processor needed
    image = loaded.image_token_mask(inputs)
    blocked = edge_mask("image->answer", image, inputs["attention_mask"])
    with torch.no_grad():
        plain = model(**inputs).logits[:, -1]
        with knockout(loaded, range(loaded.geometry.n_layers), blocked):
            cut = model(**inputs).logits[:, -1]
    assert not torch.allclose(plain, cut) and set(EDGES) >= {"image->answer"}


def test_object_tokens_follow_the_models_rendering(prior_organism):
    """The default organism sees the scenes on the wide canvas (9x9 patches, objects on patches 1, 3, 5, 7):
    each queried object maps to the image token of its own patch, which is the patch its pixels fill."""
    from vlmheads.flow.knockout import object_positions

    examples = organism_examples(8, seed=2, function="relational", split="controlled",
                                 rendering=prior_organism.rendering)
    batch = option_batches(prior_organism, examples, 8)[0]
    positions = object_positions(prior_organism, batch)  # [8, 2]
    image = prior_organism.image_token_mask(batch.inputs)  # [8, S]
    for row, example in enumerate(batch.examples):
        tokens = image[row].nonzero()[:, 0]  # [81] raster order over the 9x9 patches
        for k, (_, r, c) in enumerate(example.meta["layout"][:2]):
            assert positions[row, k] == tokens[(2 * r + 1) * 9 + (2 * c + 1)]


@pytest.mark.parametrize("family", list(TINY_BUILDERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_patch_knockout_on_a_shared_prefix_matches_a_pass_per_patch(family, dtype, monkeypatch):
    """Rollout's per-patch knockout runs the prompt minus its last token once into a KV cache and the last
    token once per few patches; that equals cutting the patch in a whole prompt pass per patch (to
    float32 rounding; bf16: within its rounding of the logits' scale), on every family, without falling
    back to the pass-per-patch path."""
    from vlmheads.flow import rollout as rollout_module
    from vlmheads.methods.batches import OptionBatch
    from vlmheads.methods.sweep import check_tolerance

    model, inputs, processor = TINY_BUILDERS[family](gqa=True)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():  # not Llama4's complex rotary table
            tensor.data = tensor.data.to(dtype)
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    loaded = wrap_model(model, processor)
    image = loaded.image_token_mask(inputs)
    if len(set(image.sum(1).tolist())) > 1:
        pytest.skip("rows with different numbers of image tokens (rollout skips them)")
    n = inputs["input_ids"].shape[0]
    batch = OptionBatch(inputs=inputs, option_ids=torch.tensor([[3, 5]] * n), answer=torch.tensor([0, 1] * n)[:n],
                        examples=())
    full = rollout_module._patch_knockout_full(loaded, batch)
    monkeypatch.setattr(rollout_module, "_patch_knockout_full", lambda *a: pytest.fail("fell back to full passes"))
    shared = rollout_module.patch_knockout(loaded, batch, rows=4)  # 2 patches a pass; odd counts end uneven
    assert shared.shape == full.shape == (n, int(image[0].sum()))
    with torch.no_grad():
        scale = loaded.last_logits(inputs)
    atol, _ = check_tolerance(dtype, scale)
    torch.testing.assert_close(shared, full, atol=2 * atol if dtype != torch.float32 else 1e-5, rtol=0)
    assert float(full.abs().max()) > 0  # the cuts do something
