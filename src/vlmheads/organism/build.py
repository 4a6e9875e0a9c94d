"""Build the organism's tokenizer, processor and (untrained) LLaVA model from scratch.

Everything here is what a real LLaVA-1.5 checkpoint ships, made small: a word-level tokenizer with
an ``<image>`` special token and a LLaVA-style chat template, a CLIP image processor (CLIP's pixel
mean/std normalisation matters: raw 0..1 pixels on the grey canvas collapse the vision features),
and ``LlavaForConditionalGeneration`` = CLIP vision tower + 2-layer MLP projector + Llama decoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..world.questions import vocabulary
from ..world.scenes import CELL, IMAGE_SIZE
from ..errors import InputError

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
# LLaVA-1.5's conversation format: "USER: <image>\n{question} ASSISTANT: {answer}</s>"
def chat_template(image_text: str) -> str:
    """The organism's chat format, ``USER: {image_text}{question} ASSISTANT: {answer}</s>`` (the tiny
    models reuse it with their family's image placeholder text)."""
    return ("{% for message in messages %}"
            "{% if message['role'] == 'user' %}USER: "
            "{% for item in message['content'] %}"
            "{% if item['type'] == 'image' %}" + image_text + "{% elif item['type'] == 'text' %}{{ item['text'] }}"
            "{% endif %}{% endfor %} "
            "{% elif message['role'] == 'assistant' %}ASSISTANT: "
            "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
            "</s>"
            "{% endif %}"
            "{% endfor %}"
            "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


CHAT_TEMPLATE = chat_template("<image>\n")


@dataclass(frozen=True)
class OrganismArch:
    """Sizes of the organism. Defaults are the shipped model's."""

    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 8
    text_kv_heads: int = 8
    text_mlp: int = 384
    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 384
    max_positions: int = 128
    image_size: int = IMAGE_SIZE  # pixels per side; must be the rendering's image_size (margin + GRID x cell)
    patch_size: int = CELL  # the vision tower's patch: (image_size / patch_size)^2 image tokens

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise InputError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def n_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


MICRO_ARCH = OrganismArch(text_hidden=32, text_layers=4, text_heads=8, text_kv_heads=8, text_mlp=64,
                          vision_hidden=32, vision_layers=1, vision_heads=2, vision_mlp=64)


def word_level_tokenizer(vocab: dict[str, int], special: dict[str, str], extra_special: list[str],
                         model_max_length: int, template: str, **kwargs):
    """A word-level fast tokenizer over ``vocab``: words split on spaces, "?", ".", ",", ":" kept as their own
    tokens ("top-left" stays one word); decoding joins words with spaces and tidies punctuation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"[?.,:]"), behavior="isolated"),
    ])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", model_max_length=model_max_length,
                                  **special, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": extra_special})
    tok.chat_template = template
    return tok


def build_tokenizer():
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in vocabulary():
        vocab.setdefault(word, len(vocab))
    return word_level_tokenizer(vocab, {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>",
                                        "eos_token": "</s>"}, ["<image>"], 128, CHAT_TEMPLATE,
                                extra_special_tokens={"image_token": "<image>"})


def build_processor(arch: OrganismArch = OrganismArch()):
    """The organism's processor for ``arch``'s image and patch size (the default: 64 px, 16-px patches)."""
    from transformers import LlavaProcessor

    try:  # the PIL backend is what runs without torchvision; naming it avoids a fallback warning
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    image_processor = ImageProcessor(
        size={"shortest_edge": arch.image_size}, crop_size={"height": arch.image_size, "width": arch.image_size},
        do_resize=True, do_center_crop=True, do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=arch.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        image_token="<image>", chat_template=CHAT_TEMPLATE,
    )


def build_config(arch: OrganismArch, tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=arch.vision_hidden, intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads, image_size=arch.image_size, patch_size=arch.patch_size,
        projection_dim=arch.vision_hidden,
    )
    text = LlamaConfig(
        hidden_size=arch.text_hidden, intermediate_size=arch.text_mlp, num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads, num_key_value_heads=arch.text_kv_heads,
        vocab_size=len(tokenizer), max_position_embeddings=arch.max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=arch.n_image_tokens, vision_feature_layer=-1, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    return config


def build_model(arch: OrganismArch, tokenizer, seed: int):
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(arch, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
