"""LLaVA-1.5 and LLaVA-NeXT (1.6): CLIP vision tower + MLP projector + a Llama-style decoder.

Image tokens: ``config.image_token_id`` (alias ``image_token_index``) repeated once per patch in raster
order (576 for 336px/14px CLIP with the CLS token dropped). LLaVA-NeXT adds tiles of the same kind and an
``image_newline`` token after every row of patches; those positions carry the image token id too.
"""

from .adapter import Adapter

LLAVA = Adapter(
    family="llava",
    architectures=("LlavaForConditionalGeneration",),
    model_types=("llava",),
    layers="model.language_model.layers",
    vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
)

LLAVA_NEXT = Adapter(
    family="llava_next",
    architectures=("LlavaNextForConditionalGeneration",),
    model_types=("llava_next",),
    layers="model.language_model.layers",
    vision_tower="model.vision_tower",
    projector="model.multi_modal_projector",
)
