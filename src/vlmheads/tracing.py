"""Read and overwrite per-head attention outputs through nnsight traces (the same head site as
``vlmheads.site``, reached through nnsight's envoys instead of hooks).

The head site is the input of each decoder layer's ``o_proj``: the concatenated per-head outputs
``softmax(q k^T) v`` before the output projection mixes them. It is viewed as

    z: [batch, pos, n_heads, head_dim]      (a view: writing into it edits the model's activation)

(not the attention module's output, which is after o_proj and no longer split by head).

    read_heads(loaded, inputs, layers)          -> {layer: z}                 read only
    edit_heads(loaded, inputs, {layer: fn})     -> TraceResult(logits, heads) fn(z) edits z in place

Edits run in layer order. An empty edit runs the plain forward: its logits are bit-identical to
``loaded.model(**inputs).logits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

from .sites import heads as site
from .models.adapter import resolve
from .models.loading import LoadedModel

HeadEdit = Callable[[torch.Tensor], None]  # receives z [batch, pos, n_heads, head_dim]; edits it in place


@dataclass
class TraceResult:
    logits: torch.Tensor  # [batch, pos, vocab]
    heads: dict[int, torch.Tensor]  # layer -> [batch, pos, n_heads, head_dim], after that layer's edit


def _check_layers(loaded: LoadedModel, layers: Iterable[int]) -> list[int]:
    layers = sorted(set(int(layer) for layer in layers))
    for layer in layers:
        loaded.geometry.check_head(layer, 0)
    return layers


def edit_heads(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor],
               edits: Mapping[int, HeadEdit] | None = None, read: Iterable[int] = ()) -> TraceResult:
    """One traced forward pass: apply ``edits`` at the head site of their layers, save ``read`` layers."""
    import nnsight

    edits = dict(edits or {})
    edit_layers = _check_layers(loaded, edits)
    read_layers = _check_layers(loaded, read)
    order = sorted(set(edit_layers) | set(read_layers))
    traced = loaded.traced
    with torch.no_grad(), traced.trace(**inputs):
        saved = {}
        for layer in order:
            z = site.head_view(loaded.geometry, resolve(traced, loaded.adapter.o_proj_path(layer)).input)
            if layer in edits:
                edits[layer](z)
            if layer in read_layers:
                saved[layer] = z.clone()
        saved = nnsight.save(saved)
        logits = traced.output.logits.save()
    return TraceResult(logits=logits, heads=dict(saved))


def read_heads(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor],
               layers: Iterable[int] | None = None) -> dict[int, torch.Tensor]:
    """Per-head outputs ``{layer: [batch, pos, n_heads, head_dim]}`` (all layers by default)."""
    layers = range(loaded.geometry.n_layers) if layers is None else layers
    return edit_heads(loaded, inputs, {}, read=layers).heads


def set_head(head: int, value: torch.Tensor | float, positions=slice(None)) -> HeadEdit:
    """An edit that overwrites one head at ``positions`` (``value`` broadcasts to ``[batch, pos, head_dim]``)."""
    def edit(z):
        z[:, positions, head] = value
    return edit
