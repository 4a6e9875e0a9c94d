"""Real processor classes for the tiny models, and the image-only Qwen fallback."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data import organism_examples
from vlmheads.models import load_model, wrap_model
from vlmheads.models.processors import IMAGE_ONLY_PREFIX, has_video_half
from vlmheads.testing import TINY_BUILDERS
from vlmheads.testing.tiny_processors import tiny_processor
from vlmheads.world.scenes import CLEAN

# image tokens each tiny model takes per image (see vlmheads.testing.tiny and tiny_generic)
IMAGE_TOKENS = {"llava_next": 55, "qwen2_vl": 4, "qwen2_5_vl": 4, "idefics3": 4, "smolvlm": 4, "gemma3": 4,
                "internvl": 20, "mistral3": 4, "llava_onevision": 36, "qwen3_vl": 4, "llama4": 20}


@pytest.mark.parametrize("family", list(IMAGE_TOKENS))
def test_processor_expands_the_image_and_the_model_accepts_it(tmp_path, family):
    model, _, _ = TINY_BUILDERS[family](gqa=True)
    model.save_pretrained(tmp_path)
    processor = tiny_processor(family)
    processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)  # through from_pretrained, processor included
    assert type(loaded.processor).__name__.removeprefix(IMAGE_ONLY_PREFIX) == \
        type(processor).__name__.removeprefix(IMAGE_ONLY_PREFIX)  # the family's own processor class
    if has_video_half(type(loaded.processor).__mro__[1]):  # the video half needs torchvision: left out
        assert type(loaded.processor).__name__.startswith(IMAGE_ONLY_PREFIX)
    examples = organism_examples(3, seed=0, function="relational", split="controlled", rendering=CLEAN)
    enc = loaded.encode_examples(examples)
    assert loaded.image_token_mask(enc).sum(1).tolist() == [IMAGE_TOKENS[family]] * 3
    with torch.no_grad():
        logits = loaded.model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape
    # the image matters: another image changes the answer-position logits
    other = loaded.encode_examples(loaded.examples(3, seed=5, function="relational", split="controlled"))
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


def test_llama4_pil_image_processor_tiles_by_hand():
    """Llama-4's image processor exists only for torchvision; the PIL version tiles as its docstring says."""
    import numpy as np
    from PIL import Image

    from vlmheads.models.pil_image_processors import Llama4ImageProcessorPil, best_canvas

    ip = Llama4ImageProcessorPil(size={"height": 32, "width": 32}, max_patches=4)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = ip(images=[Image.fromarray(pixels)], return_tensors="pt")
    assert out["aspect_ratios"].tolist() == [[2, 2]] and out["pixel_values"].shape == (5, 3, 32, 32)
    normalised = torch.tensor((pixels / 255.0 - 0.5) / 0.5, dtype=torch.float32).permute(2, 0, 1)  # [3, 64, 64]
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # raster order, no resizing: 64px = 2 tiles
        torch.testing.assert_close(out["pixel_values"][k], normalised[:, 32 * r:32 * (r + 1), 32 * c:32 * (c + 1)])
    # a wide 100 x 40 image: the 1 x 3 canvas (scale 0.8, smaller than 1 x 4), resized to 32 x 80 and padded
    wide = ip(images=[Image.fromarray(pixels).resize((100, 40))], return_tensors="pt")
    assert wide["aspect_ratios"].tolist() == [[1, 3]] and wide["pixel_values"].shape == (4, 3, 32, 32)
    assert (wide["pixel_values"][2, :, :, 16:] == -1).all()  # zero padding, normalised
    assert (wide["pixel_values"][2, :, :, :16] != -1).any()
    # the example in transformers' docstring of the torchvision version
    assert best_canvas((200, 300), [(224, 672), (672, 224), (224, 448), (448, 224), (224, 224)], False) == (224, 448)


def test_llama4_tiny_copy_reloads_with_the_pil_image_processor(tmp_path):
    import importlib.util

    from vlmheads.models.pil_image_processors import Llama4ImageProcessorPil

    model, _, processor = TINY_BUILDERS["llama4"](gqa=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    if importlib.util.find_spec("torchvision") is None:
        assert isinstance(loaded.processor.image_processor, Llama4ImageProcessorPil)
    assert loaded.processor.image_processor.max_patches == 4
    enc = loaded.encode_examples(loaded.examples(2, seed=0, function="relational", split="controlled"))
    assert enc["pixel_values"].shape == (10, 3, 32, 32)  # 2 images x (2 x 2 tiles + the whole image)
    assert loaded.image_token_mask(enc).sum(1).tolist() == [20, 20]  # 5 tiles x 4 tokens
