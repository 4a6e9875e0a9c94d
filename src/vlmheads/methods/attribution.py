"""Attribution patching: a first-order estimate of every head's patching effect from one backward pass.

For the clean run's metric m and each head's output z (all positions),

    effect(head) ~= -(dm/dz) . (z_corrupt - z_clean)      (summed over positions and head_dim)

estimates the drop of m when the head's corrupted output is patched in (noising). Cost per batch:
one clean forward with gradients, one backward, one corrupted forward without gradients.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.loading import LoadedModel
from .batches import OptionBatch, metric


def _z_pass(loaded: LoadedModel, inputs, grad: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = loaded.geometry
    saved: list[torch.Tensor] = []
    handles = []

    def hook(module, args):
        x = args[0]
        if grad:
            x.retain_grad()
        saved.append(x)

    for layer in range(g.n_layers):
        handles.append(loaded.adapter.o_proj_module(loaded.model, layer).register_forward_pre_hook(hook))
    if grad:  # weights stay frozen: the graph starts at the token embeddings
        handles.append(loaded.model.get_input_embeddings().register_forward_hook(
            lambda module, args, output: output.detach().requires_grad_(True)))
    try:
        with torch.set_grad_enabled(grad):
            logits = loaded.model(**inputs, use_cache=False).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    return saved, logits


def attribution_effects(loaded: LoadedModel, clean: Sequence[OptionBatch], corrupt: Sequence[OptionBatch],
                        metric_name: str = "logit_diff") -> torch.Tensor:
    """Estimated noising effects ``[n_examples, n_layers, n_heads]`` (pairs from ``pair_batches``)."""
    g = loaded.geometry
    out = []
    params = [p for p in loaded.model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        for c, k in zip(clean, corrupt):
            z_clean, logits = _z_pass(loaded, c.inputs, grad=True)
            metric(logits, c.option_ids, c.answer, metric_name).sum().backward()
            with torch.no_grad():
                z_corrupt, _ = _z_pass(loaded, k.inputs, grad=False)
                per_layer = []
                for zc, zk in zip(z_clean, z_corrupt):
                    prod = zc.grad * (zk - zc)  # [B, S, H * D]
                    per_layer.append(-prod.view(*prod.shape[:2], g.n_heads, g.head_dim).sum((1, 3)))  # [B, H]
                out.append(torch.stack(per_layer, 1).float().cpu())  # [B, L, H]
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return torch.cat(out)
