"""Direct logit attribution: what each head writes straight into the answer, in one forward pass.

A head's output at the answer position, ``z[b, -1, h] [D]``, enters the residual stream through its own
slice of ``o_proj`` (and, in layers with sandwich norms such as Gemma's, through the norm applied to the
attention output); the residual reaches the logits through the final norm and the unembedding. With both
norms' scales frozen at their values on the clean pass (the standard reading: a norm divides by the
root mean square of the whole stream, which no single head sets), that path is linear, and the head's
direct effect on the answer is

    part[b, l, h]  = o_proj_l(z with every head but h zeroed) - o_proj_l(0)      [B, hidden]
    write[b, l, h] = part * post_l(O_l) / O_l     (sandwich layers; O_l = o_proj_l's output)
    dla[b, l, h]   = (write * final(x) / x) . (W_U[correct] - W_U[best wrong option])

where ``x`` is the final norm's input at the answer position and the best wrong option is the clean
pass's. ``norm(v) / v`` is the frozen scale of an RMS-type norm, elementwise and exact in floating point
(entries where ``v`` is exactly 0 carry no scale and count 0). Summed over every head, the embeddings,
the MLPs and the biases it gives the clean logit difference of the two options (before any final logit
soft-capping). Heads are scored by the mean over examples, in logit units.

A large direct effect says the head *writes* the answer; an ablation effect without one says it acts
through later layers (it *routes*): ``head_roles`` labels the located heads so.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import parallel
from ..models.adapter import resolve
from ..models.loading import LoadedModel
from ..sites import heads as site
from .batches import OptionBatch

WRITING_SHARE = 0.5  # a head whose direct effect is at least this share of its total effect writes the answer


def _frozen_scale(normed: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """``normed / raw`` elementwise (an RMS-type norm's frozen scale), 0 where ``raw`` is exactly 0."""
    raw, normed = raw.float(), normed.float()
    return torch.where(raw != 0, normed / torch.where(raw != 0, raw, torch.ones_like(raw)), torch.zeros_like(raw))


def sandwich_norm(layer: torch.nn.Module) -> torch.nn.Module | None:
    """The norm a decoder layer applies to its attention output before adding it to the residual (Gemma's
    ``post_attention_layernorm`` in layers that also have ``pre_feedforward_layernorm``); None when the
    attention output is added as it is (Llama, Qwen, Mistral: their ``post_attention_layernorm`` is the
    MLP's input norm)."""
    if hasattr(layer, "pre_feedforward_layernorm") and hasattr(layer, "post_attention_layernorm"):
        return layer.post_attention_layernorm
    return None


def head_parts(o_proj: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``[B, H, hidden]``: each head's share of ``o_proj``'s output, from ``z [B, H, D]`` at one position;
    with ``o_proj(0)`` (its bias) they sum to ``o_proj(z)``."""
    b, n_heads, d = z.shape
    eye = torch.eye(n_heads, dtype=z.dtype, device=z.device)
    alone = z[None] * eye[:, None, :, None]  # [H, B, H, D]: copy h keeps head h only
    with torch.no_grad():
        out = o_proj(alone.reshape(n_heads * b, n_heads * d)).view(n_heads, b, -1)  # [H, B, hidden]
        bias = o_proj(torch.zeros(1, n_heads * d, dtype=z.dtype, device=z.device))  # [1, hidden]
    return (out - bias).transpose(0, 1).float()  # [B, H, hidden]


def direct_effects(loaded: LoadedModel, batch: OptionBatch) -> torch.Tensor:
    """``[B, L, H]``: each head's direct logit attribution to (correct - best wrong option) at the answer
    position, from one forward pass of ``batch``."""
    g, model, adapter = loaded.geometry, loaded.model, loaded.adapter
    layers = resolve(model, adapter.layers)
    z_last: dict[int, torch.Tensor] = {}
    o_out: dict[int, torch.Tensor] = {}
    final_in: dict[str, torch.Tensor] = {}

    def keep_z(layer):
        def fn(z):  # z [B, S, H, D]
            z_last[layer] = z[:, -1].detach().clone()
        return fn

    handles = [resolve(model, adapter.final_norm).register_forward_pre_hook(
        lambda mod, args: final_in.__setitem__("x", args[0][:, -1].detach()))]
    sandwiches = {i: sandwich_norm(layer) for i, layer in enumerate(layers)}
    for i, norm in sandwiches.items():
        if norm is not None:
            handles.append(adapter.o_proj_module(model, i).register_forward_hook(
                lambda mod, args, out, i=i: o_out.__setitem__(i, out[:, -1].detach())))
    try:
        with torch.no_grad(), site.hooks(loaded, {i: keep_z(i) for i in range(g.n_layers)}):
            logits = loaded.last_logits(batch.inputs).float()  # [B, vocab]
    finally:
        for h in handles:
            h.remove()
    x = final_in["x"]  # [B, hidden]
    with torch.no_grad():
        final_scale = _frozen_scale(resolve(model, adapter.final_norm)(x[:, None])[:, 0], x)  # [B, hidden]
        options = logits.gather(1, batch.option_ids)  # [B, K]
        wrong = batch.option_ids.gather(1, options.scatter(1, batch.answer[:, None], float("-inf"))
                                        .argmax(1, keepdim=True))[:, 0]  # [B] best wrong option's token
        correct = batch.option_ids.gather(1, batch.answer[:, None])[:, 0]  # [B]
        unembed = resolve(model, adapter.lm_head).weight  # [vocab, hidden]
        direction = (unembed[correct] - unembed[wrong]).float() * final_scale  # [B, hidden]
        out = []
        for i in range(g.n_layers):
            parts = head_parts(adapter.o_proj_module(model, i), z_last[i])  # [B, H, hidden]
            if sandwiches[i] is not None:
                raw = o_out[i]  # [B, hidden]
                parts = parts * _frozen_scale(sandwiches[i](raw[:, None])[:, 0], raw)[:, None]
            out.append(torch.einsum("bhd,bd->bh", parts, direction.to(parts.device)))  # [B, H]
    return torch.stack(out, 1).cpu()  # [B, L, H]


def dla_effects(loaded: LoadedModel, batches: Sequence[OptionBatch]) -> torch.Tensor:
    """``[N, L, H]`` over the batches' examples."""
    return torch.cat(parallel.map_batches(lambda b: direct_effects(loaded, b).cpu(), batches, "direct logit attribution"))


def head_roles(heads, direct: torch.Tensor, total: torch.Tensor, share: float = WRITING_SHARE) -> dict:
    """``{"L{l}H{h}": {"role", "direct", "total"}}`` for located heads: ``writing`` when the head's direct
    effect (``direct [L, H]``, DLA) is at least ``share`` of its total effect (``total [L, H]``, e.g. its
    ablation effect) in the same direction, else ``routing`` (its effect runs through later layers)."""
    roles = {}
    for layer, head in heads:
        d, t = float(direct[layer, head]), float(total[layer, head])
        writes = t != 0 and d / t >= share
        roles[f"L{layer}H{head}"] = {"role": "writing" if writes else "routing", "direct": round(d, 4),
                                    "total": round(t, 4)}
    return roles
