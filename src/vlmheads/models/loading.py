"""Load any supported VLM (HF id, local directory, or the shipped organism) into one object."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .adapter import Adapter, AdapterError, HeadGeometry
from .registry import adapter_for, find_adapter, model_class
from ..data.images import as_pil
from .processors import load_processor
from .identity import coverage_problem, hub_cached, source_directory, source_identity, weight_files
from ..errors import InputError, MissingInput, UserError

# the shipped organisms by name -> their directory under src/vlmheads/organism/
ORGANISMS = {"organism": "weights", "vlmheads/organism": "weights", "organism-competent": "weights-competent"}
ORGANISM_NAMES = tuple(ORGANISMS)


def organism_path(name: str = "organism") -> Path:
    """Directory of a shipped organism (``save_pretrained`` layout): the default, or ``organism-competent``."""
    return Path(__file__).resolve().parent.parent / "organism" / ORGANISMS[name]


@dataclass
class LoadedModel:
    """A HF VLM with its processor, adapter and head geometry."""

    model: torch.nn.Module
    processor: Any
    adapter: Adapter
    name: str
    notes: tuple[str, ...] = ()  # what loading decided for the user (e.g. float32 on a CPU without bf16 kernels)
    source: dict | None = None  # identity.source_identity of the files it loaded from (None: built in memory)
    random_init: str | None = None  # what its weights did not cover, when loaded with allow_random_init
    geometry: HeadGeometry = field(init=False)
    _traced: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.geometry = self.adapter.check(self.model)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' device (with a device map, layers may sit elsewhere)."""
        embeddings = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        weight = getattr(embeddings, "weight", None)
        return weight.device if weight is not None else next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        embeddings = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        weight = getattr(embeddings, "weight", None)
        return weight.dtype if weight is not None else next(self.model.parameters()).dtype

    def identity(self) -> dict:
        """What a run's metadata records about the model as it ran."""
        from dataclasses import asdict

        return {"name": self.name, "family": self.adapter.family, "class": type(self.model).__name__,
                "adapter": "generic" if self.adapter.derived else "declared",
                "geometry": asdict(self.geometry), "dtype": str(self.dtype).replace("torch.", ""),
                "attn_implementation": self.config.get_text_config()._attn_implementation, "devices": self.devices,
                **({"files": self.source} if self.source else {}),
                **({"random_init": self.random_init} if self.random_init else {}),
                **({"notes": list(self.notes)} if self.notes else {})}

    @property
    def devices(self) -> list[str]:
        """Every device holding parameters (more than one with a device map)."""
        return sorted({str(p.device) for p in self.model.parameters()})

    @property
    def rendering(self):
        """How the organism's scenes are drawn for this model: what its config declares
        (``vlmheads_rendering``, set by training on a weakened rendering), else clean."""
        from ..world.scenes import Rendering

        return Rendering.from_dict(getattr(self.config, "vlmheads_rendering", None))

    def examples(self, n: int, seed: int = 0, function: str | None = None, split: str = "controlled") -> list:
        """``n`` organism examples drawn as this model sees them (``organism_examples`` with
        ``self.rendering``): the way to draw scenes for a model without getting the rendering wrong."""
        from ..data import organism_examples

        return organism_examples(n, seed=seed, function=function, split=split, rendering=self.rendering)

    def pairs(self, n: int, seed: int = 0, function: str = "spatial") -> list:
        """Counterfactual organism pairs drawn as this model sees them (``organism_pairs``)."""
        from ..data import organism_pairs

        return organism_pairs(n, seed=seed, function=function, rendering=self.rendering)

    def _check_rendering(self, images: Sequence) -> None:
        """Warn once per rendering when organism scenes drawn for another model reach this one."""
        import warnings

        from ..world.scenes import RenderingMismatch, rendering_of

        own = self.rendering.key
        seen = self.__dict__.setdefault("_rendering_warned", set())
        for key in {rendering_of(i) for i in images} - {None, own} - seen:
            seen.add(key)
            warnings.warn(f"{self.name} sees organism scenes drawn as {own}, but these were drawn as {key}: its "
                          f"answers on them say little; draw them with loaded.examples(...) or "
                          f"rendering=loaded.rendering", RenderingMismatch, stacklevel=4)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def _need_processor(self):
        if self.processor is None:
            raise InputError(f"{self.name} was loaded without a processor; pass processor=... to wrap_model")
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
        pils = [as_pil(i) for i in images]  # paths are opened here, when the batch is encoded
        self._check_rendering(pils)
        tok = self.tokenizer
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            # one image per prompt, as a nested list (the form every processor takes; Gemma3 needs it)
            enc = processor(text=list(texts), images=[[p] for p in pils], return_tensors="pt", padding=True)
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
    def keeps_last_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (every HF family here does; a wrapped model
        of another kind may not), so that a pass reading only the last position computes only its logits."""
        import inspect

        if "_keeps_last" not in self.__dict__:
            self.__dict__["_keeps_last"] = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        return self.__dict__["_keeps_last"]

    @property
    def last_only(self) -> dict:
        """The forward kwargs that compute the vocabulary head at the last position only (when taken)."""
        return {"logits_to_keep": 1} if self.keeps_last_logits else {}

    def forward(self, inputs: Mapping[str, torch.Tensor], last_only: bool = True, **kwargs):
        """One prompt pass without a cache; ``last_only``: the vocabulary head runs on the last position only
        (``logits_to_keep=1``; its logits are those of the full head to the last bit in bf16 and to ~1e-7 in
        float32, where another matrix size takes another kernel), so ``.logits`` is ``[B, 1, V]``."""
        if last_only:
            kwargs = {**self.last_only, **kwargs}
        return self.model(**inputs, use_cache=False, **kwargs)

    def last_logits(self, inputs: Mapping[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """``[B, V]``: the vocabulary logits at the last prompt position (what answers an option question);
        the head is computed at that position only."""
        return self.forward(inputs, **kwargs).logits[:, -1]

    @property
    def traced(self):
        """The model wrapped by nnsight (created once; the HF model itself is unchanged)."""
        if self._traced is None:
            from nnsight import NNsight

            self._traced = NNsight(self.model)
        return self._traced


def _resolve_dtype(dtype) -> torch.dtype | None:
    """A torch dtype from its name; None (and "auto") = the checkpoint's own dtype."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return None if dtype == "auto" else dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise InputError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(names)}")
    return names[dtype]


