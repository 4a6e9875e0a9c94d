"""Where the prior lives: which heads, knocked out, turn prior-driven answers into grounded ones, and what
that costs on the answers the image already decides.

On examples whose answer the prior and the image disagree on (the organism marks them
``meta["prior"] == "violating"``), the model's errors are the prior-driven answers. Every head is zeroed,
at the answer position only (``answer``: what the head writes into the answer) or at every position
(``all``), and scored on two sets:

    flip[e, l, h]   1 when prior-driven error e becomes correct with head (l, h) zeroed      (the gain)
    break[e, l, h]  1 when grounded example e (not violating, answered correctly) becomes wrong   (the cost)
    net             share flipped - share broken, with a bootstrap interval over both sets

Heads whose ablation flips many prior-driven answers and breaks few grounded ones carry the prior
(Vision-Default, Prior-Override: a few heads in the second half of the network, knocked out at the last
position, flip most prior-driven answers). Causal, by single-head zero ablation; ``accuracy`` on the
examples' own options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models.loading import LoadedModel
from .batches import OptionBatch, option_batches
from .effects import head_sweep

POSITIONS = ("answer", "all")


def prior_split(examples: Sequence) -> tuple[list, list]:
    """``(violating, grounded)``: the examples the prior and the image disagree on, and the others; both
    empty-handed when no example says (no ``meta["prior"]``)."""
    violating = [e for e in examples if e.meta.get("prior") == "violating"]
    grounded = [e for e in examples if e.meta.get("prior") not in (None, "violating")]
    return violating, grounded


@dataclass
class PriorEffects:
    flip: torch.Tensor  # [n prior-driven errors, L, H]: 1 where the ablation makes the answer correct
    broken: torch.Tensor  # [n grounded correct, L, H]: 1 where the ablation makes the answer wrong
    n_violating: int  # violating examples (before keeping the errors)
    n_grounded: int  # grounded examples (before keeping the correct ones)


def zero_at_answer(layer: int, head: int, sweep, b_index: int) -> torch.Tensor:
    """The head's clean output with its answer position zeroed: ``[B, S, D]`` (the other positions as they were)."""
    value = sweep.z[layer][:, :, head].clone()  # [B, S, D]
    value[:, -1] = 0.0
    return value


def prior_effects(loaded: LoadedModel, violating: Sequence, grounded: Sequence, positions: str = "answer",
                  batch_size: int = 32) -> PriorEffects:
    """Per-example flips on the prior-driven errors and breaks on the grounded correct answers, every head
    zeroed at ``positions`` ("answer" or "all")."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    replace = zero_at_answer if positions == "answer" else (lambda layer, head, sweep, b: 0.0)

    def sweep(examples, sign):
        r = head_sweep(loaded, option_batches(loaded, examples, batch_size), replace, metric_name="accuracy",
                       sign=sign)
        return r.effects, r.base  # [N, L, H], [N]

    gained, base_v = sweep(violating, -1.0)  # edited - base accuracy
    lost, base_g = sweep(grounded, 1.0)  # base - edited accuracy
    return PriorEffects(flip=gained[base_v == 0], broken=lost[base_g == 1], n_violating=len(violating),
                        n_grounded=len(grounded))


def net_interval(flip: torch.Tensor, broken: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(net, low, high)`` ``[L, H]``: share flipped minus share broken, and its percentile interval from
    resampling both sets independently."""
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n_boot):
        a = flip[torch.randint(0, len(flip), (len(flip),), generator=g)].float().mean(0)
        b = broken[torch.randint(0, len(broken), (len(broken),), generator=g)].float().mean(0)
        draws.append(a - b)
    draws = torch.stack(draws)  # [n_boot, L, H]
    tail = (1 - level) / 2
    return (flip.float().mean(0) - broken.float().mean(0), draws.quantile(tail, dim=0),
            draws.quantile(1 - tail, dim=0))


def from_batches(batches: Sequence[OptionBatch]) -> list:
    return [e for b in batches for e in b.examples]
