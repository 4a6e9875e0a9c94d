"""Which VLMs the suite takes, and how a model finds its adapter.

A model's config is looked up in this order, before any weights are read:

1. a **refusal** (``REFUSALS``): a family whose attention the head-level methods would misread, refused
   with the reason (prefix-LM attention, cross-attention layers, per-layer head geometry, no text_config);
2. a **declared adapter** (``ADAPTERS``: the hand-written ones, and any added with ``register_adapter``);
3. the **generic adapter** (``vlmheads.models.generic``), read from the loaded model's modules, for any
   other transformers VLM. ``GENERIC_FAMILIES`` lists the families it is tested on (tiny copies).

Anything else (a text-only model, a class transformers does not have) is refused with the list of
families and how to add one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .adapter import Adapter, AdapterError
from .idefics3 import IDEFICS3, SMOLVLM
from .llava import LLAVA, LLAVA_NEXT
from .qwen_vl import QWEN2_5_VL, QWEN2_VL

ADAPTERS: dict[str, Adapter] = {}

HOW_TO_ADD = ("To add a family: most transformers VLMs need nothing (the generic adapter reads them); otherwise "
              "declare an Adapter (module paths of the decoder layers, vision tower and projector; see "
              "src/vlmheads/models/llava.py) and register it with vlmheads.models.register_adapter, or list it in "
              "src/vlmheads/models/registry.py.")


class UnsupportedModelError(AdapterError):
    pass


def register_adapter(adapter: Adapter, replace: bool = False) -> Adapter:
    """Add a declared adapter (at runtime too): models whose ``config.architectures`` or ``model_type`` it
    names use it from then on, instead of the generic adapter."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"register_adapter takes an Adapter, got {type(adapter).__name__}")
    if adapter.family in ADAPTERS and not replace:
        raise ValueError(f"an adapter for family {adapter.family!r} is already registered; pass replace=True")
    ADAPTERS[adapter.family] = adapter
    return adapter


for _adapter in (LLAVA, LLAVA_NEXT, QWEN2_VL, QWEN2_5_VL, IDEFICS3, SMOLVLM):
    register_adapter(_adapter)


@dataclass(frozen=True)
class Family:
    """A family the generic adapter is tested on (a tiny copy with its real processor class)."""

    model_type: str
    architecture: str
    notes: str = ""


GENERIC_FAMILIES: tuple[Family, ...] = (
    Family("gemma3", "Gemma3ForConditionalGeneration",
           "sliding-window and global layers; image tokens attend to each other bidirectionally (text stays causal)"),
    Family("internvl", "InternVLForConditionalGeneration", "image-only processor fallback (video half needs torchvision)"),
    Family("mistral3", "Mistral3ForConditionalGeneration", "Pixtral vision encoder; [IMG_BREAK] after each patch row"),
    Family("llava_onevision", "LlavaOnevisionForConditionalGeneration",
           "image-only processor fallback (video half needs torchvision)"),
    Family("qwen3_vl", "Qwen3VLForConditionalGeneration",
           "deepstack: visual features added after the first decoder layers; the per-head restarts add them too"),
    Family("llama4", "Llama4ForConditionalGeneration",
           "MoE feed-forward, chunked attention, NoPE layers; tiles; without torchvision its image processor is this "
           "suite's PIL version"),
)


# -- refusals -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    """A kind of model the head-level methods would misread, recognised from its config."""

    name: str
    applies: Callable[[object], bool]
    reason: Callable[[object], str]
    recognised_by: str = ""  # for the README's family table
    examples: str = ""


def _text(config):
    return getattr(config, "text_config", None)


_HEAD_KEYS = ("num_attention_heads", "num_key_value_heads", "head_dim")


def _per_layer_heads(config) -> dict[int, tuple]:
    """``{layer: (n_heads, n_kv_heads, head_dim)}`` from a heterogeneous config's per-layer view (Gemma4);
    empty when every layer has the same head geometry."""
    text = _text(config)
    view = getattr(text, "per_layer_config", None)
    if view is None:
        return {}
    shapes = {}
    for layer in range(int(text.num_hidden_layers)):
        entry = view[layer]
        shapes[layer] = tuple(entry.get(k) if isinstance(entry, dict) else getattr(entry, k, None) for k in _HEAD_KEYS)
    return shapes if len(set(shapes.values())) > 1 else {}


def _describe_per_layer(config) -> str:
    by_shape: dict[tuple, list[int]] = {}
    for layer, shape in _per_layer_heads(config).items():
        by_shape.setdefault(shape, []).append(layer)
    return "; ".join(f"layers {layers[:4]}{'...' if len(layers) > 4 else ''}: {h} heads ({kv} key/value) of dim {d}"
                     for (h, kv, d), layers in by_shape.items())


