"""Loading a model's processor, with an image-only fallback for Qwen2-VL / Qwen2.5-VL.

transformers builds Qwen's video processor whenever it builds the processor, and that needs
torchvision. This suite only feeds images, so when the full processor cannot be built the same
processor class is assembled without its video half (image processor + tokenizer + chat template
read from the same directory); text and image inputs come out exactly as the full processor's.
"""

from __future__ import annotations

import transformers as tf
from transformers.processing_utils import ProcessorMixin


class _ImageOnly:
    """Mixin: skip the video processor of a Qwen processor class."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class ImageOnlyQwen2VLProcessor(_ImageOnly, tf.Qwen2VLProcessor):
    pass


class ImageOnlyQwen2_5_VLProcessor(_ImageOnly, tf.Qwen2_5_VLProcessor):
    pass


IMAGE_ONLY = {"qwen2_vl": ImageOnlyQwen2VLProcessor, "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor}


def load_processor(source, family: str):
    """``AutoProcessor.from_pretrained(source)``, or the image-only Qwen processor when that fails."""
    try:
        processor = tf.AutoProcessor.from_pretrained(source)
        if getattr(processor, "image_processor", None) is not None:
            return processor
        # AutoProcessor falls back to the bare tokenizer when it cannot build the processor class
        first_error = ValueError(f"AutoProcessor gave a {type(processor).__name__} without an image processor")
    except (AttributeError, ImportError, OSError, ValueError) as err:
        first_error = err
    if family not in IMAGE_ONLY:
        raise OSError(f"cannot build an image processor for {source}: {first_error}; save the model's processor "
                      f"beside it (processor.save_pretrained)")
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(source)
        image_processor = tf.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot build a processor for {source}: {first_error}; the image-only fallback "
                      f"failed too: {err}") from err
    template = getattr(tokenizer, "chat_template", None)
    return IMAGE_ONLY[family](image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
