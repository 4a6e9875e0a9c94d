"""Controls of an intervene claim: each method run again beside itself, its chosen parameters kept, on the test split.

    random heads      the same method on N draws of as many heads that were not located (head methods):
                      is it these heads, or any k heads?
    random attention  the image-key logits scaled by seeded random factors as far from 1 as the method's alpha
                      (``RandomScaling``, attention-scaling methods): is it the direction, or any shake of the
                      attention? (arXiv 2605.05668)
    blind             the unmodified model with every image replaced by a uniform grey one of its size (method
                      ``none``): what the question alone gets
    option orders     the method on the prompt with its options listed in every order (``circular`` or ``all``);
                      an example counts as right only when it is right in all of them (arXiv 2606.01914)

Each control gives one number per test example (its correctness, or the share of draws it is right in), so its
``results.csv`` rows ("METHOD (control)") carry the same groups and bootstrap intervals as the method's own.
Adding a control = one ``Control`` registered in ``CONTROLS``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .data.option_order import listing, orders, reorder
from .interventions import RandomScaling
from .methods.batches import option_batches
from .methods.selection import random_head_sets
from .registry import Registry
from .samples import entries


@dataclass(frozen=True)
class Chosen:
    """One method as tuned on validation, with what its controls need."""

    loaded: object
    config: object  # InterveneConfig
    method_name: str
    method: object  # InterveneMethod
    params: dict
    heads: tuple
    fitted: dict
    test_batches: list
    correct: torch.Tensor  # [N] the method's own correctness on the test split
    score: Callable  # (batches, method, interventions) -> {"prediction", "p_correct", "correct"} per example [N]
    plain: object  # the InterveneMethod of the unmodified model (its forward path)

    @property
    def examples(self) -> list:
        return [e for b in self.test_batches for e in b.examples]

    def interventions(self, heads=None) -> list:
        return self.method.build(self.params, self.heads if heads is None else heads, self.fitted)


class Skip(Exception):
    """The control cannot run on this dataset (the reason is recorded in metadata.json's skipped)."""


@dataclass(frozen=True)
class Control:
    label: str  # its rows are "METHOD (label)"
    wanted: Callable[[object], bool]  # (config) -> asked for
    applies: Callable[[Chosen], bool]  # does it control this method?
    run: Callable[[Chosen], dict]  # -> {"correct": [N], "params": {...}, "detail": {...}, "samples": [...]?}


CONTROLS: Registry[Control] = Registry("control")


def _random_heads(c: Chosen) -> dict:
    draws = random_head_sets(c.loaded.geometry, c.heads, c.config.random_heads, seed=c.config.seed)
    per_draw = torch.stack([c.score(c.test_batches, c.method, c.interventions(d))["correct"] for d in draws])
    return {"correct": per_draw.float().mean(0), "params": {"draws": len(draws)},
            "detail": {"heads": [[list(h) for h in d] for d in draws]}}


def spread_of(params: dict) -> float:
    """How far the method moves the logits: the largest |ln alpha| among its alphas."""
    alphas = [float(v) for key, v in params.items() if key.startswith("alpha")]
    if any(a <= 0 for a in alphas):
        raise Skip(f"alpha {min(alphas)} has no log spread to match")
    return max(abs(math.log(a)) for a in alphas)


def _random_attention(c: Chosen) -> dict:
    spread = spread_of(c.params)
    heads = c.heads if c.method.uses_heads else None
    seeds = [c.config.seed * 1000 + i for i in range(c.config.random_attention)]
    per_draw = torch.stack([c.score(c.test_batches, c.plain, [RandomScaling(spread, heads=heads, seed=s)])["correct"]
                            for s in seeds])
    return {"correct": per_draw.float().mean(0), "params": {"draws": len(seeds), "spread": round(spread, 6)},
            "detail": {"spread": spread, "seeds": seeds, "heads": None if heads is None else [list(h) for h in heads]}}


BLANK = (128, 128, 128)


def blank(example):
    """``example`` with its image replaced by a uniform grey one of the same size."""
    from PIL import Image

    from .data import as_pil

    return dataclasses.replace(example, image=Image.new("RGB", as_pil(example.image).size, BLANK))


def _blind(c: Chosen) -> dict:
    examples = c.examples
    if any(e.image is None for e in examples):
        raise Skip("some examples have no image to blank")
    batches = option_batches(c.loaded, [blank(e) for e in examples], c.config.batch_size)
    out = c.score(batches, c.method, c.interventions())
    return {"correct": out["correct"], "params": {"image": "grey"}, "detail": {"image": f"uniform RGB {BLANK}"},
            "samples": entries(examples, out)}


def _option_orders(c: Chosen) -> dict:
    examples, scheme = c.examples, c.config.option_orders
    unlisted = [e.id for e in examples if listing(e.prompt, e.options) is None]
    if unlisted:
        raise Skip(f"{len(unlisted)} prompt(s) do not list their options (e.g. {unlisted[0]}), so their order "
                   f"cannot change")
    per_example = [orders(len(e.options), scheme) for e in examples]
    rounds = max(len(o) for o in per_example)
    survived, right_in = c.correct.clone().bool(), c.correct.clone()  # round 0: the given order (the method's own)
    for r in range(1, rounds):
        shown = [reorder(e, o[r % len(o)]) for e, o in zip(examples, per_example)]
        ok = c.score(option_batches(c.loaded, shown, c.config.batch_size), c.method, c.interventions())["correct"]
        survived &= ok.bool()
        right_in += ok
    return {"correct": survived.float(), "params": {"orders": rounds, "scheme": scheme},
            "detail": {"scheme": scheme, "orders": rounds},
            "samples": [{"correct": bool(s), "orders_right": int(n)} for s, n in zip(survived, right_in)]}


CONTROLS.register("random_heads", Control(
    "random heads", lambda config: config.random_heads > 0,
    lambda c: c.method.uses_heads and not c.method.fit and bool(c.heads), _random_heads))
CONTROLS.register("random_attention", Control(
    "random attention", lambda config: config.random_attention > 0,
    lambda c: c.method.scales_attention, _random_attention))
CONTROLS.register("blind", Control(
    "blind", lambda config: config.blind, lambda c: c.method_name == "none", _blind))
CONTROLS.register("option_orders", Control(
    "option orders", lambda config: config.option_orders is not None, lambda c: True, _option_orders))
