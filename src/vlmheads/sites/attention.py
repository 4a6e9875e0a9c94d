"""The attention site: a registered attention function that scales chosen heads' pre-softmax logits on
image keys (ScalingVis, AdaptVis) and cuts chosen attention edges (knockout, ``vlmheads.flow.knockout``),
the switch of the text decoder's attention implementation (``text_attention``), and the eager pass that
returns every layer's attention probabilities (``attention_probabilities``: locate's image attention,
flow's attention maps and rollout).

Registered as ``"vlmheads_scaled"`` in transformers' ``AttentionInterface`` and, with the eager
additive mask, in ``AttentionMaskInterface`` (without a mask function the causal mask would be
silently dropped). Only the text decoder switches to it (``set_attn_implementation({"text_config":
...})``). Which logits are scaled comes from a context variable, so it works in ``forward`` and in
``generate`` alike:

    scores = q k^T * scaling                        [B, H, Q, K]   (eager's order of operations)
    scores[b, h, -1, image keys of b] *= alpha[b]   chosen layers and heads; only in the call whose
                                                    last query is the prompt's last position (K equals
                                                    the prompt length): prefill, not decoding steps
                                                    (the random-attention control: alpha[b] x a seeded
                                                    random factor per b, h and key)
    scores + mask -> softmax (float32) -> @ v

Only the last query row is scaled, so on a model whose own attention is not eager (SDPA, flash) the
other rows run the model's own function and only that row is computed eagerly: ``[B, H, 1, K]`` scores,
not ``[B, H, Q, K]``. Knockout cuts edges of whole prompt passes (``blocked [B, S, S]``) or of the last
token run on a cached prefix (``blocked [B, 1, S]``).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    from ..models.loading import LoadedModel

NAME = "vlmheads_scaled"


@dataclass
class ScaleSpec:
    layers: dict  # layer -> head index tensor (None = all heads)
    alpha: torch.Tensor  # [B] per-row factor
    image_keys: torch.Tensor  # [B, prompt_len] bool
    prompt_len: int
    noise: tuple[float, int] | None = None  # (spread, seed): alpha x exp(spread x u), u ~ U[-1, 1] per row, head, key


_SPEC: contextvars.ContextVar[ScaleSpec | None] = contextvars.ContextVar("vlmheads_scale", default=None)


@dataclass
class BlockSpec:
    """Attention edges to cut (knockout): in ``layers``, query q may not attend to key k where
    ``blocked[b, q, k]``; in the calls whose queries and keys have the mask's shape: a prompt pass
    (``[B, S, S]``) or the prompt's last token on a cached prefix (``[B, 1, S]``)."""

    layers: frozenset
    blocked: torch.Tensor  # [B, Q, K] bool: [B, S, S], or [B, 1, S] for the last token alone


_BLOCK: contextvars.ContextVar[BlockSpec | None] = contextvars.ContextVar("vlmheads_block", default=None)


def blocking(spec: BlockSpec | None):
    """Cut ``spec``'s edges in the block's forward passes."""
    return _setting(_BLOCK, spec)


# the implementation the model had before the switch: layers and calls that nothing scales run it
# (SDPA stays SDPA on a big model; only the scaled last-query rows pay for eager attention)
FALLBACK: contextvars.ContextVar[str] = contextvars.ContextVar("vlmheads_fallback", default="eager")
CALLS = [0]  # calls of scaled_attention so far: an intervention that switched to it checks that it ran


def scaling(spec: ScaleSpec | None):
    """Scale ``spec``'s attention logits in the block's forward passes (None: scale nothing)."""
    return _setting(_SPEC, spec)


@contextlib.contextmanager
def _setting(var: contextvars.ContextVar, value):
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def _eager_of(module):
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)


def _fallback_of(module):
    """The attention function of the model's own implementation (its eager one when that is eager)."""
    name = FALLBACK.get()
    if name not in (None, "eager", NAME):
        from transformers import AttentionInterface

        if name in AttentionInterface._global_mapping:
            return AttentionInterface._global_mapping[name]
    return _eager_of(module)


