"""Where each head looks from the answer position (descriptive, not causal).

    image_share    attention mass of the last prompt position on image tokens
    image_entropy  entropy of that attention renormalised over the image tokens, divided by
                   log(n_image_tokens): 0 = one patch, 1 = spread evenly over the image

Needs attention probabilities: the text decoder switches to eager attention for these passes (and
back), whatever the model was loaded with.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import parallel
from ..models.loading import LoadedModel
from ..sites.attention import attention_probabilities
from .batches import OptionBatch


def answer_attention(loaded: LoadedModel, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass with eager attention: the last position's logits ``[B, vocab]`` and its attention
    probabilities ``[B, n_layers, n_heads, S]``."""
    logits, attentions = attention_probabilities(loaded, inputs)  # [B, S, V], L x [B, H, S, S]
    return logits[:, -1].float(), torch.stack([a[:, :, -1].float() for a in attentions], 1)


def image_attention(loaded: LoadedModel, batches: Sequence[OptionBatch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(image_share, image_entropy)``, each ``[n_layers, n_heads]``, over the batches' examples."""
    def one(batch: OptionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        _, attention = answer_attention(loaded, batch.inputs)  # [B, L, H, S]
        image = loaded.image_token_mask(batch.inputs)  # [B, S]
        n_image = image.sum(1).clamp(min=2).float()  # [B]
        layer_share, layer_entropy = [], []
        for layer in range(attention.shape[1]):
            last = attention[:, layer]  # [B, H, S]
            on_image = last * image[:, None]
            share = on_image.sum(-1)  # [B, H]
            p = on_image / share.clamp(min=1e-12)[..., None]
            ent = -(p * p.clamp(min=1e-12).log()).sum(-1) / n_image.log()[:, None]
            layer_share.append(share)
            layer_entropy.append(ent)
        return torch.stack(layer_share, 1).cpu(), torch.stack(layer_entropy, 1).cpu()  # each [B, L, H]

    done = parallel.map_batches(one, batches, "image attention")
    return torch.cat([d[0] for d in done]).mean(0), torch.cat([d[1] for d in done]).mean(0)
