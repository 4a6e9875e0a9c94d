"""Redundancy-aware head attribution: ablate random sets of heads together, fit a linear model.

Single-head ablation misses heads that back each other up: with two heads writing the same signal,
removing either leaves the other (and a norm downstream restores the scale), so each alone shows no
effect; removing both does (Kim et al. 2025 found such backup heads in real models). Here every one of
``n_subsets`` random head sets (each head in a set with probability ``density``) is ablated at once
(the ``Ablate`` intervention, so zero / mean / resample as everywhere), the drop of the metric is
measured, and a ridge regression of the drop on the sets' 0/1 membership gives each head's score:

    drop(S) = mean over examples of metric(clean) - metric(heads in S ablated)      one value per set S
    drop(S) ~= b + sum_h beta_h [h in S]                                               beta: [n_layers, n_heads]

A head whose partner is ablated in a share ``density`` of the sets where it is ablated gets about
``density x`` the pair's joint effect, where single-head ablation gives it ~0. Intervals: percentile
bootstrap over the sets (the fit redone on resampled sets). Cost: ``n_subsets`` forward passes per
batch (default four per head, at least 128), so it suits small models or a screened set of heads.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import parallel
from ..interventions import Ablate, apply
from ..models.loading import LoadedModel
from .batches import OptionBatch, metric
from ..errors import InputError


def subset_drops(loaded: LoadedModel, batches: Sequence[OptionBatch], masks: torch.Tensor, mode: str = "zero",
                 metric_name: str = "logit_diff", means: torch.Tensor | None = None) -> torch.Tensor:
    """``[n_subsets]``: mean metric drop over the examples with each set of ``masks [S, L, H]`` ablated."""
    def one(batch: OptionBatch) -> list[float]:  # [n_subsets] summed drops of one batch
        sums = []
        with torch.no_grad():
            base = metric(loaded.last_logits(batch.inputs), batch.option_ids,
                          batch.answer, metric_name)  # [B]
            for mask in masks:
                heads = [tuple(h) for h in mask.nonzero().tolist()]
                with apply(loaded, [Ablate(heads, mode)] if heads else [], means=means):
                    logits = loaded.last_logits(batch.inputs)
                sums.append(float((base - metric(logits, batch.option_ids, batch.answer, metric_name)).sum()))
        return sums

    drops = torch.zeros(masks.shape[0])
    for sums in parallel.map_batches(one, batches, "redundancy subsets"):  # added in batch order, as one process does
        for s, value in enumerate(sums):
            drops[s] += value
    return drops / sum(b.size for b in batches)


def ridge_fit(masks: torch.Tensor, drops: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """``beta [L, H]`` of ``drops ~ b + X beta`` with ``X`` the flattened masks, centred (b absorbed)."""
    x = masks.flatten(1).double()  # [S, P]
    x = x - x.mean(0)
    y = drops.double() - drops.double().mean()
    gram = x.T @ x + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ y).float().view(masks.shape[1:])


def redundancy_scores(loaded: LoadedModel, batches: Sequence[OptionBatch], n_subsets: int | None = None,
                      density: float = 0.25, mode: str = "zero", metric_name: str = "logit_diff",
                      means: torch.Tensor | None = None, seed: int = 0, n_boot: int = 200
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """``(score, ci_low, ci_high)`` each ``[L, H]``, and a summary (sets, density, fit R^2)."""
    if not 0 < density < 1:
        raise InputError(f"density must be in (0, 1), got {density}")
    g = loaded.geometry
    n_subsets = n_subsets or max(128, 4 * g.n_total)
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(n_subsets, g.n_layers, g.n_heads, generator=generator) < density  # [S, L, H]
    drops = subset_drops(loaded, batches, masks, mode, metric_name, means)
    beta = ridge_fit(masks, drops)
    fitted = (masks.flatten(1).float() - masks.flatten(1).float().mean(0)) @ beta.flatten() + drops.mean()
    r2 = 1 - float(((drops - fitted) ** 2).sum() / ((drops - drops.mean()) ** 2).sum().clamp(min=1e-12))
    boots = []
    for _ in range(n_boot):
        idx = torch.randint(0, n_subsets, (n_subsets,), generator=generator)
        boots.append(ridge_fit(masks[idx], drops[idx]))
    boots = torch.stack(boots)  # [n_boot, L, H]
    return beta, boots.quantile(0.025, dim=0), boots.quantile(0.975, dim=0), \
        {"subsets": n_subsets, "density": density, "r2": round(r2, 4)}
