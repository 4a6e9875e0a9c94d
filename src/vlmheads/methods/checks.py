"""The built-in causal check: ablate the selected heads, and k random heads, and compare accuracies.

Accuracy is option-argmax at the answer position; intervals are bootstrap 95% over examples.
A selection that carries a function should hurt that function far more than random heads of the
same number do, and hurt the other functions less.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import parallel
from ..interventions import Ablate, apply
from ..models.loading import LoadedModel
from .batches import OptionBatch, metric
from .selection import Head, accuracy_summary, random_head_sets


def correct_under(loaded: LoadedModel, batches: Sequence[OptionBatch], heads: Sequence[Head],
                  mode: str = "zero", means: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example correctness ``[N]`` (float 0/1) with ``heads`` ablated in every position
    (the ``Ablate`` intervention, so the check ablates exactly as ``heads.intervene`` does)."""
    ablate = Ablate(tuple(heads), mode)
    def one(batch: OptionBatch) -> torch.Tensor:
        with torch.no_grad(), apply(loaded, [ablate] if heads else [], means=means):
            logits = loaded.last_logits(batch.inputs)
        return metric(logits, batch.option_ids, batch.answer, "accuracy").cpu()  # [B]

    return torch.cat(parallel.map_batches(one, batches, "ablation check"))


def ablation_check(loaded: LoadedModel, batches_by_function: dict[str, Sequence[OptionBatch]],
                   selected: Sequence[Head], draws: int = 5, seed: int = 0, mode: str = "zero",
                   means: torch.Tensor | None = None) -> dict:
    """Accuracy of every function: unablated, with the selected heads ablated, with k random heads ablated."""
    k = len(selected)
    # drawn among the heads not selected (all of them, fewer than k, when k is more than half the heads)
    random_sets = [list(s) for s in random_head_sets(loaded.geometry, selected, draws, seed=seed)]
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