def _own_is_not_eager() -> bool:
    return FALLBACK.get() not in (None, "eager", NAME)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def scaled_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    CALLS[0] += 1
    spec = _SPEC.get()
    layer = getattr(module, "layer_idx", None)
    active = spec is not None and layer in spec.layers and key.shape[-2] == spec.prompt_len
    block = _BLOCK.get()
    cut = (block is not None and layer in block.layers and query.shape[-2] == block.blocked.shape[-2]
           and key.shape[-2] == block.blocked.shape[-1])
    if not active and not cut:
        fallback = _fallback_of(module)
        if fallback is not None:
            return fallback(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if active and not cut and query.shape[-2] > 1 and attention_mask is not None and _own_is_not_eager():
        # only the last query row is scaled: the other rows keep the model's own (fused) attention
        rest, _ = _fallback_of(module)(module, query[:, :, :-1], key, value, attention_mask[:, :, :-1],
                                       scaling=scaling, dropout=dropout, **kwargs)  # [B, Q-1, H, D]
        last, _ = scaled_attention(module, query[:, :, -1:], key, value, attention_mask[:, :, -1:],
                                   scaling=scaling, dropout=dropout, **kwargs)  # [B, 1, H, D]
        CALLS[0] -= 1  # one call of this function, counted once
        return torch.cat([rest, last], dim=1), None
    n_rep = query.shape[1] // key.shape[1]
    key_states, value_states = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    weights = torch.matmul(query, key_states.transpose(2, 3)) * (scaling if scaling is not None
                                                                 else query.shape[-1] ** -0.5)  # [B, H, Q, K]
    if active:
        heads = spec.layers[layer]
        alpha = spec.alpha.to(weights.dtype)[:, None, None]  # [B, 1, 1]
        if spec.noise is not None:  # the random-attention control: a factor of its own per row, head and key
            alpha = alpha * random_factors(spec.noise, layer, weights[:, :, -1]).to(weights.device, weights.dtype)
        scaled = torch.where(spec.image_keys[:, None, :], alpha, torch.ones_like(alpha))  # [B, 1 or H, K]
        factor = torch.ones_like(weights[:, :, -1])  # [B, H, K]
        if heads is None:
            factor = factor * scaled
        else:
            factor[:, heads] = scaled.expand_as(factor)[:, heads]
        weights = torch.cat([weights[:, :, :-1], (weights[:, :, -1] * factor)[:, :, None]], dim=2)
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, : key_states.shape[-2]]
    if cut:  # knocked-out edges get no attention at all
        weights = weights.masked_fill(block.blocked[:, None].to(weights.device), float("-inf"))
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
    return out, weights


def random_factors(noise: tuple[float, int], layer: int, like: torch.Tensor) -> torch.Tensor:
    """``exp(spread * u)`` with ``u`` uniform in [-1, 1], one per entry of ``like`` (``[B, H, K]``): drawn on the
    CPU from a generator seeded by (seed, layer), so a batch of the same shape draws the same factors."""
    spread, seed = noise
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(layer))
    u = torch.rand(tuple(like.shape), generator=generator, dtype=torch.float32) * 2 - 1  # [B, H, K]
    return torch.exp(float(spread) * u)


def register() -> str:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(NAME, scaled_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME


@contextlib.contextmanager
def text_attention(loaded: "LoadedModel", name: str):
    """Switch only the text decoder's attention implementation to ``name``, restoring it afterwards (the
    one it had runs every call that nothing scales or cuts: ``FALLBACK``)."""
    model = loaded.model
    text = model.config.get_text_config()
    previous = text._attn_implementation
    model.set_attn_implementation({"text_config": name})
    token = FALLBACK.set(previous or "eager")
    try:
        yield
    finally:
        FALLBACK.reset(token)
        model.set_attn_implementation({"text_config": previous or "eager"})


def by_layer(heads) -> dict[int, list[int]]:
    """``{layer: [head, ...]}`` of ``(layer, head)`` pairs."""
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        out.setdefault(layer, []).append(head)
    return out


def scale_spec(loaded: "LoadedModel", inputs: Mapping[str, torch.Tensor], alpha, heads,
               noise: tuple[float, int] | None = None) -> ScaleSpec:
    """What ``scaling`` scales for one batch: ``alpha`` (a number or ``[B]``) on the image keys of the last
    prompt query, in ``heads`` (``(layer, head)`` pairs; None: every head of every layer); with ``noise``
    ``(spread, seed)`` each row, head and image key is scaled by its own random factor too (``random_factors``)."""
    g = loaded.geometry
    image = loaded.image_token_mask(inputs)  # [B, S]
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=image.device)
    if alpha.dim() == 0:
        alpha = alpha.expand(image.shape[0])
    if heads is None:
        layers = {layer: None for layer in range(g.n_layers)}
    else:
        layers = {layer: torch.tensor(hs, device=image.device) for layer, hs in by_layer(heads).items()}
    return ScaleSpec(layers=layers, alpha=alpha, image_keys=image, prompt_len=int(image.shape[1]), noise=noise)


def attention_probabilities(loaded: "LoadedModel", inputs: Mapping[str, torch.Tensor]
                            ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One pass with the text decoder on eager attention (switched back after), whatever the model was loaded
    with: ``(logits [B, S, vocab], per decoder layer the attention probabilities [B, H, S, S])``. The one
    reading of attention weights: locate's image attention, flow's attention maps and rollout."""
    with torch.no_grad(), text_attention(loaded, "eager"):
        out = loaded.forward(inputs, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise RuntimeError(f"{loaded.name} returned no attention probabilities under eager attention")
    return out.logits, tuple(out.attentions)
