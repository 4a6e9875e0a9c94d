"""The true configs of three real VLMs, written by hand, for random-weight models at their real widths.

No hub here: the values are copied from each checkpoint's published ``config.json`` (and its processor
config) and cited per model below. ``build_real(name)`` makes the model with random weights and a real
processor of its family (the family's own image processor at the checkpoint's resolution, so the image
becomes the checkpoint's number of image tokens; a word-level tokenizer over the organism's words with
the special tokens at the checkpoint's own ids), for the real-config benchmark and its test.

    ========================  ==========================================  ===================================
    name                      vision                                      decoder
    ========================  ==========================================  ===================================
    llava-1.5-7b              CLIP ViT-L/14 at 336 px: 24 x 1024,         Llama (Vicuna-7B): 32 layers x 32
                              576 image tokens                            heads, hidden 4096, MLP 11008
    qwen2.5-vl-7b             ViT 32 x 1280, window attention (112 px,    Qwen2: 28 layers x 28 heads (4 KV),
                              full at 7/15/23/31), 2x2 merge: 256 tokens  hidden 3584, MLP 18944, M-RoPE
                              at 448 px
    internvl3-8b              InternViT-300M at 448 px: 24 x 1024,        Qwen2.5-7B: 28 layers x 28 heads
                              pixel shuffle 0.5: 256 tokens               (4 KV), hidden 3584, MLP 18944
    ========================  ==========================================  ===================================

``text_layers`` cuts the decoder's depth (every layer the same shape: a 4-layer copy runs each
command's per-layer work at true width); ``small=True`` keeps every count and id (heads, KV heads,
image tokens, vocabulary, special ids) at a small width, for a test that the configs stay loadable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from ..errors import InputError


@dataclass(frozen=True)
class RealConfig:
    family: str
    source: str  # where the values come from
    build_config: Callable[[int | None, bool], object]  # (text_layers, small) -> transformers config
    processor: Callable[[], object]
    image_tokens: int  # image tokens per organism image, as the checkpoint's processor makes them
    heads: tuple[int, int, int]  # (layers, heads, KV heads) of the full decoder


def _small_text(heads: int, kv: int, head_dim: int = 8) -> dict:
    return dict(hidden_size=heads * head_dim, intermediate_size=heads * head_dim * 2, head_dim=head_dim,
                num_attention_heads=heads, num_key_value_heads=kv)


# -- LLaVA-1.5-7B: llava-hf/llava-1.5-7b-hf config.json (transformers' LlavaConfig defaults are the same
#    model: image_token_index 32000, image_seq_length 576, vision_feature_layer -2)
_LLAVA_SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>", 32000: "<image>", 32001: "<pad>"}


def _llava_config(text_layers: int | None, small: bool):
    import transformers as tf

    text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32064,
                bos_token_id=1, eos_token_id=2, pad_token_id=32001, tie_word_embeddings=False)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    if small:
        text.update(_small_text(32, 32))
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    text["num_hidden_layers"] = text_layers or text["num_hidden_layers"]
    cfg = tf.LlavaConfig(text_config=tf.LlamaConfig(**text), vision_config=tf.CLIPVisionConfig(**vision),
                         image_token_index=32000, image_seq_length=576, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu", pad_token_id=32001,
                         tie_word_embeddings=False)
    cfg.architectures = ["LlavaForConditionalGeneration"]
    return cfg


def _llava_processor():
    import transformers as tf

    tok = _tokenizer(_LLAVA_SPECIALS, 32064, "<image>\n", pad="<pad>", bos="<s>", eos="</s>")
    ip = tf.CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                             num_additional_image_tokens=1, image_token="<image>", chat_template=tok.chat_template)


# -- Qwen2.5-VL-7B-Instruct: Qwen/Qwen2.5-VL-7B-Instruct config.json and preprocessor_config.json (the
#    processor's own pixel bounds admit 448 x 448: 32 x 32 patches of 14, merged 2 x 2 = 256 tokens)
_QWEN_SPECIALS = {0: "<unk>", 1: "</s>", 2: "<s>", 151643: "<|endoftext|>", 151645: "<|im_end|>",
                  151652: "<|vision_start|>", 151653: "<|vision_end|>", 151655: "<|image_pad|>",
                  151656: "<|video_pad|>"}


def _qwen_config(text_layers: int | None, small: bool):
    import transformers as tf

    text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6, vocab_size=152064,
                rope_theta=1000000.0, sliding_window=32768, max_window_layers=28, use_sliding_window=False,
                bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3,
                  out_hidden_size=3584, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], hidden_act="silu", tokens_per_second=2)
    if small:
        text.update(_small_text(28, 4), rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})
        vision.update(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=28 * 8,
                      fullatt_block_indexes=[1])
    text["num_hidden_layers"] = text_layers or text["num_hidden_layers"]
    text["max_window_layers"] = text["num_hidden_layers"]
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                              vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=False)
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return cfg


def _qwen_processor():
    import transformers as tf

    from ..models.processors import image_only

    tok = _tokenizer(_QWEN_SPECIALS, 152064, "<|vision_start|><|image_pad|><|vision_end|>", pad="<|endoftext|>",
                     bos="<s>", eos="</s>")
    ip = tf.Qwen2VLImageProcessorPil(min_pixels=448 * 448, max_pixels=448 * 448, patch_size=14,
                                     temporal_patch_size=2, merge_size=2)
    return image_only(tf.Qwen2_5_VLProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                              chat_template=tok.chat_template)


# -- InternVL3-8B: OpenGVLab/InternVL3-8B-hf config.json (transformers' InternVLVisionConfig defaults are
#    its InternViT-300M-448px; text: Qwen2.5-7B; image_token_id 151667, 256 tokens per 448-px tile)
_INTERNVL_SPECIALS = {0: "<unk>", 1: "</s>", 2: "<s>", 151643: "<|endoftext|>", 151645: "<|im_end|>",
                      151665: "<img>", 151666: "</img>", 151667: "<IMG_CONTEXT>", 151668: "<video>"}


def _internvl_config(text_layers: int | None, small: bool):
    import transformers as tf

    text = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
                vocab_size=151674, rope_theta=1000000.0, bos_token_id=151643, eos_token_id=151645,
                tie_word_embeddings=False)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=[448, 448], patch_size=[14, 14], hidden_act="gelu", norm_type="layer_norm",
                  layer_scale_init_value=0.1, use_qk_norm=False, use_mean_pooling=True)
    if small:
        text.update(_small_text(28, 4))
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    text["num_hidden_layers"] = text_layers or text["num_hidden_layers"]
    cfg = tf.InternVLConfig(text_config=text, vision_config=vision, image_token_id=151667, image_seq_length=256,
                            downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                            vision_feature_select_strategy="default", tie_word_embeddings=False)
    cfg.architectures = ["InternVLForConditionalGeneration"]
    return cfg


def _internvl_processor():
    import transformers as tf

    from ..models.processors import image_only

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer(_INTERNVL_SPECIALS, 151674, "<IMG_CONTEXT>\n", pad="<|endoftext|>", bos="<s>", eos="</s>",
                     named=named)
    ip = tf.GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=False)
    return image_only(tf.InternVLProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                            image_seq_length=256, chat_template=tok.chat_template)


def _tokenizer(specials: dict[int, str], vocab_size: int, image_text: str, pad: str, bos: str, eos: str,
               named: dict | None = None):
    """A word-level tokenizer of ``vocab_size`` ids: ``specials`` at the checkpoint's ids, the organism's
    words on the first free ids, every other id an unused placeholder."""
    from ..organism.build import chat_template, word_level_tokenizer
    from .tiny_processors import placed_vocabulary

    vocab = placed_vocabulary(specials, vocab_size)
    extra = [t for t in specials.values() if t not in (pad, "<unk>", bos, eos)]
    return word_level_tokenizer(vocab, {"pad_token": pad, "unk_token": "<unk>", "bos_token": bos, "eos_token": eos},
                                extra, 2048, chat_template(image_text),
                                **({"extra_special_tokens": named} if named else {}))


REAL_CONFIGS: dict[str, RealConfig] = {
    "llava-1.5-7b": RealConfig("llava", "llava-hf/llava-1.5-7b-hf config.json", _llava_config, _llava_processor,
                               576, (32, 32, 32)),
    "qwen2.5-vl-7b": RealConfig("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct config.json", _qwen_config,
                                _qwen_processor, 256, (28, 28, 4)),
    "internvl3-8b": RealConfig("internvl", "OpenGVLab/InternVL3-8B-hf config.json", _internvl_config,
                               _internvl_processor, 256, (28, 28, 4)),
}


def build_real(name: str, text_layers: int | None = None, small: bool = False, seed: int = 0,
               dtype: torch.dtype = torch.float32):
    """``(model, processor)``: ``name``'s true config (``text_layers`` decoder layers; ``small``: small
    width, every count and id kept) with random weights in ``dtype``, eval mode, eager attention."""
    import transformers as tf

    if name not in REAL_CONFIGS:
        raise InputError(f"no real config {name!r}; choose from {', '.join(REAL_CONFIGS)}")
    real = REAL_CONFIGS[name]
    cfg = real.build_config(text_layers, small)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: a 7B-width float32 copy is never made first
    try:
        model = getattr(tf, cfg.architectures[0])(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    model.set_attn_implementation("eager")
    return model, real.processor()
