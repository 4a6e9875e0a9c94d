import pytest
import torch

from conftest import FAMILIES
from vlmheads.models import ADAPTERS, AdapterError, HeadGeometry, UnsupportedModelError, find_adapter, wrap_model
from vlmheads.models.adapter import resolve
from vlmheads.testing.tiny import tiny_llava

# image placeholder tokens per row in each tiny model's inputs (see vlmheads.testing.tiny)
EXPECTED_IMAGE_TOKENS = {"llava": 16, "llava_next": 55, "qwen2_vl": 4, "qwen2_5_vl": 4, "idefics3": 4, "smolvlm": 4,
                         "gemma3": 4, "internvl": 20, "mistral3": 4, "llava_onevision": 36, "qwen3_vl": 4, "llama4": 20}


@pytest.mark.parametrize("gqa", [True, False], ids=["gqa", "mha"])
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_resolves_paths_and_geometry(tiny_models, family, gqa):
    loaded, inputs = tiny_models(family, gqa)
    assert loaded.adapter.family == family
    assert loaded.geometry == HeadGeometry(n_layers=2, n_heads=4, n_kv_heads=2 if gqa else 4, head_dim=8)
    for layer in range(loaded.geometry.n_layers):
        attention = resolve(loaded.model, loaded.adapter.attention_path(layer))
        # HF's own bookkeeping agrees on the GQA grouping
        assert attention.num_key_value_groups == loaded.geometry.group_size
        assert loaded.adapter.o_proj_module(loaded.model, layer).in_features == 4 * 8
    assert isinstance(resolve(loaded.model, loaded.adapter.vision_tower), torch.nn.Module)
    assert isinstance(resolve(loaded.model, loaded.adapter.projector), torch.nn.Module)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_token_mask_counts_placeholders(tiny_models, family):
    loaded, inputs = tiny_models(family)
    mask = loaded.image_token_mask(inputs)
    assert mask.shape == inputs["input_ids"].shape and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [EXPECTED_IMAGE_TOKENS[family]] * 2
    # the model's forward accepts exactly this many image tokens: one more or one fewer fails
    broken = dict(inputs, input_ids=inputs["input_ids"].clone())
    first = int(mask[0].nonzero()[0])
    broken["input_ids"][:, first] = broken["input_ids"][0, 0]
    with pytest.raises(Exception):
        loaded.model(**broken)


def test_kv_head_mapping_gqa():
    g = HeadGeometry(n_layers=2, n_heads=8, n_kv_heads=2, head_dim=4)
    assert g.group_size == 4
    assert [g.kv_head(h) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert g.n_total == 16
    with pytest.raises(IndexError, match="each layer has 8 heads"):
        g.kv_head(8)
    with pytest.raises(IndexError, match="model has 2 layers"):
        g.check_head(2, 0)


def test_unsupported_architecture_names_families_and_how_to_add():
    from transformers import GPT2Config

    config = GPT2Config(n_layer=1, n_head=2, n_embd=8)
    config.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(UnsupportedModelError) as info:
        find_adapter(config)
    message = str(info.value)
    assert "GPT2LMHeadModel" in message
    for family in ADAPTERS:
        assert family in message
    assert "registry.py" in message and "Adapter" in message


def test_adapter_refuses_model_that_does_not_match_its_geometry():
    model, _, processor = tiny_llava()
    model.config.text_config.head_dim = 16  # the modules have 4 heads of dim 8
    with pytest.raises(AdapterError, match="the config says 4 heads .* of dim 16 but the attention modules have"):
        wrap_model(model, processor)


def test_adapter_refuses_missing_module():
    model, _, processor = tiny_llava()
    del model.model.multi_modal_projector
    with pytest.raises(AdapterError, match="multi_modal_projector"):
        wrap_model(model, processor)


def test_every_family_has_one_adapter_and_a_tiny_model():
    from vlmheads.testing import TINY_BUILDERS

    from vlmheads.models import GENERIC_FAMILIES

    assert set(ADAPTERS) | {f.model_type for f in GENERIC_FAMILIES} == set(TINY_BUILDERS)
    assert not set(ADAPTERS) & {f.model_type for f in GENERIC_FAMILIES}
    architectures = [a for adapter in ADAPTERS.values() for a in adapter.architectures]
    assert len(architectures) == len(set(architectures))


def test_a_layers_parts_are_found_by_the_names_the_adapter_declares():
    """The head sweep's fast path restarts a layer from its parts; their names are the adapter's, not the sweep's."""
    from dataclasses import replace

    import torch

    from vlmheads.models.adapter import LayerParts
    from vlmheads.models.registry import ADAPTERS

    adapter = ADAPTERS["llava"]

    class Renamed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.self_attn, self.post, self.ffn = (torch.nn.LayerNorm(4), torch.nn.Linear(4, 4),
                                                             torch.nn.LayerNorm(4), torch.nn.Linear(4, 4))

    layer = Renamed()
    assert adapter.layer_parts(layer) is None  # the default names (input_layernorm, ...) are not there
    renamed = replace(adapter, input_norm="pre", post_attention_norm="post", mlp="ffn")
    assert renamed.layer_parts(layer) == LayerParts(layer.pre, layer.self_attn, layer.post, layer.ffn)
