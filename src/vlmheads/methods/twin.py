"""The twin test: does a prior-head finder find the prior where there is one, and nothing where there is none?

A pair of same-architecture models, one trained with a textual prior (``organism``) and one without
(``organism-competent``), is the test that tells a faithful attribution method from one that is not
(GridVQA-X, arXiv 2606.14740). The competent twin answers prior-violating scenes at ceiling, so accuracy
cannot tell the two apart there; the margin can:

    margin[e] = logit(grounded answer) - logit(the prior's answer)        violating example e, answer position

The procedure, identical on both twins:

1. **Locate** on one set of scenes: zero every head at the answer position, one at a time, and rank the heads
   by the mean margin shift on violating examples (the head whose removal moves answers most towards the
   image is the one that pushed them towards the prior). How far the best head stands out is its
   ``z = (shift - median) / std`` over all heads.
2. **Apply** the top-k heads, zeroed at the answer position (``Suppress``), on other scenes, beside k random
   heads (several draws), and report: the margin shift (also as a share of the mean |margin|), the share of
   prior-driven errors it flips to the grounded answer (none on a model without such errors), violating
   accuracy before and after, and the cost: the share of grounded answers (not violating, right) it breaks.

On a model that carries the prior in a few heads the best head stands far out (large z) and flips many
prior-driven errors; on its prior-free twin nothing comparable exists.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..interventions import Suppress, apply
from ..world.scenes import prior_relation
from .batches import OptionBatch, option_batches
from .effects import head_sweep
from .prior import prior_split, zero_at_answer
from .selection import random_head_sets


def prior_answer(example) -> str | None:
    """The answer the scene's prior suggests, where it is one of the options: ``meta["prior_answer"]`` when the
    dataset gives it, else the organism's own (``world.scenes.prior_relation`` of the named shapes)."""
    answer = example.meta.get("prior_answer")
    if answer is None and example.subject and example.object:
        answer = prior_relation(example.subject.split()[-1], example.object.split()[-1])
    return answer if answer in example.options and answer != example.answer else None


def _option_logits(loaded, batches, heads) -> torch.Tensor:
    """``[N, K]`` option logits at the answer position with ``heads`` zeroed there (none: unmodified)."""
    out = []
    for b in batches:
        with torch.no_grad(), apply(loaded, [Suppress(tuple(heads))] if heads else [], inputs=b.inputs):
            out.append(loaded.last_logits(b.inputs).float().gather(1, b.option_ids).cpu())
    return torch.cat(out)


class _Set:
    """Violating examples with a prior answer, and the grounded ones, encoded once."""

    def __init__(self, loaded, examples: Sequence, batch_size: int):
        violating, grounded = prior_split(examples)
        self.violating = [e for e in violating if prior_answer(e) is not None]
        if not self.violating:
            raise ValueError("no prior-violating example names a prior answer among its options (the twin test "
                             "needs relational questions on scenes marked meta['prior'] == 'violating')")
        self.grounded = grounded
        self.v_batches = option_batches(loaded, self.violating, batch_size)
        self.g_batches = option_batches(loaded, grounded, batch_size) if grounded else []
        order = [e for b in self.v_batches for e in b.examples]
        self.answer = torch.tensor([e.answer_index for e in order])  # [N]
        self.prior = torch.tensor([e.options.index(prior_answer(e)) for e in order])  # [N]
        self.g_answer = torch.tensor([e.answer_index for b in self.g_batches for e in b.examples])

    def margin(self, logits: torch.Tensor) -> torch.Tensor:  # [N, K] -> [N]
        return logits.gather(1, self.answer[:, None])[:, 0] - logits.gather(1, self.prior[:, None])[:, 0]

    def margin_batches(self) -> list[OptionBatch]:
        """The violating batches cut to two options, the grounded answer (index 0) and the prior's: their
        ``logit_diff`` is the margin, so the locator's own sweep scores it."""
        out, start = [], 0
        for b in self.v_batches:
            rows = slice(start, start + b.size)
            pair = torch.stack([self.answer[rows], self.prior[rows]], 1)  # [B, 2] option indices
            out.append(OptionBatch(inputs=b.inputs, option_ids=b.option_ids.gather(1, pair),  # [B, 2] token ids
                                   answer=torch.zeros(b.size, dtype=torch.long), examples=b.examples))
            start += b.size
        return out


