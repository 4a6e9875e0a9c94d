"""Tiny randomly initialised VLMs built from each family's real transformers config (no hub).

Used by the tests and by smoke runs of the commands on every family. Each builder returns the model
(eager attention, eval mode) and a batch of two valid inputs for it; LLaVA also comes with a real
processor (the organism's tokenizer and image processor, matching the tiny model's 64px/16px CLIP).

Text decoders use grouped-query attention unless ``gqa=False``: 4 query heads over 2 KV heads.
"""

from __future__ import annotations

from typing import Callable

import torch

VOCAB = 99
IMAGE_TOKEN = 98


def _text(gqa: bool, **extra) -> dict:
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2 if gqa else 4, vocab_size=VOCAB, max_position_embeddings=128, **extra)


def _ids_with_image(n_image: int, before: int = 3, after: int = 4, batch: int = 2, image_id: int = IMAGE_TOKEN,
                    prefix: tuple[int, ...] = (), suffix: tuple[int, ...] = (), text_ids: tuple[int, int] = (10, 90),
                    ) -> torch.Tensor:
    """``[batch, before + n_image + after (+ prefix/suffix)]`` ids: random text around one image span."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(batch):
        head = torch.randint(*text_ids, (before,), generator=g).tolist()
        tail = torch.randint(*text_ids, (after,), generator=g).tolist()
        rows.append(head + list(prefix) + [image_id] * n_image + list(suffix) + tail)
    return torch.tensor(rows)


def tiny_llava(gqa: bool = True, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from ..organism.build import build_processor

    processor = build_processor()
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    text = _text(gqa, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    text["vocab_size"] = len(tok)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=64, patch_size=16, projection_dim=32),
        text_config=LlamaConfig(**text), image_token_index=image_id, image_seq_length=16,
        vision_feature_layer=-1, vision_feature_select_strategy="default")
    cfg.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.set_attn_implementation("eager")
    g = torch.Generator().manual_seed(seed)
    inputs = {"input_ids": _ids_with_image(16, image_id=image_id, text_ids=(image_id + 1, len(tok))),
              "pixel_values": torch.randn(2, 3, 64, 64, generator=g)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return model, inputs, processor


def tiny_llava_next(gqa: bool = True, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=30, patch_size=6, projection_dim=32),
        text_config=LlamaConfig(**_text(gqa, pad_token_id=0)), image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=[[30, 30]], vision_feature_layer=-1, vision_feature_select_strategy="default")
    cfg.architectures = ["LlavaNextForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    model.set_attn_implementation("eager")
    g = torch.Generator().manual_seed(seed)
    # one 30x30 tile + the base view: 25 base tokens + 5x(5+1 newline) tile tokens = 55 image tokens
    n_image = 25 + 5 * 6
    inputs = {"input_ids": _ids_with_image(n_image),
              "pixel_values": torch.randn(2, 2, 3, 30, 30, generator=g),
              "image_sizes": torch.tensor([[30, 30], [30, 30]])}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return model, inputs, None


def _qwen_inputs(seed: int, patch: int = 14, temporal: int = 2):
    g = torch.Generator().manual_seed(seed)
    n_image = 4  # grid (1, 2, 2) with merge size 1
    ids = _ids_with_image(n_image, image_id=4, prefix=(3,), suffix=(6,))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(2 * n_image, 3 * patch * patch * temporal, generator=g),
            "image_grid_thw": torch.tensor([[1, 2, 2], [1, 2, 2]]),
            "mm_token_type_ids": (ids == 4).int()}


def _qwen_text(gqa: bool, sliding_window: int | None = None) -> dict:
    # sliding_window: layer 0 attends globally, layer 1 to the last ``sliding_window`` tokens only
    sliding = {} if sliding_window is None else dict(use_sliding_window=True, sliding_window=sliding_window,
                                                     max_window_layers=1)
    return _text(gqa, bos_token_id=0, eos_token_id=1,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                 **sliding)


def _qwen(config_cls, model_cls, text: dict, vision: dict, seed: int):
    cfg = config_cls(text_config=text, vision_config=vision, image_token_id=4, video_token_id=5,
                     vision_start_token_id=3, vision_end_token_id=6)
    cfg.architectures = [model_cls.__name__]
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    model.set_attn_implementation("eager")
    return model, _qwen_inputs(seed), None


def tiny_qwen2_vl(gqa: bool = True, seed: int = 0, sliding_window: int | None = None):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=1, temporal_patch_size=2)
    return _qwen(Qwen2VLConfig, Qwen2VLForConditionalGeneration, _qwen_text(gqa, sliding_window), vision, seed)


def tiny_qwen2_5_vl(gqa: bool = True, seed: int = 0):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(depth=2, hidden_size=32, intermediate_size=32, num_heads=4, out_hidden_size=32, patch_size=14,
                  spatial_merge_size=1, temporal_patch_size=2, window_size=28, fullatt_block_indexes=[1])
    return _qwen(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, _qwen_text(gqa), vision, seed)


def _idefics_like(config_cls, model_cls, arch: str, gqa: bool, seed: int):
    cfg = config_cls(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", **_text(gqa, pad_token_id=0)), image_token_id=IMAGE_TOKEN,
        scale_factor=2)
    cfg.architectures = [arch]
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    model.set_attn_implementation("eager")
    g = torch.Generator().manual_seed(seed)
    ids = _ids_with_image(4)  # (32/8)^2 / 2^2 = 4 image tokens per image
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(2, 1, 3, 32, 32, generator=g)}
    return model, inputs, None


def tiny_idefics3(gqa: bool = True, seed: int = 0):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    return _idefics_like(Idefics3Config, Idefics3ForConditionalGeneration, "Idefics3ForConditionalGeneration",
                         gqa, seed)


def tiny_smolvlm(gqa: bool = True, seed: int = 0):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    return _idefics_like(SmolVLMConfig, SmolVLMForConditionalGeneration, "SmolVLMForConditionalGeneration",
                         gqa, seed)


DECLARED_BUILDERS: dict[str, Callable] = {  # the families with a hand-written adapter
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "idefics3": tiny_idefics3,
    "smolvlm": tiny_smolvlm,
}
