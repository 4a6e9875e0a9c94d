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


def _first_tokens(inputs: Mapping[str, torch.Tensor], n: int) -> dict:
    """The prompt's first ``n`` tokens: every per-token input sliced, the image inputs kept whole."""
    out = dict(inputs)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            out[key] = inputs[key][:, :n]
    return out


def split_last_token(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """``(prefix, step)``: the prompt minus its last token (run once into a KV cache: it holds the image),
    and the last token alone (run on that cache with ``past_key_values=``). For passes that change only the
    last query (AdaptVis, per-patch knockout of the answer position's edges): the prefix is shared.

        prefix: input_ids [B, S-1] (+ the image inputs, whole; + position_ids [3, B, S-1] for M-RoPE)
        step:   input_ids [B, 1], attention_mask [B, S], cache_position [1] (+ position_ids [3, B, 1])
    """
    n = inputs["input_ids"].shape[1] - 1
    prefix = _first_tokens(inputs, n)
    positions = prompt_position_ids(model, inputs)  # [3, B, S] for M-RoPE models, else None
    if positions is not None:
        prefix["position_ids"] = positions[..., :n]
    step = {"input_ids": inputs["input_ids"][:, -1:], "attention_mask": inputs["attention_mask"], "use_cache": True,
            "cache_position": torch.tensor([n], device=inputs["input_ids"].device)}
    if positions is not None:
        step["position_ids"] = positions[..., n:]
    return prefix, step


def repeat_step(step: Mapping[str, torch.Tensor], copies: int) -> dict:
    """``step`` (``split_last_token``) with each example's row repeated ``copies`` times in place
    (rows ``b * copies + j``), to run on a cache repeated the same way (``batch_repeat_interleave``)."""
    if copies == 1:
        return dict(step)
    out = dict(step)
    for key in ("input_ids", "attention_mask"):
        out[key] = step[key].repeat_interleave(copies, dim=0)
    if "position_ids" in step:  # [3, B, 1]: the batch is the second axis
        out["position_ids"] = step["position_ids"].repeat_interleave(copies, dim=1)
    return out
