"""Real processors for the tiny random models of every family (offline: no hub tokenizer).

Each processor pairs the family's own image processor and processor class with a word-level
tokenizer over the organism's vocabulary whose special tokens sit at the ids the tiny model's
config uses (vocabulary of ``tiny.VOCAB`` ids, unused ids filled), so organism examples encode
exactly as a real checkpoint's processor would encode them: the processor expands the image
placeholder into the right number of image tokens and the model accepts the batch.
"""

from __future__ import annotations

from .tiny import IMAGE_TOKEN, VOCAB

_IMAGE_TEXT = {
    "llava_next": "<image>\n",
    "gemma3": "<start_of_image>",
    "internvl": "<IMG_CONTEXT>\n",
    "mistral3": "[IMG]",
    "llava_onevision": "<image>\n",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llama4": "<|image|>",
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "idefics3": "<image>",
    "smolvlm": "<image>",
}
_SPECIALS = {
    "llava_next": {0: "<pad>", 1: "<unk>", 2: "<s>", 3: "</s>", IMAGE_TOKEN: "<image>"},
    "qwen2_vl": {0: "<pad>", 1: "</s>", 2: "<unk>", 3: "<|vision_start|>", 4: "<|image_pad|>",
                 5: "<|video_pad|>", 6: "<|vision_end|>", 7: "<s>"},
    "idefics3": {0: "<pad>", 1: "<unk>", 2: "<s>", 3: "</s>", 95: "<fake_token_around_image>",
                 96: "<global-img>", 97: "<end_of_utterance>", IMAGE_TOKEN: "<image>"},
}
_SPECIALS["qwen2_5_vl"] = _SPECIALS["qwen3_vl"] = _SPECIALS["qwen2_vl"]
_SPECIALS["smolvlm"] = _SPECIALS["idefics3"]
_BASE = {0: "<pad>", 1: "<unk>", 2: "<s>", 3: "</s>"}
_SPECIALS.update({
    "gemma3": {**_BASE, 96: "<start_of_image>", 97: "<end_of_image>", IMAGE_TOKEN: "<image_soft_token>"},
    "internvl": {**_BASE, 95: "<video>", 96: "<img>", 97: "</img>", IMAGE_TOKEN: "<IMG_CONTEXT>"},
    "mistral3": {**_BASE, 96: "[IMG_BREAK]", 97: "[IMG_END]", IMAGE_TOKEN: "[IMG]"},
    "llava_onevision": {**_BASE, 97: "<video>", IMAGE_TOKEN: "<image>"},
    "llama4": {**_BASE, 91: "<|image_start|>", 92: "<|image_end|>", 93: "<|image|>", 94: "<|tile_x_separator|>",
               95: "<|tile_y_separator|>", IMAGE_TOKEN: "<|patch|>"},  # the model's image tokens are the patches
})
# named special tokens that a family's processor reads from its tokenizer (tokenizer.boi_token ...)
_NAMED = {
    "gemma3": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    "internvl": {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                 "video_token": "<video>"},
}


def placed_vocabulary(specials: dict[int, str], size: int) -> dict[str, int]:
    """A vocabulary of ``size`` ids: ``specials`` at their ids (a checkpoint's own), the organism's words on
    the first free ids, every other id an unused placeholder."""
    from ..world.questions import vocabulary

    vocab = {tok: i for i, tok in specials.items()}
    free = (i for i in range(size) if i not in specials)
    for word in vocabulary():
        vocab[word] = next(free)
    for i in free:
        vocab[f"<unused{i}>"] = i
    return vocab


def tiny_tokenizer(family: str):
    from ..organism.build import chat_template, word_level_tokenizer

    specials = _SPECIALS[family]
    vocab = placed_vocabulary(specials, VOCAB)
    names = {v: k for k, v in vocab.items()}
    extra = [t for i, t in sorted(specials.items()) if t not in ("<pad>", "<unk>", "<s>", "</s>")]
    named = {"extra_special_tokens": _NAMED[family]} if family in _NAMED else {}
    return word_level_tokenizer(vocab, {"pad_token": names[0], "unk_token": "<unk>", "bos_token": "<s>",
                                        "eos_token": "</s>"}, extra, 256, chat_template(_IMAGE_TEXT[family]),
                                **named)


def tiny_processor(family: str):
    """The family's processor for its tiny model (see ``vlmheads.testing.tiny``); None for LLaVA, which
    comes with the organism's own processor."""
    import transformers as tf

    if family == "llava":
        return None
    tok = tiny_tokenizer(family)
    template = tok.chat_template
    if family == "llava_next":
        ip = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30},
                                           image_grid_pinpoints=[[30, 30]])
        return tf.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=6,
                                     vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                     image_token="<image>", chat_template=template)
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        ip = tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=28 * 28, patch_size=14,
                                         temporal_patch_size=2, merge_size=1)
        from ..models.processors import image_only

        cls = {"qwen2_vl": tf.Qwen2VLProcessor, "qwen2_5_vl": tf.Qwen2_5_VLProcessor,
               "qwen3_vl": tf.Qwen3VLProcessor}[family]
        return image_only(cls)(image_processor=ip, tokenizer=tok, video_processor=None, chat_template=template)
    if family in ("idefics3", "smolvlm"):
        ip = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                          max_image_size={"longest_edge": 32})
        return tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)
    if family in _GENERIC_PROCESSORS:
        return _GENERIC_PROCESSORS[family](tok, template)
    raise ValueError(f"no tiny processor for family {family!r}")


def _gemma3(tok, template):
    import transformers as tf

    ip = tf.Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    return tf.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=template)


def _internvl(tok, template):
    import transformers as tf

    from ..models.processors import image_only

    ip = tf.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=False)
    return image_only(tf.InternVLProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                            image_seq_length=4, chat_template=template)


def _mistral3(tok, template):
    import transformers as tf

    from ..models.processors import usable_class

    ip = tf.PixtralImageProcessorPil(size={"longest_edge": 32}, patch_size=8)
    return usable_class("PixtralProcessor")(image_processor=ip, tokenizer=tok, patch_size=8, spatial_merge_size=2,
                               chat_template=template)


def _llava_onevision(tok, template):
    import transformers as tf

    from ..models.processors import image_only

    ip = tf.LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32]],
                                            do_pad=True)
    return image_only(tf.LlavaOnevisionProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                                  num_image_tokens=16, vision_feature_select_strategy="full",
                                                  chat_template=template)


def _llama4(tok, template):
    import transformers as tf

    from ..models.pil_image_processors import Llama4ImageProcessorPil

    # up to 4 tiles of 32px: a 64px organism image is 2 x 2 tiles plus the whole image as a fifth
    ip = Llama4ImageProcessorPil(size={"height": 32, "width": 32}, max_patches=4)
    return tf.Llama4Processor(image_processor=ip, tokenizer=tok, patch_size=8, pixel_shuffle_ratio=0.5,
                              chat_template=template)


_GENERIC_PROCESSORS = {"llama4": _llama4, "gemma3": _gemma3, "internvl": _internvl, "mistral3": _mistral3,
                       "llava_onevision": _llava_onevision}
