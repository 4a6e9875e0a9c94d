"""Position ids of a whole prompt, for passes that feed the prompt in pieces (a KV-cached prefix, then its
last token).

Most decoders derive positions from the cache length, so the pieces need nothing. Multimodal RoPE
(Qwen2-VL, Qwen2.5-VL: 3-D temporal/height/width positions for image tokens) cannot: a one-token step
after a cached prefix would get positions built for the whole attention mask. For those models the
prompt's positions are computed once, the way the model's own full forward pass computes them, and
each piece is given its slice (``[..., :n]`` for the prefix, ``[..., n:]`` for the rest).
"""

from __future__ import annotations

from typing import Mapping

import torch

_MROPE_INPUTS = ("image_grid_thw", "video_grid_thw", "attention_mask", "mm_token_type_ids")


def prompt_position_ids(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """``[3, B, S]`` M-RoPE positions of the full prompt for models that need them; None for the others."""
    inner = getattr(model, "model", None)
    compute = getattr(inner, "compute_3d_position_ids", None)
    if compute is None:
        return None
    kwargs = {k: inputs.get(k) for k in _MROPE_INPUTS}
    saved = getattr(inner, "rope_deltas", None)
    try:
        return compute(input_ids=inputs["input_ids"], inputs_embeds=None, past_key_values=None, **kwargs)
    finally:
        inner.rope_deltas = saved  # computing positions must not change what a later call sees