def rank_heads(loaded, examples: Sequence, batch_size: int = 64) -> dict:
    """Step 1: every head's mean margin shift on the violating examples when zeroed at the answer position (the
    sweep and the replacement ``heads.locate --target prior`` scores with):
    ``{"shift": [L, H], "ranking": [(layer, head)] best first, "z": of the best head, "base_margin": mean}``."""
    s = _Set(loaded, examples, batch_size)
    g = loaded.geometry
    swept = head_sweep(loaded, s.margin_batches(), zero_at_answer, metric_name="logit_diff", sign=-1.0)
    shift = swept.effects.mean(0)  # [N, L, H] edited - base margin -> [L, H]
    base = swept.base  # [N]
    flat = shift.flatten()
    order = flat.argsort(descending=True).tolist()
    ranking = [(i // g.n_heads, i % g.n_heads) for i in order]
    z = float((flat.max() - flat.median()) / flat.std()) if flat.numel() > 1 and float(flat.std()) > 0 else 0.0
    return {"shift": shift, "ranking": ranking, "z": z, "base_margin": float(base.mean()),
            "n_violating": len(s.violating)}


def _effect(loaded, s: _Set, heads, base_logits, base_g) -> dict:
    logits = _option_logits(loaded, s.v_batches, heads)
    right0, right1 = base_logits.argmax(1) == s.answer, logits.argmax(1) == s.answer
    driven = ~right0
    out = {"margin_shift": float((s.margin(logits) - s.margin(base_logits)).mean()),
           "violating_accuracy": float(right1.float().mean()),
           "flip": float((right1 & driven).sum() / driven.sum()) if bool(driven.any()) else None}
    if s.g_batches:
        right_g = _option_logits(loaded, s.g_batches, heads).argmax(1) == s.g_answer
        out["cost"] = float((base_g & ~right_g).sum() / base_g.sum()) if bool(base_g.any()) else None
    return out


def apply_heads(loaded, examples: Sequence, heads: Sequence, draws: int = 5, seed: int = 0,
                batch_size: int = 64) -> dict:
    """Step 2: ``heads`` zeroed at the answer position on ``examples``, beside ``draws`` sets of as many random
    other heads (their figures averaged; ``None`` where a figure is undefined for every draw)."""
    s = _Set(loaded, examples, batch_size)
    base_logits = _option_logits(loaded, s.v_batches, ())
    base_g = (_option_logits(loaded, s.g_batches, ()).argmax(1) == s.g_answer) if s.g_batches else None
    random_sets = random_head_sets(loaded.geometry, [tuple(h) for h in heads], draws, seed=seed)
    located = _effect(loaded, s, heads, base_logits, base_g)
    per_draw = [_effect(loaded, s, d, base_logits, base_g) for d in random_sets]
    control = {}
    for key in located:
        values = [d[key] for d in per_draw if d.get(key) is not None]
        control[key] = sum(values) / len(values) if values else None
    mean_abs = float(s.margin(base_logits).abs().mean())
    return {"heads": [list(h) for h in heads], "n_violating": len(s.violating),
            "prior_driven_errors": int((base_logits.argmax(1) != s.answer).sum()), "n_grounded": len(s.grounded),
            "base_margin": float(s.margin(base_logits).mean()), "mean_abs_margin": mean_abs,
            "base_violating_accuracy": float((base_logits.argmax(1) == s.answer).float().mean()),
            "located": {**located, "relative_shift": located["margin_shift"] / mean_abs if mean_abs else None},
            "random": {**control, "relative_shift": control["margin_shift"] / mean_abs if mean_abs else None},
            "random_sets": [[list(h) for h in d] for d in random_sets]}


def twin_test(loaded, locate_examples: Sequence, test_examples: Sequence, k: int = 1, draws: int = 5,
              seed: int = 0, batch_size: int = 64) -> dict:
    """Both steps on one model: rank on ``locate_examples``, apply the top ``k`` on ``test_examples``."""
    ranked = rank_heads(loaded, locate_examples, batch_size)
    heads = ranked["ranking"][:k]
    applied = apply_heads(loaded, test_examples, heads, draws=draws, seed=seed, batch_size=batch_size)
    top = ranked["shift"][heads[0]].item()
    return {"model": loaded.name, "located": {"heads": [list(h) for h in heads], "z": round(ranked["z"], 4),
                                              "shift": round(top, 4), "base_margin": round(ranked["base_margin"], 4),
                                              "n_violating": ranked["n_violating"]},
            "applied": applied}
