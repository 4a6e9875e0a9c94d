"""The residual site: the first decoder layer's input, where the image tokens enter the language model
(``hidden [B, S, hidden]``, after the projector has put the image features in the image tokens' places).
VisionBoost adds to it; its directions are fitted from what ``read`` returns.

    hook(loaded, fn)     a forward pre-hook: hidden = fn(hidden) (None leaves it), every call, until removed
    read(loaded, inputs) one plain forward pass, the hidden states at that input recorded
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Mapping

import torch

from ..models.adapter import resolve
from ..models.loading import LoadedModel

HiddenFn = Callable[[torch.Tensor], "torch.Tensor | None"]  # hidden [B, S, hidden] -> replacement or None


def first_layer(loaded: LoadedModel) -> torch.nn.Module:
    return resolve(loaded.model, loaded.adapter.layers)[0]


@contextmanager
def hook(loaded: LoadedModel, fn: HiddenFn):
    """Call ``fn(hidden)`` at the first decoder layer's input on every forward call of the block; what it
    returns (when not None) replaces the hidden states. Removed on exit, also on error."""
    def pre_hook(mod, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        out = fn(hidden)
        if out is None:
            return None
        return ((out,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": out})

    handle = first_layer(loaded).register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def read(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``hidden [B, S, hidden]`` at the first decoder layer's input, from one plain forward pass."""
    seen: dict = {}
    with torch.no_grad(), hook(loaded, lambda hidden: seen.__setitem__("h", hidden.detach())):
        loaded.model(**inputs, use_cache=False)
    return seen["h"]
