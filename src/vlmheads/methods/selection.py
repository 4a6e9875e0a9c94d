"""From per-head scores to a selection, with the numbers a reviewer asks for.

    top_k(scores, k)            the k best heads, best first, as (layer, head)
    elbow_k(scores)             k at the elbow of the sorted scores (largest distance to the chord)
    sparsity(scores, share)     smallest fraction of the measured heads that carries ``share`` of their effect
    specificity(top_sets)       Jaccard overlap of the top heads of each pair of functions
    bootstrap_ci(per_example)   95% interval of the mean per head, resampling examples
    accuracy_summary(correct)   accuracy of 0/1 outcomes with that interval, rounded for reports
    random_head_sets(g, located, draws)   seeded sets of as many heads, none of them located (the controls)
"""

from __future__ import annotations

import random
from itertools import combinations

import torch
from ..errors import InputError

Head = tuple[int, int]


def ranked(scores: torch.Tensor) -> list[Head]:
    """Every head, best score first (ties: lower layer, then lower head; NaN = not computed: last)."""
    n_heads = scores.shape[1]
    flat = scores.flatten().tolist()
    order = sorted(range(len(flat)), key=lambda i: (flat[i] != flat[i], -flat[i] if flat[i] == flat[i] else 0.0, i))
    return [(i // n_heads, i % n_heads) for i in order]


def top_k(scores: torch.Tensor, k: int) -> list[Head]:
    total = scores.numel()
    if not 1 <= k <= total:
        raise InputError(f"k={k} is out of range: the model has {total} heads "
                         f"({scores.shape[0]} layers x {scores.shape[1]}); choose 1 <= k <= {total}")
    return ranked(scores)[:k]


def elbow_k(scores: torch.Tensor, max_k: int | None = None) -> int:
    """Kneedle on the descending sorted scores: the point farthest below the first-to-last chord."""
    values = scores.flatten().float()
    values = values[~values.isnan()].sort(descending=True).values  # NaN: heads not computed
    n = values.numel()
    if n <= 2:
        return 1
    x = torch.linspace(0, 1, n)
    span = values[0] - values[-1]
    if span <= 0:
        return 1
    y = (values - values[-1]) / span  # 1 -> 0
    chord = 1 - x
    k = int(torch.argmax(chord - y))  # index of the first point of the flat part = number of steep heads
    k = max(1, k)
    return min(k, max_k) if max_k else k


def sparsity(scores: torch.Tensor, share: float = 0.8) -> float:
    """Smallest fraction of the measured heads whose positive scores sum to ``share`` of all their positive
    scores. NaN (a head not measured: outside a screen's verified set) counts neither as a head nor as
    an effect; ``measured(scores)`` says how many heads the fraction is of."""
    values = scores.flatten()
    values = values[~values.isnan()]
    pos = values.clamp(min=0).sort(descending=True).values
    total = pos.sum()
    if values.numel() == 0 or total <= 0:
        return float("nan")
    n = int((pos.cumsum(0) < share * total).sum()) + 1
    return n / values.numel()


def measured(scores: torch.Tensor) -> int:
    """Heads with a score (not NaN)."""
    return int((~scores.isnan()).sum())


def specificity(top_sets: dict[str, list[Head]]) -> dict[str, float]:
    """Jaccard overlap ``|A & B| / |A | B|`` of every pair of functions' selected heads."""
    out = {}
    for a, b in combinations(sorted(top_sets), 2):
        sa, sb = set(top_sets[a]), set(top_sets[b])
        out[f"{a}|{b}"] = len(sa & sb) / max(1, len(sa | sb))
    return out


def bootstrap_ci(per_example: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval of the mean over examples (dim 0), per remaining index."""
    n = per_example.shape[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=g)
    means = per_example.float()[idx].mean(1)  # [n_boot, ...]
    lo = (1 - level) / 2
    return means.quantile(lo, dim=0), means.quantile(1 - lo, dim=0)


def accuracy_summary(correct: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"accuracy", "ci_low", "ci_high", "n"}`` of per-example 0/1 outcomes ``[N]``, rounded to 4 places."""
    lo, hi = bootstrap_ci(correct.float()[:, None], n_boot=n_boot, seed=seed)
    return {"accuracy": round(float(correct.float().mean()), 4), "ci_low": round(float(lo[0]), 4),
            "ci_high": round(float(hi[0]), 4), "n": int(correct.numel())}


def random_head_sets(geometry, located, draws: int, seed: int = 0) -> list[tuple]:
    """``draws`` sets of ``len(located)`` heads drawn uniformly from the heads not located (sorted; seeded)."""
    pool = [(l, h) for l in range(geometry.n_layers) for h in range(geometry.n_heads) if (l, h) not in set(located)]
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(pool, min(len(located), len(pool))))) for _ in range(draws)]
