"""Interventions as small frozen values that know how to install themselves.

Heads are ``(layer, head)`` pairs of query heads. ``heads=None`` means every head of every layer.

    Ablate(heads, mode="zero"|"mean"|"resample")
                                        replace the heads' outputs (o_proj input) at every position
                                        (``vlmheads.site.ablation_value``, the one definition)
    Emphasize(heads, gamma)             multiply the heads' outputs by gamma (1 = identity, < 1 attenuates)
    ScalingVis(alpha, heads=None)       multiply the pre-softmax attention logits of the last prompt
                                        query over the image keys by alpha (AdaptVis's mechanics:
                                        prefill only; every layer and head unless ``heads`` is given)
    AdaptVis(alpha_low, alpha_high, threshold, heads=None)
                                        per example: confidence = top-1 probability of the first answer
                                        token from an unmodified pass; below ``threshold`` use alpha_low
                                        (smooth), else alpha_high (sharpen). ``heads`` given = the
                                        head-selective AdaptVis this suite proposes.
    RandomScaling(spread, heads, seed)  the random-attention control: the same logits scaled by seeded random
                                        factors exp(spread x u), u ~ U[-1, 1], one per layer, head, row and key
    Steer(alpha, directions)            add alpha x std x direction to chosen heads at the last position
    VisionBoost(alpha, directions)      boost layout directions in image tokens at the first decoder layer

Each value checks its own parameters when built, checks itself against a model (``check``), installs
itself into an ``Installation`` (``install``: hooks and switches that ``apply`` removes on exit), and
round-trips through JSON (``to_json`` / ``from_json``), so a run records exactly what it applied.
Adding an intervention = one class here with those three methods, registered with ``@intervention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from ..sites import heads as site
from ..sites.attention import by_layer
from .installation import InterventionError

if TYPE_CHECKING:  # pragma: no cover
    from .installation import Installation

Heads = Optional[tuple[tuple[int, int], ...]]
INTERVENTIONS: dict[str, type] = {}


def intervention(cls):
    """Register an intervention class under its name (for ``from_json``)."""
    INTERVENTIONS[cls.__name__] = cls
    return cls


def _heads(heads, owner: str) -> Heads:
    if heads is None:
        return None
    out = set()
    for pair in heads:
        try:
            layer, head = pair
        except (TypeError, ValueError):
            raise InterventionError(f"{owner}: heads are (layer, head) pairs, got {pair!r}") from None
        if isinstance(layer, bool) or isinstance(head, bool) or int(layer) != layer or int(head) != head:
            raise InterventionError(f"{owner}: head indices are integers, got {pair!r}")
        if int(layer) < 0 or int(head) < 0:
            raise InterventionError(f"{owner}: head indices count from 0, got ({layer}, {head}); "
                                    f"negative indices are not allowed")
        out.add((int(layer), int(head)))
    return tuple(sorted(out))


def _number(value, name: str, owner: str, minimum: float | None = None) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InterventionError(f"{owner}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InterventionError(f"{owner}: {name} must be finite, got {value!r}")
    if minimum is not None and x < minimum:
        raise InterventionError(f"{owner}: {name} must be >= {minimum:g}, got {value!r}"
                                + (" (a negative factor flips the sign instead of scaling)" if minimum == 0 else ""))
    return x


def _all_heads(loaded) -> tuple[tuple[int, int], ...]:
    g = loaded.geometry
    return tuple((layer, h) for layer in range(g.n_layers) for h in range(g.n_heads))


def _check_heads(loaded, heads) -> None:
    for layer, head in heads or ():
        loaded.geometry.check_head(layer, head)


class Intervention:
    """Base of every intervention value: ``check``, ``install``, ``to_json``."""

    touches_image: ClassVar[bool] = False  # needs the batch's image-token mask

    def check(self, loaded) -> None:
        _check_heads(loaded, getattr(self, "heads", None))

    def install(self, ctx: "Installation") -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self) -> dict:
        out = {"type": type(self).__name__}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = [list(h) for h in value] if f.name == "heads" and value is not None else value
        return out


def from_json(data: dict) -> Intervention:
    """The intervention a ``to_json`` dict describes."""
    if not isinstance(data, dict) or data.get("type") not in INTERVENTIONS:
        raise InterventionError(f"not an intervention record: {data!r}; known types: {', '.join(INTERVENTIONS)}")
    cls = INTERVENTIONS[data["type"]]
    kwargs = {k: v for k, v in data.items() if k != "type"}
    return cls.from_record(kwargs) if hasattr(cls, "from_record") else cls(**kwargs)


@intervention
@dataclass(frozen=True)
class Ablate(Intervention):
    heads: Heads
    mode: str = "zero"

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads, "Ablate"))
        if self.mode not in site.ABLATIONS:
            raise InterventionError(f"Ablate mode must be one of {', '.join(site.ABLATIONS)}, got {self.mode!r}")

    def check(self, loaded) -> None:
        super().check(loaded)

    def install(self, ctx: "Installation") -> None:
        if self.mode == "mean" and ctx.means is None:
            raise InterventionError("Ablate(mode='mean') needs the heads' mean outputs: apply(..., means=...) "
                                    "(vlmheads.site.head_means)")
        heads = self.heads if self.heads is not None else _all_heads(ctx.loaded)
        for layer, hs in by_layer(heads).items():
            ctx.head_hook(layer, lambda z, layer=layer, hs=hs: site.ablate_(z, layer, hs, self.mode, ctx.means))


@intervention
@dataclass(frozen=True)
class Emphasize(Intervention):
    heads: Heads
    gamma: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads, "Emphasize"))
        object.__setattr__(self, "gamma", _number(self.gamma, "gamma", "Emphasize", minimum=0))

    def install(self, ctx: "Installation") -> None:
        heads = self.heads if self.heads is not None else _all_heads(ctx.loaded)
        for layer, hs in by_layer(heads).items():
            ctx.head_hook(layer, lambda z, hs=hs: site.scale_(z, hs, self.gamma))


@intervention
@dataclass(frozen=True)
class Suppress(Intervention):
    """The heads' output at the answer position (the last position of every pass) scaled by ``factor``
    (0: zero-ablated there), the other positions untouched: what a head writes into the answer is removed,
    what it wrote into earlier positions stays (the prior heads' reading in ``methods.prior``)."""

    heads: Heads
    factor: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads, "Suppress"))
        object.__setattr__(self, "factor", _number(self.factor, "factor", "Suppress", minimum=0))
        if self.factor >= 1:
            raise InterventionError(f"Suppress factor must be below 1 (1 changes nothing; use Emphasize to raise "
                                    f"heads), got {self.factor}")

    def install(self, ctx: "Installation") -> None:
        heads = self.heads if self.heads is not None else _all_heads(ctx.loaded)
        for layer, hs in by_layer(heads).items():
            ctx.head_hook(layer, lambda z, hs=hs: site.scale_(z, hs, self.factor, positions=site.LAST))