class ModelLoadError(UserError, OSError):
    """A model that cannot be loaded; the message names the source and the fix."""


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, refused with the fix when this torch build or machine cannot use it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise InputError(f"--device {device}: no CUDA device is usable here (torch {torch.__version__} is {build}); "
                         f"use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return dev


def looks_like_path(name: str) -> bool:
    """A name that can only be a local path: absolute, ./ ../ ~, or more than one '/' (a hub id has one)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


def check_model_source(name_or_path: str | Path | None) -> str | Path:
    """Where a model loads from, checked without reading weights or asking the hub."""
    name = "organism" if name_or_path is None else str(name_or_path)
    if not name.strip():
        raise InputError("--model is empty: pass 'organism', a Hugging Face model id or a local model directory")
    if name in ORGANISM_NAMES:
        if not (organism_path(name) / "config.json").exists():
            raise MissingInput(f"the shipped organism {name!r} is missing at {organism_path(name)}; retrain it "
                                    f"with `python -m heads.organism train --install`")
        return organism_path(name)
    source = Path(name).expanduser()
    if isinstance(name_or_path, Path) or looks_like_path(name) or source.exists():
        if not source.exists():
            raise MissingInput(f"no model directory at {name}: pass an existing local directory, a Hugging Face "
                                    f"model id (e.g. llava-hf/llava-1.5-7b-hf), or 'organism'")
        if not source.is_dir():
            raise MissingInput(f"{name} is a file, not a model directory: pass the folder that holds config.json")
        if not (source / "config.json").exists():
            raise MissingInput(f"{name} has no config.json: it is not a saved Hugging Face model directory")
        return source
    cached = hub_cached(name)
    if "/" not in name and not cached:  # a hub id is owner/name; a bare word is a folder that is not there
        raise MissingInput(f"no such directory {name!r} (and it is not a Hugging Face id in the local cache: "
                                f"those read owner/name, e.g. llava-hf/llava-1.5-7b-hf); check the path, or "
                                f"pass 'organism'")
    if not cached and hub_offline():
        raise MissingInput(f"{name}: offline (HF_HUB_OFFLINE is set), and not in the local cache "
                                f"({hub_cache_dir()}): download it on a machine with network access, or pass a "
                                f"local model directory")
    return name


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")


def default_attention(device: torch.device, device_map) -> str:
    """Eager on CPU (this project's reference numbers and benchmarks), SDPA on accelerators and with a
    device map. Nothing here needs eager everywhere: ScalingVis/AdaptVis switch the text decoder to their
    own registered attention while they act, and the image-attention score switches to eager itself."""
    return "sdpa" if device_map is not None or device.type != "cpu" else "eager"


def load_model(name_or_path: str | Path | None = None, *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None, attn_implementation: str | None = None,
               device_map: str | dict | None = None, max_memory: dict | None = None,
               processor: Any = None, allow_random_init: bool = False) -> LoadedModel:
    """Load a VLM by HF id or local directory (``None`` / ``"organism"`` = the shipped organism).

    ``dtype``: None = the checkpoint's own dtype (bf16 for most real VLMs; float32 for the organism),
    except on a CPU without fast kernels for it (``vlmheads.machine.cpu_dtype``): float32 then, and
    ``loaded.notes`` says so; ``"auto"`` = the checkpoint's own always.
    ``device_map`` (e.g. ``"auto"``, needs accelerate) spreads the layers over the visible devices (and
    ``max_memory``); ``device`` is then ignored. ``attn_implementation``: None = ``default_attention``.
    Device, dtype and source are checked first, and the architecture is read from the config before
    any weights, so an unsupported model fails fast, with the list of supported families. Damaged
    files fail with the file named, and so do weights that do not cover the model's modules (a weight
    missing, one left over, a config whose layer count is not the weights'): transformers would fill the
    gaps with random values and drop the rest. ``allow_random_init`` loads such a model as transformers
    builds it (a directory with config.json and no weights at all: randomly initialised throughout), and
    ``notes`` says what was random or dropped.
    """
    import transformers

    name = "organism" if name_or_path is None else str(name_or_path)
    dev = check_device(device)
    torch_dtype = _resolve_dtype(dtype) or "auto"
    if attn_implementation is not None and attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise InputError(f"unknown attention implementation {attn_implementation!r}; use one of "
                         f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if device_map is not None:
        check_device_map(device_map)
    attn = attn_implementation or default_attention(dev, device_map)
    source = check_model_source(name_or_path)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        if isinstance(source, str) and not hub_cached(source):  # a hub id that the network did not bring
            raise ModelLoadError(f"cannot reach the Hugging Face hub for {name} (offline?), and it is not in the "
                                 f"local cache ({hub_cache_dir()}): download it where there is network, or pass "
                                 f"a local model directory ({str(err).splitlines()[0]})") from None
        raise ModelLoadError(f"cannot read the config of {name}: {str(err).splitlines()[0]}") from None
    notes: list[str] = []
    if dtype is None and device_map is None and dev.type == "cpu":
        from ..machine import cpu_dtype

        own = getattr(config, "dtype", None) or getattr(config.get_text_config(), "dtype", None)
        try:
            own = _resolve_dtype(str(own).replace("torch.", "")) if own is not None else None
        except ValueError:  # a dtype this suite does not name (e.g. float64): left as the checkpoint says
            own = None
        chosen, note = cpu_dtype(own)
        if chosen is not None:
            torch_dtype = chosen
            notes.append(note)
    adapter = find_adapter(config)  # refused and unknown models stop here, before any weights
    cls = getattr(transformers, adapter.architectures[0]) if adapter is not None else model_class(config)
    placement = {} if device_map is None else {"device_map": device_map,
                                                **({"max_memory": max_memory} if max_memory else {})}

    directory = source_directory(source)
    files = [p.name for p in weight_files(directory)] if directory is not None else []
    if isinstance(source, Path) and not files and not allow_random_init:
        raise ModelLoadError(f"{name} has no weight files beside its config.json (model.safetensors, its shards or "
                             f"pytorch_model.bin): save them there, or pass --allow-random-init "
                             f"(allow_random_init=True) to build the model with random weights (recorded)")
    try:
        if allow_random_init and directory is not None and not files:  # a config and nothing else: random weights
            model = cls._from_config(config, dtype=torch_dtype if torch_dtype != "auto" else None,
                                     attn_implementation=attn)
            info = {"missing_keys": set(model.state_dict())}
        else:
            with _quiet_transformers():  # its load report; what matters is said below, in one line
                model, info = cls.from_pretrained(source, dtype=torch_dtype, attn_implementation=attn,
                                                  output_loading_info=True, **placement)
    except ImportError as err:  # e.g. flash_attention_2 without its package
        raise ModelLoadError(f"cannot load {name} with attn_implementation={attn!r}: {str(err).splitlines()[0]}") \
            from None
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers each raise their own types
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ModelLoadError(f"cannot read the weights of {name}: {type(err).__name__}: {first}; the files may be "
                             f"truncated or damaged: re-download or re-save the model") from None
    problem = coverage_problem(info, files, model.state_dict().keys())
    if problem and not allow_random_init:
        raise ModelLoadError(f"{name}: its weights do not cover the model: {problem}; the files are damaged or "
                             f"belong to another config: re-save the model, or pass --allow-random-init "
                             f"(allow_random_init=True) to run it as transformers builds it (recorded)")
    if problem:
        notes.append(f"note: --allow-random-init: {name} runs with weights that do not cover it: {problem}")
    if device_map is None:
        model.to(dev)
    model.eval()
    try:
        adapter = adapter or adapter_for(model)
    except AdapterError as err:
        raise type(err)(f"{name}: {err}") from None
    if processor is None:
        processor = load_processor(source, getattr(config, "model_type", None))
    return LoadedModel(model=model, processor=processor, adapter=adapter, name=name, notes=tuple(notes),
                       source=source_identity(source), random_init=problem)


@contextmanager
def _quiet_transformers():
    """transformers' warnings off while a model loads (its load report would repeat, as a table, what
    ``load_model`` says in one line); restored after."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def parse_max_memory(spec: str | None) -> dict | None:
    """``"0=70GiB,1=70GiB,cpu=120GiB"`` -> ``{0: "70GiB", 1: "70GiB", "cpu": "120GiB"}``: accelerate's
    per-device caps for a device map (GPU index, ``cpu`` or ``disk`` = a size with its unit)."""
    if spec is None:
        return None
    caps: dict = {}
    for part in (p.strip() for p in spec.split(",")):
        device, _, size = (x.strip() for x in part.partition("="))
        if not size or not (device.isdigit() or device.lower() in ("cpu", "disk", "mps")):
            raise InputError(f"--max-memory entry {part!r} is not DEVICE=SIZE; use e.g. 0=70GiB,cpu=120GiB "
                             f"(a GPU index, cpu or disk)")
        if not _MEMORY_SIZE.fullmatch(size):
            raise InputError(f"--max-memory size {size!r} for {device} has no unit; use e.g. 70GiB, 500MB")
        key = int(device) if device.isdigit() else device.lower()
        if key in caps:
            raise InputError(f"--max-memory names {device} twice")
        caps[key] = size.replace(" ", "")
    return caps


def check_device_map(device_map) -> None:
    """A device map needs accelerate; strings are accelerate's strategies."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        raise InputError("--device-map needs the accelerate package: pip install accelerate")
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential") \
            and not device_map.startswith(("cpu", "cuda", "mps")):
        raise InputError(f"unknown device map {device_map!r}; use auto, balanced, sequential or a device")


def wrap_model(model: torch.nn.Module, processor: Any = None, name: str | None = None,
               adapter: Adapter | None = None) -> LoadedModel:
    """A ``LoadedModel`` around any in-memory HF VLM (one you built, fine-tuned or loaded yourself):
    refused families are refused as by ``load_model``; ``adapter`` (default: the registered one, else the
    generic adapter read from the model) is checked against the model's modules."""
    if adapter is None:
        adapter = adapter_for(model)
    return LoadedModel(model=model.eval(), processor=processor, adapter=adapter, name=name or type(model).__name__)
