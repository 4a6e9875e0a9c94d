"""Interventions as small frozen values. ``apply(loaded, [...])`` turns them into hooks and back.

Heads are ``(layer, head)`` pairs of query heads. ``heads=None`` means every head of every layer.

    Ablate(heads, mode="zero"|"mean")   replace the heads' outputs (o_proj input) at every position
    Emphasize(heads, gamma)             multiply the heads' outputs by gamma (1 = identity)
    ScalingVis(alpha, heads=None)       multiply the pre-softmax attention logits of the last prompt
                                        query over the image keys by alpha (AdaptVis's mechanics:
                                        prefill only; every layer and head unless ``heads`` is given)
    AdaptVis(alpha_low, alpha_high, threshold, heads=None)
                                        per example: confidence = top-1 probability of the first answer
                                        token from an unmodified pass; below ``threshold`` use alpha_low
                                        (smooth), else alpha_high (sharpen). ``heads`` given = the
                                        head-selective AdaptVis this suite proposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

Heads = Optional[tuple[tuple[int, int], ...]]


def _heads(heads) -> Heads:
    if heads is None:
        return None
    out = tuple(sorted({(int(layer), int(head)) for layer, head in heads}))
    return out


@dataclass(frozen=True)
class Ablate:
    heads: Heads
    mode: str = "zero"

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads))
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"Ablate mode must be 'zero' or 'mean', got {self.mode!r}")


@dataclass(frozen=True)
class Emphasize:
    heads: Heads
    gamma: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads))


@dataclass(frozen=True)
class ScalingVis:
    alpha: float
    heads: Heads = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads))


@dataclass(frozen=True)
class AdaptVis:
    alpha_low: float = 0.5
    alpha_high: float = 1.5
    threshold: float = 0.4
    heads: Heads = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads))
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"AdaptVis threshold is a probability in [0, 1], got {self.threshold}")


@dataclass(frozen=True, eq=False)
class VisionBoost:
    """Dual-mechanism boost: at the first decoder layer, every image token's hidden state h becomes
    h + alpha * P h, with P the projection onto ``directions`` (``[r, hidden]``, orthonormal rows; see
    ``vlmheads.interventions.layout.layout_directions``). alpha = 0 is the identity."""

    alpha: float
    directions: "object"  # torch.Tensor [r, hidden]


@dataclass(frozen=True, eq=False)
class Steer:
    """CogVSR / ITI-style steering: at the last position of every forward call, each head's output gets
    ``alpha * std * direction`` added (``directions``: ``{(layer, head): (direction [head_dim], std)}``
    from ``vlmheads.interventions.steering.steering_directions``). alpha = 0 is the identity."""

    alpha: float
    directions: "object"  # dict[(layer, head)] -> (torch.Tensor [head_dim], float)