@intervention
@dataclass(frozen=True)
class ScalingVis(Intervention):
    alpha: float
    heads: Heads = None
    touches_image: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads, "ScalingVis"))
        object.__setattr__(self, "alpha", _number(self.alpha, "alpha", "ScalingVis", minimum=0))

    def install(self, ctx: "Installation") -> None:
        ctx.scale_attention(self, lambda inputs: self.alpha, self.heads)


@intervention
@dataclass(frozen=True)
class AdaptVis(Intervention):
    alpha_low: float = 0.5
    alpha_high: float = 1.5
    threshold: float = 0.4
    heads: Heads = None
    touches_image: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads, "AdaptVis"))
        for name in ("alpha_low", "alpha_high"):
            object.__setattr__(self, name, _number(getattr(self, name), name, "AdaptVis", minimum=0))
        threshold = _number(self.threshold, "threshold", "AdaptVis")
        if not 0 <= threshold <= 1:
            raise InterventionError(f"AdaptVis threshold is a probability in [0, 1], got {self.threshold}")
        object.__setattr__(self, "threshold", threshold)

    def alpha_for(self, confidence: torch.Tensor) -> torch.Tensor:
        """Per-example alpha ``[B]``: alpha_low below the threshold, alpha_high at or above it (confidence
        rounded to two decimals, as AdaptVis does)."""
        rounded = torch.round(confidence * 100) / 100
        return torch.where(rounded < self.threshold, torch.tensor(self.alpha_low), torch.tensor(self.alpha_high))

    def install(self, ctx: "Installation") -> None:
        ctx.scale_attention(self, lambda inputs: self.alpha_for(ctx.confidence(inputs)), self.heads)


