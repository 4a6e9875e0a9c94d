"""Loading a model's processor, with an image-only fallback for processors whose video half needs torchvision.

transformers builds a processor's video processor whenever it builds the processor (Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, InternVL, LLaVA-OneVision...), and without torchvision that fails. This suite only feeds
images, so when the full processor cannot be built the same processor class is assembled without its
video half (image processor + tokenizer + chat template read from the same directory): text and image
inputs come out exactly as the full processor's. ``image_only(cls)`` makes that class for any processor.
An image processor that transformers ships for torchvision only (Llama-4's) is replaced by this suite's
PIL version (``pil_image_processors``).

A few processor classes (Pixtral's, for Mistral3) are not even importable without torchvision, only
because their module imports a helper from the torchvision image processor; ``processor_class`` then
imports them with the image processor's PIL twin standing in for that module.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from pathlib import Path

import transformers as tf

IMAGE_ONLY_PREFIX = "ImageOnly"


@functools.cache
def image_only(cls: type) -> type:
    """``cls`` without its video processor: constructed as ``cls(image_processor=..., tokenizer=...,
    video_processor=None, ...)`` (the class's own ``__init__`` still sets its image tokens), saved and
    checked without a video attribute."""
    base_attributes = cls.get_attributes

    def get_attributes(klass):
        return [a for a in base_attributes() if "video" not in a]

    return type(f"{IMAGE_ONLY_PREFIX}{cls.__name__}", (cls,), {"get_attributes": classmethod(get_attributes),
                                                               "__doc__": f"{cls.__name__} without its video half."})


def has_video_half(cls: type) -> bool:
    return any("video" in a for a in cls.get_attributes())


def processor_class(source, model_type: str | None) -> type | None:
    """The processor class a checkpoint names (processor_config.json), else the one transformers maps its
    model type to; None when neither names a class transformers has."""
    names = [_saved_settings(source).get("processor_class") or ""]
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    names.append(PROCESSOR_MAPPING_NAMES.get(model_type or "") or "")
    for name in names:
        name = name.removeprefix(IMAGE_ONLY_PREFIX)
        if name and hasattr(tf, name):
            return usable_class(name)
    return None


def usable_class(name: str) -> type:
    """``transformers.<name>``; when that is only a placeholder for want of torchvision, the class itself,
    imported with the PIL image processing module standing in for the torchvision one."""
    cls = getattr(tf, name)
    if not getattr(cls, "_backends", None):  # a real class (placeholders list the backends they miss)
        return cls
    return _import_without_torchvision(name) or cls


@functools.cache
def _import_without_torchvision(name: str) -> type | None:
    models = Path(tf.__file__).parent / "models"
    for path in sorted(models.glob("*/processing_*.py")):
        if f"class {name}(" not in path.read_text():
            continue
        package = f"transformers.models.{path.parent.name}"
        twin = path.parent / f"image_processing_pil_{path.parent.name}.py"
        stand_in = f"{package}.image_processing_{path.parent.name}"
        if not twin.exists() or stand_in in sys.modules:
            return None
        sys.modules[stand_in] = importlib.import_module(f"{package}.image_processing_pil_{path.parent.name}")
        try:
            return getattr(importlib.import_module(f"{package}.{path.stem}"), name)
        except ImportError:
            return None
        finally:
            del sys.modules[stand_in]
    return None


def load_processor(source, model_type: str | None = None):
    """``AutoProcessor.from_pretrained(source)``, or the image-only processor when that fails."""
    try:
        processor = tf.AutoProcessor.from_pretrained(source)
        if getattr(processor, "image_processor", None) is not None:
            return processor
        # AutoProcessor falls back to the bare tokenizer when it cannot build the processor class
        first_error = ValueError(f"AutoProcessor gave a {type(processor).__name__} without an image processor")
    except (AttributeError, ImportError, OSError, ValueError, TypeError) as err:
        first_error = err
    cls = processor_class(source, model_type) if Path(str(source)).is_dir() else None
    if cls is None or getattr(cls, "_backends", None):
        raise OSError(f"cannot build an image processor for {source}: {first_error}; save the model's processor "
                      f"beside it (processor.save_pretrained)")
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(source)
        image_processor = _image_processor(source)
        extra = _processor_kwargs(source, cls)
        template = getattr(tokenizer, "chat_template", None)
        if has_video_half(cls):
            cls, extra = image_only(cls), {**extra, "video_processor": None}
        return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template, **extra)
    except (AttributeError, ImportError, OSError, TypeError, ValueError) as err:
        first = (str(first_error).splitlines() or [""])[0].split(". ")[0]
        raise OSError(f"cannot build an image processor for {source}: {first}; the fallback without video/"
                      f"torchvision failed too ({(str(err).splitlines() or [''])[0].split('. ')[0]}); save the "
                      f"model's processor beside it (processor.save_pretrained)") from err


def _image_processor(source):
    """``AutoImageProcessor.from_pretrained(source)``, or this suite's PIL version of a processor that
    transformers ships for torchvision only (``pil_image_processors``)."""
    try:
        return tf.AutoImageProcessor.from_pretrained(source)
    except (ImportError, ValueError, OSError) as err:
        from .pil_image_processors import PIL_VERSIONS

        saved = _saved_settings(source).get("image_processor") or {}
        if not saved and (Path(source) / "preprocessor_config.json").exists():
            saved = json.loads((Path(source) / "preprocessor_config.json").read_text())
        pil = PIL_VERSIONS.get(str(saved.get("image_processor_type", "")).removesuffix("Pil"))
        if pil is None:
            raise err
        settings = {k: v for k, v in saved.items() if k != "image_processor_type"}
        return pil(**settings)


def _saved_settings(source) -> dict:
    """The checkpoint's processor_config.json; empty when it has none or it is unreadable."""
    config = Path(source) / "processor_config.json"
    try:
        return json.loads(config.read_text()) if config.exists() else {}
    except (OSError, ValueError):
        return {}


def _processor_kwargs(source, cls: type) -> dict:
    """The processor's own saved settings (e.g. LLaVA-OneVision's ``num_image_tokens``) that its
    ``__init__`` takes."""
    import inspect

    saved = _saved_settings(source)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer",
                                                                    "video_processor", "chat_template"}
    return {k: v for k, v in saved.items() if k in accepted}
