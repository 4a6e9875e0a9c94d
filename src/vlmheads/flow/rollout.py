"""Attention rollout and attention flow (Abnar & Zuidema 2020), from the answer position to the image
patches, held against per-patch knockout.

Both read the attention weights only, so both are descriptive: they say where attention *could* carry
information, not where it does. Per layer, the heads' attention is averaged and the residual added,
A' = (A + I) / 2 (rows renormalised);

    rollout:  R = A'_L ... A'_1; a patch's importance = R[answer, patch]
    flow:     the maximum flow from the answer position at the top to the patch at the input, through
              the layered graph whose edge capacities are A' (networkx; prompts up to ``MAX_FLOW_TOKENS``)

and the causal answer beside them: per-patch knockout (the answer position may not attend to that one
patch, in every layer; the drop of the logit difference). Agreement: Spearman's rank correlation of
the patches' importance with their knockout drops, per example, averaged.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..interventions.installation import text_attention
from ..methods.batches import OptionBatch
from ..methods.selection import accuracy_summary
from ..models.loading import LoadedModel
from .knockout import knockout

MAX_FLOW_TOKENS = 96


def layer_attention(loaded: LoadedModel, batch: OptionBatch) -> list[torch.Tensor]:
    """Per decoder layer, the heads' mean attention ``[B, S, S]`` (eager for these passes)."""
    with torch.no_grad(), text_attention(loaded, "eager"):
        out = loaded.model(**batch.inputs, output_attentions=True, use_cache=False)
    return [a.float().mean(1).cpu() for a in out.attentions]


def _with_residual(att: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(att.shape[-1])[None]
    mixed = 0.5 * att + 0.5 * eye
    return mixed / mixed.sum(-1, keepdim=True)


def rollout(atts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, S]``: rolled-out attention of the last position over the input tokens."""
    joint = None
    for att in atts:  # layer 0 first
        a = _with_residual(att)
        joint = a if joint is None else a @ joint
    return joint[:, -1]


def attention_flow(atts: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: maximum flow from the last position (top) to each target position ``targets [B, T]``."""
    import networkx as nx

    layers = [_with_residual(a) for a in atts]
    n_layers, (batch, seq) = len(layers), layers[0].shape[:2]
    if seq > MAX_FLOW_TOKENS:
        raise ValueError(f"attention flow on {seq}-token prompts is too slow (max {MAX_FLOW_TOKENS}); use rollout")
    out = torch.zeros(targets.shape, dtype=torch.float32)
    for b in range(batch):
        graph = nx.DiGraph()
        for layer, a in enumerate(layers):  # edges from (layer + 1, query) to (layer, key)
            weights = a[b]
            for q in range(seq):
                for k in range(q + 1):
                    w = float(weights[q, k])
                    if w > 0:
                        graph.add_edge((layer + 1, q), (layer, k), capacity=w)
        for t, pos in enumerate(targets[b].tolist()):
            out[b, t] = nx.maximum_flow_value(graph, (n_layers, seq - 1), (0, pos))
    return out


def patch_knockout(loaded: LoadedModel, batch: OptionBatch) -> torch.Tensor:
    """``[B, n_image]``: logit-difference drop when the answer position may not attend to one image token,
    in every layer (one pass per image token)."""
    image = loaded.image_token_mask(batch.inputs)
    n_image = int(image[0].sum())
    positions = torch.stack([row.nonzero()[:, 0] for row in image])  # [B, n_image]
    drops = []
    for p in range(n_image):
        blocked = torch.zeros(*image.shape, image.shape[1], dtype=torch.bool)
        blocked[torch.arange(image.shape[0]), -1, positions[:, p]] = True
        drops.append(_drop(loaded, batch, blocked))
    return torch.stack(drops, 1)


def _drop(loaded: LoadedModel, batch: OptionBatch, blocked: torch.Tensor) -> torch.Tensor:
    from ..methods.batches import metric

    with torch.no_grad():
        plain = loaded.model(**batch.inputs, use_cache=False).logits[:, -1]
        with knockout(loaded, range(loaded.geometry.n_layers), blocked):
            cut = loaded.model(**batch.inputs, use_cache=False).logits[:, -1]
    return (metric(plain, batch.option_ids, batch.answer) - metric(cut, batch.option_ids, batch.answer)).cpu()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


def rollout_vs_knockout(loaded: LoadedModel, batches: Sequence[OptionBatch], flow_examples: int = 16) -> dict:
    """Per-patch importance by rollout and flow, per-patch knockout drops, and their agreement."""
    rolled, flowed, knocked, n_flow = [], [], [], 0
    for batch in batches:
        atts = layer_attention(loaded, batch)
        image = loaded.image_token_mask(batch.inputs)
        positions = torch.stack([row.nonzero()[:, 0] for row in image]).cpu()  # [B, n_image]
        rolled.append(rollout(atts).gather(1, positions))
        knocked.append(patch_knockout(loaded, batch))
        take = max(0, min(flow_examples - n_flow, positions.shape[0]))
        if take and image.shape[1] <= MAX_FLOW_TOKENS:
            flowed.append(attention_flow([a[:take] for a in atts], positions[:take]))
            n_flow += take
    rolled, knocked = torch.cat(rolled), torch.cat(knocked)  # [N, n_image]
    flowed = torch.cat(flowed) if flowed else None
    agree_rollout = torch.tensor([_spearman(r, k) for r, k in zip(rolled, knocked)])
    out = {"rollout": rolled, "knockout": knocked, "flow": flowed,
           "spearman_rollout": accuracy_summary(agree_rollout)}
    if flowed is not None:
        out["spearman_flow"] = accuracy_summary(
            torch.tensor([_spearman(f, k) for f, k in zip(flowed, knocked[:len(flowed)])]))
    return out
