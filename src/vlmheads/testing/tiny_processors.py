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
_SPECIALS["qwen2_5_vl"] = _SPECIALS["qwen2_vl"]
_SPECIALS["smolvlm"] = _SPECIALS["idefics3"]


def tiny_tokenizer(family: str):
    from ..organism.build import chat_template, word_level_tokenizer
    from ..world.questions import vocabulary

    specials = _SPECIALS[family]
    vocab = {tok: i for i, tok in specials.items()}
    free = (i for i in range(VOCAB) if i not in specials)
    for word in vocabulary():
        vocab[word] = next(free)
    for i in free:
        vocab[f"<unused{i}>"] = i
    names = {v: k for k, v in vocab.items()}
    extra = [t for i, t in sorted(specials.items()) if t not in ("<pad>", "<unk>", "<s>", "</s>")]
    return word_level_tokenizer(vocab, {"pad_token": names[0], "unk_token": "<unk>", "bos_token": "<s>",
                                        "eos_token": "</s>"}, extra, 256, chat_template(_IMAGE_TEXT[family]))


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
    if family in ("qwen2_vl", "qwen2_5_vl"):
        ip = tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=28 * 28, patch_size=14,
                                         temporal_patch_size=2, merge_size=1)
        from ..models.processors import IMAGE_ONLY

        return IMAGE_ONLY[family](image_processor=ip, tokenizer=tok, chat_template=template)
    if family in ("idefics3", "smolvlm"):
        ip = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                          max_image_size={"longest_edge": 32})
        return tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)
    raise ValueError(f"no tiny processor for family {family!r}")
