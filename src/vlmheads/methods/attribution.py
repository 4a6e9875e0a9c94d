"""Attribution patching: a first-order estimate of every head's patching effect from one backward pass.

For the clean run's metric m and each head's output z (all positions),

    effect(head) ~= -(dm/dz) . (z_corrupt - z_clean)      (summed over positions and head_dim)

estimates the drop of m when the head's corrupted output is patched in (noising). Cost per batch:
one clean forward with gradients, one backward pruned to the head outputs, one corrupted forward
without gradients that stops at the last layer's head outputs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch

from .. import parallel
from ..sites import heads as site
from ..models.loading import LoadedModel
from .batches import OptionBatch, metric, take_rows
from .effects import by_sub_batches


class _Enough(Exception):
    """Raised once the last layer's head outputs are recorded: the rest of the pass is not needed."""


def _z_pass(loaded: LoadedModel, inputs, grad: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Head outputs ``z [B, S, H, D]`` of every layer (and, with ``grad``, the last-position logits they lead to).

    Without ``grad`` only the head outputs are wanted, so the pass stops at the last layer's
    ``o_proj`` (its MLP, the final norm and the LM head are skipped)."""
    g = loaded.geometry
    saved: list[torch.Tensor] = []

    def record(z):
        saved.append(z)
        if not grad and len(saved) == g.n_layers:
            raise _Enough

    handles = []
    if grad:  # weights stay frozen: the graph starts at the token embeddings
        handles.append(loaded.model.get_input_embeddings().register_forward_hook(
            lambda module, args, output: output.detach().requires_grad_(True)))
    logits = None
    try:
        with torch.set_grad_enabled(grad), site.hooks(loaded, {layer: record for layer in range(g.n_layers)}):
            logits = loaded.last_logits(inputs)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()
    return saved, logits


@contextmanager
def _frozen(loaded: LoadedModel):
    """Weights without gradients for the block (the graph starts at the token embeddings), restored after."""
    params = list(loaded.model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def attribution_effects(loaded: LoadedModel, clean: Sequence[OptionBatch], corrupt: Sequence[OptionBatch],
                        metric_name: str = "logit_diff", rows: int | None = None) -> torch.Tensor:
    """Estimated noising effects ``[n_examples, n_layers, n_heads]`` (pairs from ``pair_batches``), in
    sub-batches of ``rows`` (default from the free memory; ``by_sub_batches``)."""
    def one(pair) -> torch.Tensor:
        c, k = pair
        B, S = c.inputs["input_ids"].shape
        return by_sub_batches(loaded, B, S, lambda take: _noising_estimate(loaded, c, k, take, metric_name), rows)

    with _frozen(loaded):
        return torch.cat(parallel.map_batches(one, list(zip(clean, corrupt)), "attribution patching"))


def _noising_estimate(loaded: LoadedModel, c: OptionBatch, k: OptionBatch, rows: list[int],
                      metric_name: str) -> torch.Tensor:
    """``[len(rows), L, H]``: the attribution estimate of ``rows`` of a clean batch and its corrupted twin."""
    whole = len(rows) == c.size
    index = torch.tensor(rows, device=c.answer.device)
    clean = c.inputs if whole else take_rows(loaded, c.inputs, rows)
    corrupt = k.inputs if whole else take_rows(loaded, k.inputs, rows)
    option_ids, answer = (c.option_ids, c.answer) if whole else (c.option_ids[index], c.answer[index])
    z_clean, logits = _z_pass(loaded, clean, grad=True)
    # gradients only where they are needed: autograd.grad prunes the graph to the o_proj inputs
    grads = torch.autograd.grad(metric(logits, option_ids, answer, metric_name).sum(), z_clean)
    with torch.no_grad():
        z_corrupt, _ = _z_pass(loaded, corrupt, grad=False)
        per_layer = []
        for zc, gz, zk in zip(z_clean, grads, z_corrupt):  # each [b, S, H, D]
            per_layer.append(-(gz * (zk - zc.detach())).sum((1, 3)))  # [b, H]
    return torch.stack(per_layer, 1).float().cpu()  # [b, L, H]
