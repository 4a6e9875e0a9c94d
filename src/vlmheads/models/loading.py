"""Load any supported VLM (HF id, local directory, or the shipped organism) into one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .adapter import Adapter, HeadGeometry
from .registry import find_adapter
from ..data.images import as_pil
from .processors import load_processor

ORGANISM_NAMES = ("organism", "vlmheads/organism")


def organism_path() -> Path:
    """Directory of the shipped organism (``save_pretrained`` layout)."""
    return Path(__file__).resolve().parent.parent / "organism" / "weights"


@dataclass
class LoadedModel:
    """A HF VLM with its processor, adapter and head geometry."""

    model: torch.nn.Module
    processor: Any
    adapter: Adapter
    name: str
    geometry: HeadGeometry = field(init=False)
    _traced: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.geometry = self.adapter.check(self.model)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def _need_processor(self):
        if self.processor is None:
            raise ValueError(f"{self.name} was loaded without a processor; pass processor=... to wrap_model")
        return self.processor

    def chat_prompt(self, question: str) -> str:
        """The question in the model's own chat format, with one image, ready for generation."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self._need_processor().apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, questions: Sequence[str], images: Sequence) -> dict[str, torch.Tensor]:
        """Processor inputs for a batch (left padded, on the model's device)."""
        if len(questions) != len(images):
            raise ValueError(f"{len(questions)} questions but {len(images)} images")
        if not questions:
            raise ValueError("cannot encode an empty batch")
        return self.encode_texts([self.chat_prompt(q) for q in questions], images)

    def encode_texts(self, texts: Sequence[str], images: Sequence) -> dict[str, torch.Tensor]:
        """Processor inputs for full texts (already in the chat format), left padded, on the model's device."""
        processor = self._need_processor()
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} images")
        if not texts:
            raise ValueError("cannot encode an empty batch")
        tok = self.tokenizer
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = processor(text=list(texts), images=[as_pil(i) for i in images], return_tensors="pt", padding=True)
        finally:
            tok.padding_side = old_side
        out = {}
        for key, value in enc.items():
            if torch.is_tensor(value):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            out[key] = value
        return out

    def encode_examples(self, examples) -> dict[str, torch.Tensor]:
        return self.encode([e.prompt for e in examples], [e.image for e in examples])

    def image_token_mask(self, inputs) -> torch.Tensor:
        """Bool ``[batch, pos]``, True at image placeholder tokens."""
        return self.adapter.image_token_mask(inputs, self.config)

    @property
    def traced(self):
        """The model wrapped by nnsight (created once; the HF model itself is unchanged)."""
        if self._traced is None:
            from nnsight import NNsight

            self._traced = NNsight(self.model)
        return self._traced


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(names)}")
    return names[dtype]


def load_model(name_or_path: str | Path | None = None, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None, attn_implementation: str = "eager",
               processor: Any = None) -> LoadedModel:
    """Load a VLM by HF id or local directory (``None`` / ``"organism"`` = the shipped organism).

    The architecture is read from the config first, so an unsupported model fails before any
    weights are read, with the list of supported families.
    """
    import transformers

    name = "organism" if name_or_path is None else str(name_or_path)
    source = organism_path() if name in ORGANISM_NAMES else name_or_path
    if name in ORGANISM_NAMES and not (organism_path() / "config.json").exists():
        raise FileNotFoundError(
            f"the shipped organism is missing at {organism_path()}; retrain it with `python -m heads.organism train`")
    looks_local = isinstance(source, Path) or str(source).startswith(("/", "./", "../", "~"))
    if looks_local and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"no model directory at {source}: pass an existing local directory, a Hugging Face "
                                f"model id (e.g. llava-hf/llava-1.5-7b-hf), or 'organism'")
    if isinstance(source, (str, Path)) and Path(source).exists() and not (Path(source) / "config.json").exists():
        raise FileNotFoundError(f"{source} has no config.json: it is not a saved Hugging Face model directory")
    config = transformers.AutoConfig.from_pretrained(source)
    adapter = find_adapter(config)
    cls = getattr(transformers, adapter.architectures[0])
    model = cls.from_pretrained(source, dtype=_resolve_dtype(dtype) or torch.float32,
                                attn_implementation=attn_implementation)
    model.to(device).eval()
    if processor is None:
        processor = load_processor(source, adapter.family)
    return LoadedModel(model=model, processor=processor, adapter=adapter, name=name)


def wrap_model(model: torch.nn.Module, processor: Any = None, name: str | None = None) -> LoadedModel:
    """A ``LoadedModel`` around an in-memory HF model (e.g. a tiny random one built from a config)."""
    return LoadedModel(model=model.eval(), processor=processor, adapter=find_adapter(model.config),
                       name=name or type(model).__name__)
