"""The generic adapter: a VLM's structure read from the model itself, for families nobody declared.

Every HF VLM exposes the same few handles, and this reads them instead of a hand-written declaration:

    decoder      model.get_decoder() (followed down to the module that holds ``layers``)
    layers       <decoder>.layers, each with ``self_attn.o_proj`` (the head site)
    final norm   <decoder>.norm
    LM head      model.get_output_embeddings()
    vision       the shallowest module named vision_tower / visual / vision_model / vision_encoder
    projector    the shallowest module named multi_modal_projector / connector / merger / mlp1 / ...
    image token  config.image_token_id (or image_token_index)

The head geometry is then checked against the modules (``Adapter.check``), exactly as for a declared
adapter, so a model whose layers do not fit is refused with the reason, not misread.
"""

from __future__ import annotations

import torch

from .adapter import Adapter, AdapterError

VISION_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder", "vision_embed_tokens")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mlp1", "mm_projector", "projector",
                   "vision_projection", "aligner")


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The module holding the decoder layers: ``get_decoder()``, followed while it returns a wrapper."""
    get = getattr(model, "get_decoder", None)
    if get is None:
        raise AdapterError(f"{type(model).__name__} has no get_decoder(): declare an Adapter for it")
    decoder = get()
    for _ in range(4):  # e.g. Llama-4: get_decoder() is a causal-LM wrapper whose .model holds the layers
        if isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
            return decoder
        inner = decoder.get_decoder() if hasattr(decoder, "get_decoder") else None
        if inner is None or inner is decoder:
            inner = getattr(decoder, "model", None)
        if not isinstance(inner, torch.nn.Module) or inner is decoder:
            break
        decoder = inner
    raise AdapterError(f"{type(model).__name__}: the decoder ({type(decoder).__name__}) has no list of layers: "
                       f"declare an Adapter for it")


def _find(paths: dict[str, torch.nn.Module], names: tuple[str, ...], outside: str) -> str | None:
    """The shallowest module path whose last part is one of ``names`` (earlier names first), not inside
    ``outside`` (the decoder)."""
    for name in names:
        found = [p for p in paths if p.rsplit(".", 1)[-1] == name and not p.startswith(outside + ".")]
        if found:
            return min(found, key=lambda p: p.count("."))
    return None


def derive_adapter(model: torch.nn.Module) -> Adapter:
    """An ``Adapter`` read from ``model``'s modules (see the module docstring); raises ``AdapterError``
    naming what is missing."""
    paths = {name: module for name, module in model.named_modules() if name}
    path_of = {id(module): name for name, module in paths.items()}
    decoder = _decoder(model)
    decoder_path = path_of.get(id(decoder))
    if decoder_path is None:
        raise AdapterError(f"{type(model).__name__}: get_decoder() returned a module outside the model")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or id(head) not in path_of:
        raise AdapterError(f"{type(model).__name__} has no output embeddings (LM head): declare an Adapter for it")
    config = model.config
    architectures = tuple(getattr(config, "architectures", None) or ()) or (type(model).__name__,)
    return Adapter(
        family=str(getattr(config, "model_type", None) or type(model).__name__),
        architectures=architectures,
        model_types=(str(getattr(config, "model_type", "")),),
        layers=f"{decoder_path}.layers",
        vision_tower=_find(paths, VISION_NAMES, decoder_path),
        projector=_find(paths, PROJECTOR_NAMES, decoder_path),
        lm_head=path_of[id(head)],
        final_norm=f"{decoder_path}.norm",
        derived=True,
        notes="read from the model (generic adapter)",
    )
