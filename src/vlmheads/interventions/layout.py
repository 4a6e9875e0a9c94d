"""Layout-probe directions for ``VisionBoost`` (the dual-mechanism account of spatial layout).

Every image token's input to the first decoder layer is labelled with its scene's relation (a global
layout property, carried by all image tokens, not only the objects' patches); a multinomial linear
probe is trained on them, and its class weight vectors, orthonormalised, are the directions.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.example import Example
from ..models.adapter import resolve
from ..models.loading import LoadedModel


def image_token_states(loaded: LoadedModel, examples: Sequence[Example], batch_size: int = 64
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states [n_tokens, hidden], example index [n_tokens])``: first-decoder-layer inputs at image tokens."""
    first = resolve(loaded.model, loaded.adapter.layers)[0]
    states, owners = [], []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        inputs = loaded.encode_examples(batch)
        seen = {}
        handle = first.register_forward_pre_hook(
            lambda m, args, kwargs: seen.__setitem__("h", (args[0] if args else kwargs["hidden_states"]).detach()),
            with_kwargs=True)
        try:
            with torch.no_grad():
                loaded.model(**inputs, use_cache=False)
        finally:
            handle.remove()
        mask = loaded.image_token_mask(inputs)  # [B, S]
        states.append(seen["h"][mask].float().cpu())
        owners.append((torch.arange(len(batch))[:, None].expand_as(mask.cpu())[mask.cpu()]) + start)
    return torch.cat(states), torch.cat(owners)


def layout_directions(loaded: LoadedModel, examples: Sequence[Example], steps: int = 300, seed: int = 0
                      ) -> tuple[torch.Tensor, float]:
    """Orthonormal probe directions ``[n_relations, hidden]`` and the probe's training accuracy."""
    relations = sorted({e.relation for e in examples})
    if len(relations) < 2:
        raise ValueError("layout directions need examples of at least two relations")
    states, owners = image_token_states(loaded, examples)
    y = torch.tensor([relations.index(examples[i].relation) for i in owners.tolist()])
    mean, std = states.mean(0), states.std(0) + 1e-6
    x = (states - mean) / std
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], len(relations))
    opt = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((probe(x).argmax(1) == y).float().mean())
        weights = probe.weight / std  # back to the unstandardised hidden space: [n_relations, hidden]
        q, _ = torch.linalg.qr(weights.T)  # [hidden, n_relations], orthonormal columns
    return q.T.contiguous(), accuracy
