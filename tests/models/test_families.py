"""Any VLM family: the generic adapter, runtime registration, and the refusals (with their reasons)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers as tf

from conftest import FAMILIES
from vlmheads.models import (ADAPTERS, AdapterError, UnsupportedModelError, derive_adapter, load_model,
                             register_adapter, wrap_model)
from vlmheads.testing import tiny_llava

_TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=99)
_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
               patch_size=8)

# family -> (a tiny config of it, the words its refusal must name)
REFUSED = {
    "paligemma": (lambda: tf.PaliGemmaConfig(text_config=dict(model_type="gemma", **_TEXT), vision_config=_VISION,
                                             image_token_index=98), "prefix-LM attention"),
    "mllama": (lambda: tf.MllamaConfig(text_config=dict(**_TEXT, cross_attention_layers=[1])),
               "cross-attention layers [1]"),
    "gemma4": (lambda: tf.Gemma4Config(text_config=dict(**_TEXT, head_dim=8, global_head_dim=16,
                                                        layer_types=["sliding_attention", "full_attention"])),
               "per-layer head geometry): its layers differ in head geometry (layers [0]: 4 heads (2 key/value) "
               "of dim 8; layers [1]: 4 heads (2 key/value) of dim 16)"),
    "chameleon": (lambda: tf.ChameleonConfig(**_TEXT), "no text_config"),
    "phi4_multimodal": (lambda: tf.Phi4MultimodalConfig(**_TEXT), "no text_config"),
}


@pytest.mark.parametrize("family", list(REFUSED))
def test_refused_families_are_refused_before_any_weights_with_the_reason(tmp_path, family):
    make, words = REFUSED[family]
    make().save_pretrained(tmp_path)  # a config and nothing else: the refusal must not need weights
    with pytest.raises(UnsupportedModelError, match="not supported") as info:
        load_model(tmp_path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_refusal_reaches_the_command_as_one_line(tmp_path, capsys):
    from heads.locate import main

    REFUSED["paligemma"][0]().save_pretrained(tmp_path / "pg")
    assert main(["--model", str(tmp_path / "pg"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "bidirectionally" in err[-1]
    assert not (tmp_path / "run").exists()


def test_in_memory_refused_model_is_refused_by_wrap_model():
    config = REFUSED["paligemma"][0]()
    config.text_config.head_dim = 8
    model = tf.PaliGemmaForConditionalGeneration(config)
    with pytest.raises(UnsupportedModelError, match="prefix-LM"):
        wrap_model(model)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f in ADAPTERS])
def test_generic_adapter_reads_what_the_declared_one_declares(tiny_models, family):
    loaded, _ = tiny_models(family)
    declared, derived = loaded.adapter, derive_adapter(loaded.model)
    assert not declared.derived and derived.derived
    for field in ("layers", "vision_tower", "projector", "attention", "o_proj", "lm_head", "final_norm"):
        assert getattr(derived, field) == getattr(declared, field), field
    assert derived.check(loaded.model) == loaded.geometry


def test_runtime_registration_replaces_the_generic_adapter(tiny_models):
    loaded, inputs = tiny_models("gemma3")
    assert loaded.adapter.derived
    mine = dataclasses.replace(loaded.adapter, family="my_gemma3", derived=False, notes="registered by a user")
    register_adapter(mine)
    try:
        wrapped = wrap_model(loaded.model, loaded.processor)
        assert wrapped.adapter is mine and wrapped.identity()["adapter"] == "declared"
        with pytest.raises(ValueError, match="already registered"):
            register_adapter(mine)
        with pytest.raises(TypeError, match="takes an Adapter"):
            register_adapter("gemma3")
    finally:
        del ADAPTERS["my_gemma3"]
    assert wrap_model(loaded.model, loaded.processor).adapter.derived


def test_module_geometry_that_differs_between_layers_is_refused():
    model, _, processor = tiny_llava()
    attention = model.model.language_model.layers[1].self_attn
    attention.head_dim = 4  # layer 1 now reads as 8 heads of dim 4: not one geometry for every layer
    with pytest.raises(AdapterError, match="per-layer head geometry .*layer 1: 8 heads"):
        wrap_model(model, processor)


def test_layer_without_the_head_site_is_named():
    model, _, processor = tiny_llava()
    del model.model.language_model.layers[1].self_attn
    with pytest.raises(AdapterError, match=r"decoder layer 1 \(LlamaDecoderLayer\) has no self_attn.o_proj"):
        wrap_model(model, processor)


def test_wrap_model_takes_an_explicit_adapter_checked_against_the_model(tiny_models):
    loaded, _ = tiny_models("llava")
    wrong = dataclasses.replace(loaded.adapter, layers="model.language_model.blocks")
    with pytest.raises(AdapterError, match="no module 'model.language_model.blocks'"):
        wrap_model(loaded.model, loaded.processor, adapter=wrong)


def test_text_only_model_is_not_a_vlm(tmp_path):
    tf.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="not a vision-language model.*Supported families: llava"):
        load_model(tmp_path)


def test_image_only_processor_fallback_saves_and_reloads_without_a_video_half(tmp_path):
    from vlmheads.models.processors import image_only, load_processor
    from vlmheads.testing import tiny_processor

    processor = tiny_processor("internvl")
    assert type(processor) is image_only(tf.InternVLProcessor)
    processor.save_pretrained(tmp_path)
    again = load_processor(tmp_path, "internvl")
    assert type(again) is image_only(tf.InternVLProcessor) and not hasattr(again, "video_processor")
    assert again.image_seq_length == 4 and again.image_token == "<IMG_CONTEXT>"
    assert torch.equal(again(text=["<IMG_CONTEXT> left"], images=[[__import__("PIL.Image").Image.new("RGB", (64, 64))]],
                             return_tensors="pt")["input_ids"],
                       processor(text=["<IMG_CONTEXT> left"], images=[[__import__("PIL.Image").Image.new("RGB", (64, 64))]],
                                 return_tensors="pt")["input_ids"])
