"""Qwen2-VL and Qwen2.5-VL: a ViT with 2x2 patch merging + a Qwen2 decoder with 3-D (M-)RoPE.

Image tokens: ``<|vision_start|>`` + ``<|image_pad|>`` x (t*h*w / merge^2) + ``<|vision_end|>``; the pads
carry ``config.image_token_id`` in raster order over the merged grid. The processor's ``mm_token_type_ids``
must reach the model (transformers v5 falls back to 1-D positions without it). The decoder uses
grouped-query attention (e.g. 28 query heads over 4 key/value heads in the 7B models).
"""

from .adapter import Adapter

QWEN2_VL = Adapter(
    family="qwen2_vl",
    architectures=("Qwen2VLForConditionalGeneration",),
    model_types=("qwen2_vl",),
    layers="model.language_model.layers",
    vision_tower="model.visual",
    projector="model.visual.merger",
    image_token_attrs=("image_token_id",),
)

QWEN2_5_VL = Adapter(
    family="qwen2_5_vl",
    architectures=("Qwen2_5_VLForConditionalGeneration",),
    model_types=("qwen2_5_vl",),
    layers="model.language_model.layers",
    vision_tower="model.visual",
    projector="model.visual.merger",
    image_token_attrs=("image_token_id",),
    notes="inside the vision tower patches are in window order; the merger output is back in raster order",
)
