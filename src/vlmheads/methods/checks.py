"""The built-in causal check: ablate the selected heads, and k random heads, and compare accuracies.

Accuracy is option-argmax at the answer position; intervals are bootstrap 95% over examples.
A selection that carries a function should hurt that function far more than random heads of the
same number do, and hurt the other functions less.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from typing import Sequence

import torch

from ..models.loading import LoadedModel
from .batches import OptionBatch, metric
from .selection import Head, accuracy_summary
from .sweep import z_hook


def correct_under(loaded: LoadedModel, batches: Sequence[OptionBatch], heads: Sequence[Head],
                  mode: str = "zero", means: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example correctness ``[N]`` (float 0/1) with ``heads`` ablated in every position."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        loaded.geometry.check_head(layer, head)
        by_layer.setdefault(layer, []).append(head)
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs the heads' mean outputs")
    out = []
    for batch in batches:
        def edit_for(layer):
            hs = by_layer[layer]

            def edit(z):
                for h in hs:
                    if mode == "zero":
                        z[:, :, h] = 0
                    elif mode == "mean":
                        z[:, :, h] = means[layer, h].to(z.dtype)
                    else:  # resample
                        z[:, :, h] = z[:, :, h].roll(1, 0).clone()
            return edit

        with ExitStack() as stack, torch.no_grad():
            for layer in by_layer:
                stack.enter_context(z_hook(loaded, layer, edit_for(layer)))
            logits = loaded.model(**batch.inputs, use_cache=False).logits[:, -1]
        out.append(metric(logits, batch.option_ids, batch.answer, "accuracy").cpu())
    return torch.cat(out)


def ablation_check(loaded: LoadedModel, batches_by_function: dict[str, Sequence[OptionBatch]],
                   selected: Sequence[Head], draws: int = 5, seed: int = 0, mode: str = "zero",
                   means: torch.Tensor | None = None) -> dict:
    """Accuracy of every function: unablated, with the selected heads ablated, with k random heads ablated."""
    g = loaded.geometry
    all_heads = [(layer, h) for layer in range(g.n_layers) for h in range(g.n_heads)]
    rng = random.Random(seed)
    others = [h for h in all_heads if h not in set(selected)]
    k = len(selected)
    random_sets = [sorted(rng.sample(others if len(others) >= k else all_heads, k)) for _ in range(draws)]
    report = {"k": k, "mode": mode, "selected": [list(h) for h in selected],
              "random_sets": [[list(h) for h in s] for s in random_sets], "functions": {}}
    for function, batches in batches_by_function.items():
        clean = correct_under(loaded, batches, [], mode, means)
        chosen = correct_under(loaded, batches, selected, mode, means)
        randoms = torch.stack([correct_under(loaded, batches, s, mode, means) for s in random_sets])  # [draws, N]
        report["functions"][function] = {
            "unablated": accuracy_summary(clean, seed=seed), "selected_ablated": accuracy_summary(chosen, seed=seed),
            "random_ablated": accuracy_summary(randoms.mean(0), seed=seed),
            "random_ablated_per_draw": [round(float(r.mean()), 4) for r in randoms]}
    return report
