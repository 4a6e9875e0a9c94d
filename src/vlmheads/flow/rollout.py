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

from ..sites.attention import attention_probabilities
from ..methods.batches import OptionBatch
from ..methods.selection import accuracy_summary
from ..models.loading import LoadedModel
from .knockout import knockout
from ..errors import InputError

MAX_FLOW_TOKENS = 96
FLOW_EXAMPLES = 16  # attention flow (networkx, slow) on this many examples


def image_positions(loaded: LoadedModel, inputs) -> torch.Tensor:
    """``[B, n_image]``: each row's image-token positions (rows with different numbers of image tokens,
    such as tiled images, cannot stack: a RuntimeError that flow reports as its reason to skip)."""
    return torch.stack([row.nonzero()[:, 0] for row in loaded.image_token_mask(inputs)])


def layer_attention(loaded: LoadedModel, batch: OptionBatch) -> list[torch.Tensor]:
    """Per decoder layer, the heads' mean attention ``[B, S, S]`` (eager for these passes)."""
    _, attentions = attention_probabilities(loaded, batch.inputs)  # L x [B, H, S, S]
    return [a.float().mean(1).cpu() for a in attentions]


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
        raise InputError(f"attention flow on {seq}-token prompts is too slow (max {MAX_FLOW_TOKENS}); use rollout")
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


def patch_knockout(loaded: LoadedModel, batch: OptionBatch, rows: int = 64) -> torch.Tensor:
    """``[B, n_image]``: logit-difference drop when the answer position may not attend to one image token,
    in every layer.

    Cutting the answer position's edges changes no other position, so the prompt minus its last token
    runs once into a KV cache and only the last token runs again, once per image token, many image
    tokens per pass: the cache is repeated ``c = rows // B`` times and row ``b * c + j`` cuts patch
    ``j`` of the chunk for example ``b``. The plain logits come from the same one-token pass with
    nothing cut, so the drop compares like with like. Models whose cache cannot be split this way fall
    back to one full pass per image token (``_patch_knockout_full``)."""
    import copy

    from transformers import DynamicCache

    from ..models.positions import repeat_step, split_last_token
    from ..methods.batches import metric

    model = loaded.model
    positions = image_positions(loaded, batch.inputs)  # [B, n_image]
    (B, n_image), S = positions.shape, batch.inputs["input_ids"].shape[1]
    layers = range(loaded.geometry.n_layers)
    prefix, step = split_last_token(model, batch.inputs)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(**prefix, past_key_values=cache, use_cache=True, **loaded.last_only)  # only its cache is read
        try:
            plain = model(**step, past_key_values=copy.deepcopy(cache)).logits[:, -1]  # [B, V]
        except (ValueError, RuntimeError, TypeError, IndexError):  # a cache this pass cannot split
            return _patch_knockout_full(loaded, batch)
        base = metric(plain, batch.option_ids, batch.answer)  # [B]
        drops = torch.zeros(B, n_image)
        per_pass = max(1, rows // B)
        for start in range(0, n_image, per_pass):
            chunk = list(range(start, min(n_image, start + per_pass)))
            c = len(chunk)
            repeated = copy.deepcopy(cache)
            repeated.batch_repeat_interleave(c)  # rows b * c + j
            blocked = torch.zeros(B, c, 1, S, dtype=torch.bool, device=positions.device)
            for j, p in enumerate(chunk):
                blocked[torch.arange(B), j, 0, positions[:, p]] = True
            with knockout(loaded, layers, blocked.view(B * c, 1, S)):  # [B * c, 1, S]
                cut = model(**repeat_step(step, c), past_key_values=repeated).logits[:, -1]  # [B * c, V]
            after = metric(cut, batch.option_ids.repeat_interleave(c, 0), batch.answer.repeat_interleave(c, 0))
            drops[:, chunk] = (base.repeat_interleave(c, 0) - after).view(B, c).float().cpu()
    return drops


def _patch_knockout_full(loaded: LoadedModel, batch: OptionBatch, patches: int | None = None) -> torch.Tensor:
    """``patch_knockout`` by whole prompt passes: one plain pass, then one pass per image token (the first
    ``patches`` of them when given: the benchmark times a few)."""
    from ..methods.batches import metric

    positions = image_positions(loaded, batch.inputs)  # [B, n_image]
    (B, n_image), S = positions.shape, batch.inputs["input_ids"].shape[1]
    with torch.no_grad():
        base = metric(loaded.last_logits(batch.inputs), batch.option_ids, batch.answer)
        drops = []
        for p in range(n_image if patches is None else min(patches, n_image)):
            blocked = torch.zeros(B, S, S, dtype=torch.bool, device=positions.device)
            blocked[torch.arange(B), -1, positions[:, p]] = True
            with knockout(loaded, range(loaded.geometry.n_layers), blocked):
                cut = loaded.last_logits(batch.inputs)
            drops.append((base - metric(cut, batch.option_ids, batch.answer)).float().cpu())
    return torch.stack(drops, 1)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denom if denom > 0 else 0.0


def rollout_batch(loaded: LoadedModel, batch: OptionBatch, flow_examples: int = FLOW_EXAMPLES) -> dict:
    """One batch's per-patch importance: rollout ``[B, n_image]``, per-patch knockout drops ``[B, n_image]``
    and, for up to ``flow_examples`` of its examples on short prompts, attention flow (else None)."""
    atts = layer_attention(loaded, batch)
    positions = image_positions(loaded, batch.inputs).cpu()  # [B, n_image]
    take = max(0, min(flow_examples, positions.shape[0]))
    flowed = attention_flow([a[:take] for a in atts], positions[:take]) \
        if take and batch.inputs["input_ids"].shape[1] <= MAX_FLOW_TOKENS else None
    return {"rollout": rollout(atts).gather(1, positions), "knockout": patch_knockout(loaded, batch),
            "flow": flowed}


def agreement_of(parts: Sequence[dict], flow_examples: int = FLOW_EXAMPLES) -> dict:
    """The batches' ``rollout_batch`` parts joined (flow: the first ``flow_examples`` examples that have
    it), with Spearman's agreement of rollout (and flow) with the knockout drops, per example."""
    rolled = torch.cat([p["rollout"] for p in parts])  # [N, n_image]
    knocked = torch.cat([p["knockout"] for p in parts])
    flowed = [p["flow"] for p in parts if p["flow"] is not None]
    flowed = torch.cat(flowed)[:flow_examples] if flowed else None
    agree_rollout = torch.tensor([_spearman(r, k) for r, k in zip(rolled, knocked)])
    out = {"rollout": rolled, "knockout": knocked, "flow": flowed,
           "spearman_rollout": accuracy_summary(agree_rollout)}
    if flowed is not None:
        out["spearman_flow"] = accuracy_summary(
            torch.tensor([_spearman(f, k) for f, k in zip(flowed, knocked[:len(flowed)])]))
    return out

