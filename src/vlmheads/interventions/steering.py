"""Steering directions for ``Steer`` (CogVSR / ITI style).

For each chosen head, its output at the answer position (the prompt's last token, which predicts
the answer) is collected over examples the model answers correctly and examples it gets wrong. The
direction is the normalised difference of the two means; ``std`` is the standard deviation of all
those outputs projected on it. A model with too few errors has no contrast to learn from: that is an
error naming the counts, not a silently meaningless direction.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Sequence

import torch

from ..data.example import Example
from ..methods.batches import metric, option_batches
from ..methods.sweep import z_hook
from ..models.loading import LoadedModel

MIN_PER_SIDE = 5


def steering_directions(loaded: LoadedModel, examples: Sequence[Example], heads, batch_size: int = 32,
                        min_per_side: int = MIN_PER_SIDE) -> dict:
    """``{(layer, head): (unit direction [head_dim], std)}`` from correctly vs wrongly answered examples."""
    heads = [tuple(h) for h in heads]
    if not heads:
        raise ValueError("steering needs at least one head")
    for layer, head in heads:
        loaded.geometry.check_head(layer, head)
    layers = sorted({layer for layer, _ in heads})
    outputs = {h: [] for h in heads}
    correct = []
    for batch in option_batches(loaded, examples, batch_size):
        seen = {}
        with ExitStack() as stack, torch.no_grad():
            for layer in layers:
                stack.enter_context(z_hook(loaded, layer, lambda z, layer=layer: seen.__setitem__(layer, z[:, -1].clone())))
            logits = loaded.model(**batch.inputs, use_cache=False).logits[:, -1]
        correct.append(metric(logits, batch.option_ids, batch.answer, "accuracy").bool().cpu())
        for layer, head in heads:
            outputs[(layer, head)].append(seen[layer][:, head].float().cpu())
    correct = torch.cat(correct)
    n_right, n_wrong = int(correct.sum()), int((~correct).sum())
    if min(n_right, n_wrong) < min_per_side:
        raise ValueError(f"steering directions contrast correct and wrong answers, but the model answers "
                         f"{n_right} of {n_right + n_wrong} examples correctly ({n_wrong} wrong); need at least "
                         f"{min_per_side} of each: use more or harder examples")
    out = {}
    for h in heads:
        z = torch.cat(outputs[h])  # [N, head_dim]
        diff = z[correct].mean(0) - z[~correct].mean(0)
        direction = diff / diff.norm().clamp(min=1e-12)
        out[h] = (direction, float((z @ direction).std()))
    return out