@intervention
@dataclass(frozen=True)
class RandomScaling(Intervention):
    """The random-attention control of ScalingVis and AdaptVis: the last prompt query's pre-softmax logits over
    the image keys multiplied by ``exp(spread * u)``, ``u`` uniform in [-1, 1] and drawn anew for every layer,
    head, batch row and image key from ``seed`` (``vlmheads.sites.attention.random_factors``). With ``spread`` =
    |ln alpha| of the method it stands beside, the logits move as far as the method moves them, in no chosen
    direction: a gain the method shares with its random-attention control is not the method's (arXiv
    2605.05668). ``spread`` 0 is the identity."""

    spread: float
    heads: Heads = None
    seed: int = 0
    touches_image: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", _heads(self.heads, "RandomScaling"))
        object.__setattr__(self, "spread", _number(self.spread, "spread", "RandomScaling", minimum=0))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InterventionError(f"RandomScaling: seed must be a whole number, got {self.seed!r}")

    def install(self, ctx: "Installation") -> None:
        ctx.scale_attention(self, lambda inputs: 1.0, self.heads, noise=(self.spread, self.seed))


@intervention
@dataclass(frozen=True, eq=False)
class Steer(Intervention):
    """CogVSR / ITI-style steering: at the last position of every forward call, each head's output gets
    ``alpha * std * direction`` added (``directions``: ``{(layer, head): (direction [head_dim], std)}``
    from ``vlmheads.methods.directions.steering_directions``). alpha = 0 is the identity."""

    alpha: float
    directions: "object"  # dict[(layer, head)] -> (torch.Tensor [head_dim], float)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _number(self.alpha, "alpha", "Steer"))
        if not isinstance(self.directions, dict) or not self.directions:
            raise InterventionError("Steer needs directions {(layer, head): (direction, std)} "
                                    "(vlmheads.methods.directions.steering_directions)")
        _heads(self.directions, "Steer")

    def check(self, loaded) -> None:
        _check_heads(loaded, self.directions)
        for (layer, head), (direction, _) in self.directions.items():
            if torch.as_tensor(direction).shape != (loaded.geometry.head_dim,):
                raise InterventionError(f"Steer direction of L{layer}H{head} must be [head_dim="
                                        f"{loaded.geometry.head_dim}], got {tuple(torch.as_tensor(direction).shape)}")

    def install(self, ctx: "Installation") -> None:
        by_layer: dict[int, list] = {}
        for (layer, head), (direction, std) in self.directions.items():
            by_layer.setdefault(layer, []).append((head, torch.as_tensor(direction), float(std)))
        for layer, items in by_layer.items():
            def steer(z, items=items):  # the last position only: the one that predicts the answer
                for head, direction, std in items:
                    site.add_(z, [head], self.alpha * std * direction, positions=site.LAST)
            ctx.head_hook(layer, steer)

    def to_json(self) -> dict:
        return {"type": "Steer", "alpha": self.alpha,
                "directions": [{"layer": l, "head": h, "direction": torch.as_tensor(d).tolist(), "std": float(s)}
                               for (l, h), (d, s) in sorted(self.directions.items())]}

    @classmethod
    def from_record(cls, data: dict) -> "Steer":
        return cls(alpha=data["alpha"], directions={(d["layer"], d["head"]): (torch.tensor(d["direction"]), d["std"])
                                                    for d in data["directions"]})


@intervention
@dataclass(frozen=True, eq=False)
class VisionBoost(Intervention):
    """Dual-mechanism boost: at the first decoder layer, every image token's hidden state h becomes
    h + alpha * P h, with P the projection onto ``directions`` (``[r, hidden]``, orthonormal rows; see
    ``vlmheads.methods.directions.layout_directions``). alpha = 0 is the identity."""

    alpha: float
    directions: "object"  # torch.Tensor [r, hidden]
    touches_image: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _number(self.alpha, "alpha", "VisionBoost"))
        d = torch.as_tensor(self.directions, dtype=torch.float32)
        if d.dim() != 2:
            raise InterventionError(f"VisionBoost directions must be [r, hidden_size], got {tuple(d.shape)}")
        object.__setattr__(self, "directions", d)

    def check(self, loaded) -> None:
        hidden = loaded.model.config.get_text_config().hidden_size
        if self.directions.shape[1] != hidden:
            raise InterventionError(f"VisionBoost directions must be [r, hidden_size={hidden}], "
                                    f"got {tuple(self.directions.shape)}")

    def install(self, ctx: "Installation") -> None:
        ctx.image_hook(self._boost)

    def _boost(self, hidden: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        d = self.directions.to(hidden.device, hidden.dtype)  # [r, hidden]
        out = hidden.clone()
        h = out[image]  # [n_image_tokens, hidden]
        out[image] = h + self.alpha * (h @ d.T) @ d
        return out

    def to_json(self) -> dict:
        return {"type": "VisionBoost", "alpha": self.alpha, "directions": self.directions.tolist()}
