"""Tiny random copies of the families the generic adapter carries (no hand-written adapter), built from
their real transformers configs, with their real processor classes.

Each builder returns ``(model, inputs, processor)`` like those in ``tiny.py``; the inputs are two organism
questions encoded by the processor, so what the tests feed is what a user's run feeds. Decoders: 2 layers,
4 query heads of dim 8 over 2 key/value heads (``gqa=False``: 4).
"""

from __future__ import annotations

import torch

from ..world.scenes import CLEAN
from .tiny import IMAGE_TOKEN, _text
from .tiny_processors import tiny_processor

_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)


def _finish(model_cls, cfg, family: str, seed: int):
    """Model (eager, eval) from ``cfg``, its processor, and two encoded organism examples."""
    from ..data import organism_examples
    from ..models import wrap_model

    cfg.architectures = [model_cls.__name__]
    torch.manual_seed(seed)
    model = _randomise_zero_matrices(model_cls(cfg).eval())
    model.set_attn_implementation("eager")
    processor = tiny_processor(family)
    examples = organism_examples(2, seed=seed, function="relational", split="controlled", rendering=CLEAN)
    inputs = wrap_model(model, processor).encode_examples(examples)
    return model, inputs, processor


def _randomise_zero_matrices(model: torch.nn.Module) -> torch.nn.Module:
    """Fill weight matrices that a family initialises to zero (Gemma3's image projection) with small noise:
    a random copy whose image cannot reach the text would test nothing. Seeded by the caller."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and not param.any():
                param.normal_(0.0, 0.02)
    return model


def _text_cfg(gqa: bool, **extra) -> dict:
    return _text(gqa, head_dim=8, pad_token_id=0, bos_token_id=2, eos_token_id=3, **extra)


def tiny_gemma3(gqa: bool = True, seed: int = 0):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    # layer 0 slides over the last 8 tokens, layer 1 attends globally; 32px / 8px = 16 patches pooled to 4
    text = _text_cfg(gqa, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    cfg = Gemma3Config(text_config=text, vision_config=dict(**_VISION, image_size=32, patch_size=8),
                       mm_tokens_per_image=4, image_token_index=IMAGE_TOKEN, boi_token_index=96, eoi_token_index=97)
    return _finish(Gemma3ForConditionalGeneration, cfg, "gemma3", seed)


def tiny_internvl(gqa: bool = True, seed: int = 0):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    # 32px tiles of 8px patches, pixel shuffle 0.5: 4 tokens per tile; a 64px image = 4 tiles + a thumbnail
    cfg = InternVLConfig(text_config=dict(model_type="qwen2", **_text_cfg(gqa)),
                         vision_config=dict(**_VISION, image_size=32, patch_size=8), image_token_id=IMAGE_TOKEN,
                         downsample_ratio=0.5, image_seq_length=4)
    return _finish(InternVLForConditionalGeneration, cfg, "internvl", seed)


def tiny_mistral3(gqa: bool = True, seed: int = 0):
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    # Pixtral: 32px / 8px = 4x4 patches, merged 2x2 -> 2x2 image tokens with an [IMG_BREAK] after each row
    vision = dict(model_type="pixtral", hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, head_dim=8, image_size=32, patch_size=8)
    cfg = Mistral3Config(text_config=dict(model_type="mistral", **_text_cfg(gqa)), vision_config=vision,
                         image_token_index=IMAGE_TOKEN, spatial_merge_size=2, vision_feature_layer=-1)
    return _finish(Mistral3ForConditionalGeneration, cfg, "mistral3", seed)


def tiny_llava_onevision(gqa: bool = True, seed: int = 0):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    # SigLIP 32px / 8px: 16 tokens for the base view + one 32px tile (4x4 + a newline per row... unpadded)
    vision = dict(model_type="siglip_vision_model", **_VISION, image_size=32, patch_size=8)
    cfg = LlavaOnevisionConfig(text_config=dict(model_type="qwen2", **_text_cfg(gqa)), vision_config=vision,
                               image_token_index=IMAGE_TOKEN, video_token_index=97, image_grid_pinpoints=[[32, 32]],
                               vision_feature_select_strategy="full", vision_feature_layer=-1)
    return _finish(LlavaOnevisionForConditionalGeneration, cfg, "llava_onevision", seed)


def tiny_qwen3_vl(gqa: bool = True, seed: int = 0):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    # deepstack: the vision tower's layer-0 features are added to the decoder's hidden states after layer 0
    text = _text(gqa, head_dim=8, bos_token_id=7, eos_token_id=1,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                  "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=37, num_heads=4, out_hidden_size=32, patch_size=14,
                  spatial_merge_size=1, temporal_patch_size=2, deepstack_visual_indexes=[0], num_position_embeddings=16)
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=4, video_token_id=5,
                        vision_start_token_id=3, vision_end_token_id=6)
    return _finish(Qwen3VLForConditionalGeneration, cfg, "qwen3_vl", seed)


def tiny_llama4(gqa: bool = True, seed: int = 0):
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    # MoE feed-forward (2 experts) in every layer; layer 1 has no RoPE (NoPE, Llama-4's every-4th layer)
    text = _text_cfg(gqa, intermediate_size_mlp=37, num_local_experts=2, interleave_moe_layer_step=1,
                     no_rope_layers=[1, 0], attention_chunk_size=64)
    # the vision adapter's MLP takes the pixel-shuffled features: intermediate_size = 32 / 0.5^2 = 128
    vision = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, vision_output_dim=32, projector_input_dim=32, projector_output_dim=32,
                  pixel_shuffle_ratio=0.5)
    cfg = Llama4Config(text_config=text, vision_config=vision, image_token_index=IMAGE_TOKEN)
    return _finish(Llama4ForConditionalGeneration, cfg, "llama4", seed)


GENERIC_BUILDERS = {
    "gemma3": tiny_gemma3,
    "internvl": tiny_internvl,
    "mistral3": tiny_mistral3,
    "llava_onevision": tiny_llava_onevision,
    "qwen3_vl": tiny_qwen3_vl,
    "llama4": tiny_llama4,
}
