"""Real processor classes for the tiny models, and the image-only Qwen fallback."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data import organism_examples
from vlmheads.models import load_model, wrap_model
from vlmheads.models.processors import IMAGE_ONLY_PREFIX, has_video_half
from vlmheads.testing import TINY_BUILDERS
from vlmheads.testing.tiny_generic import llama4_processor_available
from vlmheads.testing.tiny_processors import tiny_processor

# image tokens each tiny model takes per image (see vlmheads.testing.tiny and tiny_generic)
IMAGE_TOKENS = {"llava_next": 55, "qwen2_vl": 4, "qwen2_5_vl": 4, "idefics3": 4, "smolvlm": 4, "gemma3": 4,
                "internvl": 20, "mistral3": 4, "llava_onevision": 36, "qwen3_vl": 4, "llama4": 4}


@pytest.mark.parametrize("family", list(IMAGE_TOKENS))
def test_processor_expands_the_image_and_the_model_accepts_it(tmp_path, family):
    if family == "llama4" and not llama4_processor_available():
        pytest.skip("Llama-4's image processor needs torchvision")
    model, _, _ = TINY_BUILDERS[family](gqa=True)
    model.save_pretrained(tmp_path)
    processor = tiny_processor(family)
    processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)  # through from_pretrained, processor included
    assert type(loaded.processor).__name__.removeprefix(IMAGE_ONLY_PREFIX) == \
        type(processor).__name__.removeprefix(IMAGE_ONLY_PREFIX)  # the family's own processor class
    if has_video_half(type(loaded.processor).__mro__[1]):  # the video half needs torchvision: left out
        assert type(loaded.processor).__name__.startswith(IMAGE_ONLY_PREFIX)
    examples = organism_examples(3, seed=0, function="relational", split="controlled")
    enc = loaded.encode_examples(examples)
    assert loaded.image_token_mask(enc).sum(1).tolist() == [IMAGE_TOKENS[family]] * 3
    with torch.no_grad():
        logits = loaded.model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape
    # the image matters: another image changes the answer-position logits
    other = loaded.encode_examples(organism_examples(3, seed=5, function="relational", split="controlled"))
    other["input_ids"] = enc["input_ids"]
    other["attention_mask"] = enc["attention_mask"]
    with torch.no_grad():
        assert not torch.equal(loaded.model(**other).logits[:, -1], logits[:, -1])


def test_a_tokenizer_is_not_accepted_as_a_processor(tmp_path):
    model, _, processor = TINY_BUILDERS["llava"](gqa=True)
    model.save_pretrained(tmp_path)
    processor.tokenizer.save_pretrained(tmp_path)  # no image processor saved
    with pytest.raises(OSError, match="cannot build an image processor"):
        load_model(tmp_path)


def test_wrapped_tiny_models_share_the_organism_vocabulary():
    loaded = wrap_model(TINY_BUILDERS["qwen2_vl"](gqa=True)[0], tiny_processor("qwen2_vl"))
    prompt = loaded.chat_prompt("Which part of the image is the red circle in?")
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    assert loaded.tokenizer.unk_token_id not in loaded.tokenizer(prompt)["input_ids"]
