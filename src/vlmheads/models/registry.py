"""The supported families and how a model finds its adapter."""

from __future__ import annotations

from .adapter import Adapter, AdapterError
from .idefics3 import IDEFICS3, SMOLVLM
from .llava import LLAVA, LLAVA_NEXT
from .qwen_vl import QWEN2_5_VL, QWEN2_VL

ADAPTERS: dict[str, Adapter] = {}
for _adapter in (LLAVA, LLAVA_NEXT, QWEN2_VL, QWEN2_5_VL, IDEFICS3, SMOLVLM):
    if _adapter.family in ADAPTERS:  # pragma: no cover - guards the list above
        raise RuntimeError(f"duplicate adapter family {_adapter.family}")
    ADAPTERS[_adapter.family] = _adapter

HOW_TO_ADD = ("To add a family, declare an Adapter (module paths of the decoder layers, vision tower and "
              "projector; see src/vlmheads/models/llava.py) and list it in src/vlmheads/models/registry.py.")


class UnsupportedModelError(AdapterError):
    pass


def supported_families() -> str:
    return ", ".join(f"{a.family} ({'/'.join(a.architectures)})" for a in ADAPTERS.values())


def find_adapter(config) -> Adapter:
    """The adapter for a HF config, by ``architectures`` first, then ``model_type``."""
    architectures = tuple(getattr(config, "architectures", None) or ())
    for adapter in ADAPTERS.values():
        if set(architectures) & set(adapter.architectures):
            return adapter
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    found = "/".join(architectures) or model_type or "unknown"
    raise UnsupportedModelError(
        f"unsupported model architecture {found!r}. Supported families: {supported_families()}. {HOW_TO_ADD}")