REFUSALS: tuple[Refusal, ...] = (
    Refusal("no text_config", lambda c: _text(c) is None,
            lambda c: "its config has no text_config, so the text decoder's attention cannot be switched apart "
                      "from the vision encoder's: ScalingVis and AdaptVis would silently change nothing",
            "`config.text_config` is absent", "Chameleon, Phi-4-multimodal"),
    Refusal("prefix-LM attention", lambda c: getattr(c, "model_type", None) == "paligemma",
            lambda c: "its prompt prefix (image and question) attends bidirectionally: scaling the last query "
                      "changes every earlier position too, a cached shared prefix is invalid, and the per-head "
                      "restarts assume causal attention",
            "model type `paligemma`", "PaliGemma"),
    Refusal("cross-attention layers", lambda c: bool(getattr(_text(c), "cross_attention_layers", None)),
            lambda c: f"the image enters through cross-attention layers {list(_text(c).cross_attention_layers)}, "
                      f"not as image tokens in the sequence: there are no image keys for ScalingVis/AdaptVis to "
                      f"scale, and those layers have no self-attention head site",
            "`text_config.cross_attention_layers`", "Mllama (Llama-3.2-Vision)"),
    Refusal("per-layer head geometry", lambda c: bool(_per_layer_heads(c)),
            lambda c: f"its layers differ in head geometry ({_describe_per_layer(c)}): head-level methods index "
                      f"every layer's heads alike",
            "`text_config.per_layer_config` with differing heads", "Gemma4"),
)


def refusal(config) -> Refusal | None:
    """The first refusal that applies to ``config``, or None."""
    return next((r for r in REFUSALS if _applies(r, config)), None)


def _applies(r: Refusal, config) -> bool:
    try:
        return bool(r.applies(config))
    except Exception:  # noqa: BLE001 - a config a rule cannot read is not that rule's case
        return False


def supported_families() -> str:
    declared = [f"{a.family} ({'/'.join(a.architectures)})" for a in ADAPTERS.values()]
    generic = [f"{f.model_type} ({f.architecture}, generic)" for f in GENERIC_FAMILIES]
    return ", ".join(declared + generic)


def _is_vlm(config) -> bool:
    return any(getattr(config, a, None) is not None for a in ("vision_config", "vq_config", "image_token_id",
                                                             "image_token_index"))


def declared_adapter(config) -> Adapter | None:
    """The declared adapter for a HF config, by ``architectures`` first, then ``model_type``; None if none."""
    architectures = tuple(getattr(config, "architectures", None) or ())
    for adapter in ADAPTERS.values():
        if set(architectures) & set(adapter.architectures):
            return adapter
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    return None


def model_class(config):
    """The transformers class that loads this config (its ``architectures``, else the image-text-to-text
    auto mapping); None when transformers has none."""
    import transformers

    for name in getattr(config, "architectures", None) or ():
        if hasattr(transformers, name):
            return getattr(transformers, name)
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    name = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(getattr(config, "model_type", None) or "")
    return getattr(transformers, name, None) if name else None


def find_adapter(config) -> Adapter | None:
    """What a config needs, decided before weights are read: its declared ``Adapter``, or None when the
    generic adapter will read it from the loaded model. Raises ``UnsupportedModelError`` (with the reason)
    for refused and unknown models."""
    name = "/".join(getattr(config, "architectures", None) or ()) or getattr(config, "model_type", None) or "unknown"
    if not _is_vlm(config):
        raise UnsupportedModelError(f"{name!r} is not a vision-language model (its config has no vision_config "
                                    f"and no image token). Supported families: {supported_families()}. {HOW_TO_ADD}")
    refused = refusal(config)
    if refused is not None:
        raise UnsupportedModelError(f"{name} is not supported ({refused.name}): {refused.reason(config)}")
    adapter = declared_adapter(config)
    if adapter is not None:
        return adapter
    if model_class(config) is None:
        raise UnsupportedModelError(f"unsupported model architecture {name!r}: the installed transformers has no "
                                    f"class for it. Supported families: {supported_families()}. {HOW_TO_ADD}")
    return None


def adapter_for(model) -> Adapter:
    """The adapter for a loaded model: its declared one, else the generic adapter read from its modules."""
    adapter = find_adapter(model.config)
    if adapter is not None:
        return adapter
    from .generic import derive_adapter

    return derive_adapter(model)
