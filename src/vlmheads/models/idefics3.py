"""Idefics3 and SmolVLM: a SigLIP vision tower + pixel-shuffle connector + a Llama-style decoder.

Image tokens: ``<image>`` (``config.image_token_id``) repeated ``image_seq_len`` times per tile, wrapped
in ``<fake_token_around_image>`` with ``<row_i_col_j>`` tags, then a ``<global-img>`` view of the whole image.
"""

from .adapter import Adapter

IDEFICS3 = Adapter(
    family="idefics3",
    architectures=("Idefics3ForConditionalGeneration",),
    model_types=("idefics3",),
    layers="model.text_model.layers",
    vision_tower="model.vision_model",
    projector="model.connector",
    image_token_attrs=("image_token_id",),
)

SMOLVLM = Adapter(
    family="smolvlm",
    architectures=("SmolVLMForConditionalGeneration",),
    model_types=("smolvlm",),
    layers="model.text_model.layers",
    vision_tower="model.vision_model",
    projector="model.connector",
    image_token_attrs=("image_token_id",),
)
