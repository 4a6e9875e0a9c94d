"""Fitted directions for the two interventions that need them: ``Steer`` and ``VisionBoost``.

``steering_directions`` (CogVSR / ITI style): for each chosen head, its output at the answer position
(the prompt's last token, which predicts the answer) is collected over examples the model answers
correctly and examples it gets wrong. The direction is the normalised difference of the two means;
``std`` is the standard deviation of all those outputs projected on it. A model with too few errors
has no contrast to learn from: that is an error naming the counts, not a silently meaningless direction.

``layout_directions`` (the dual-mechanism account of spatial layout): every image token's input to the
first decoder layer is labelled with its scene's relation (a global layout property, carried by all
image tokens, not only the objects' patches); a multinomial linear probe is trained on them, and its
class weight vectors, orthonormalised, are the directions.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.example import Example
from ..errors import InputError
from ..models.loading import LoadedModel
from ..sites import heads as site
from ..sites import residual
from .batches import metric, option_batches
from .probing import fit_softmax_probe

MIN_PER_SIDE = 5


def steering_directions(loaded: LoadedModel, examples: Sequence[Example], heads, batch_size: int = 32,
                        min_per_side: int = MIN_PER_SIDE) -> dict:
    """``{(layer, head): (unit direction [head_dim], std)}`` from correctly vs wrongly answered examples."""
    heads = [tuple(h) for h in heads]
    if not heads:
        raise InputError("steering needs at least one head")
    for layer, head in heads:
        loaded.geometry.check_head(layer, head)
    layers = sorted({layer for layer, _ in heads})
    outputs = {h: [] for h in heads}
    correct = []
    for batch in option_batches(loaded, examples, batch_size):
        seen, logits = site.read(loaded, batch.inputs, layers, positions=site.LAST)  # {layer: [B, H, D]}
        correct.append(metric(logits, batch.option_ids, batch.answer, "accuracy").bool().cpu())
        for layer, head in heads:
            outputs[(layer, head)].append(seen[layer][:, head].float().cpu())
    correct = torch.cat(correct)
    n_right, n_wrong = int(correct.sum()), int((~correct).sum())
    if min(n_right, n_wrong) < min_per_side:
        raise InputError(f"steering directions contrast correct and wrong answers, but the model answers "
                         f"{n_right} of {n_right + n_wrong} examples correctly ({n_wrong} wrong); need at least "
                         f"{min_per_side} of each: use more or harder examples")
    out = {}
    for h in heads:
        z = torch.cat(outputs[h])  # [N, head_dim]
        diff = z[correct].mean(0) - z[~correct].mean(0)
        direction = diff / diff.norm().clamp(min=1e-12)
        out[h] = (direction, float((z @ direction).std()))
    return out


def image_token_states(loaded: LoadedModel, examples: Sequence[Example], batch_size: int = 64
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states [n_tokens, hidden], example index [n_tokens])``: first-decoder-layer inputs at image tokens."""
    states, owners = [], []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        inputs = loaded.encode_examples(batch)
        hidden = residual.read(loaded, inputs)  # [B, S, hidden]
        mask = loaded.image_token_mask(inputs)  # [B, S]
        states.append(hidden[mask].float().cpu())
        owners.append((torch.arange(len(batch))[:, None].expand_as(mask.cpu())[mask.cpu()]) + start)
    return torch.cat(states), torch.cat(owners)


def layout_directions(loaded: LoadedModel, examples: Sequence[Example], steps: int = 300, seed: int = 0
                      ) -> tuple[torch.Tensor, float]:
    """Orthonormal probe directions ``[n_relations, hidden]`` and the probe's training accuracy."""
    relations = sorted({e.relation for e in examples})
    if len(relations) < 2:
        raise InputError("layout directions need examples of at least two relations")
    states, owners = image_token_states(loaded, examples)
    y = torch.tensor([relations.index(examples[i].relation) for i in owners.tolist()])
    mean, std = states.mean(0), states.std(0) + 1e-6
    x = (states - mean) / std
    probe = fit_softmax_probe(x, y, len(relations), steps=steps, weight_decay=1e-3, seed=seed)
    with torch.no_grad():
        accuracy = float((probe(x).argmax(1) == y).float().mean())
        weights = probe.weight / std  # back to the unstandardised hidden space: [n_relations, hidden]
        q, _ = torch.linalg.qr(weights.T)  # [hidden, n_relations], orthonormal columns
    return q.T.contiguous(), accuracy
