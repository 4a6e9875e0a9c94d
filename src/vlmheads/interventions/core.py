"""``apply(loaded, interventions)``: one context manager that installs interventions and always cleans up.

    with apply(loaded, [ScalingVis(alpha=2.0)]):
        loaded.model(**inputs)

Head-output interventions (Ablate, Emphasize, Steer) are forward pre-hooks on ``o_proj``.
Attention-logit interventions (ScalingVis, AdaptVis) switch the text decoder to the registered
``vlmheads_scaled`` attention and set its spec from the batch (``inputs=``, or each call's own
``input_ids``); VisionBoost is a pre-hook on the first decoder layer. On exit the hooks are removed
and the previous attention implementation is restored, also when the body raises.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Mapping, Sequence

import torch

from ..models.adapter import resolve
from ..models.loading import LoadedModel
from . import attention
from .values import Ablate, AdaptVis, Emphasize, ScalingVis, Steer, VisionBoost


def _check_heads(loaded: LoadedModel, heads) -> None:
    for layer, head in heads or ():
        loaded.geometry.check_head(layer, head)


def _by_layer(heads) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        out.setdefault(layer, []).append(head)
    return out


@contextmanager
def text_attention(loaded: LoadedModel, name: str):
    """Switch only the text decoder's attention implementation, restoring it afterwards."""
    model = loaded.model
    text = model.config.get_text_config()
    previous = text._attn_implementation
    model.set_attn_implementation({"text_config": name})
    try:
        yield
    finally:
        model.set_attn_implementation({"text_config": previous or "eager"})


def scale_spec(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor], alpha, heads) -> attention.ScaleSpec:
    g = loaded.geometry
    image = loaded.image_token_mask(inputs)  # [B, S]
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=image.device)
    if alpha.dim() == 0:
        alpha = alpha.expand(image.shape[0])
    if heads is None:
        layers = {layer: None for layer in range(g.n_layers)}
    else:
        layers = {layer: torch.tensor(hs, device=image.device) for layer, hs in _by_layer(heads).items()}
    return attention.ScaleSpec(layers=layers, alpha=alpha, image_keys=image, prompt_len=int(image.shape[1]))


@contextmanager
def apply(loaded: LoadedModel, interventions: Sequence, inputs: Mapping[str, torch.Tensor] | None = None,
          means: torch.Tensor | None = None):
    """Install ``interventions`` for the duration of the block (see the module docstring).

    Interventions that act on image tokens (ScalingVis, AdaptVis, VisionBoost) find them in ``inputs``
    when given, else in each call's own ``input_ids`` (a forward pre-hook on the model reads them;
    in ``generate`` the prefill call sets them and the decoding steps keep them). AdaptVis then runs
    its unmodified confidence pass inside that hook (two full passes; ``adaptvis_logits`` shares the
    prompt's KV cache instead).
    """
    g = loaded.geometry
    head_edits: dict[int, list] = {}
    scaling_iv = None
    boosts = []
    for iv in interventions:
        if isinstance(iv, (Ablate, Emphasize)):
            _check_heads(loaded, iv.heads)
            heads = iv.heads if iv.heads is not None else [(l, h) for l in range(g.n_layers) for h in range(g.n_heads)]
            if isinstance(iv, Ablate) and iv.mode == "mean" and means is None:
                raise ValueError("Ablate(mode='mean') needs the heads' mean outputs: apply(..., means=...)")
            for layer, hs in _by_layer(heads).items():
                head_edits.setdefault(layer, []).append((iv, hs))
        elif isinstance(iv, (ScalingVis, AdaptVis)):
            _check_heads(loaded, iv.heads)
            if scaling_iv is not None:
                raise ValueError("only one attention-logit intervention (ScalingVis or AdaptVis) at a time")
            scaling_iv = iv
        elif isinstance(iv, Steer):
            for (layer, head), (direction, std) in iv.directions.items():
                loaded.geometry.check_head(layer, head)
                head_edits.setdefault(layer, []).append((iv, (head, direction, std)))
        elif isinstance(iv, VisionBoost):
            d = torch.as_tensor(iv.directions, dtype=torch.float32)
            if d.dim() != 2 or d.shape[1] != loaded.model.config.get_text_config().hidden_size:
                raise ValueError(f"VisionBoost directions must be [r, hidden_size], got {tuple(d.shape)}")
            boosts.append((iv.alpha, d))
        else:
            raise TypeError(f"unknown intervention {iv!r}")
    state: dict = {"image": None, "busy": False}  # image-token mask of the batch being run

    def prepare(batch_inputs) -> None:
        """Set the image mask (and the scaling spec) for a batch: its prompt, before any decoding step."""
        state["image"] = loaded.image_token_mask(batch_inputs)
        if scaling_iv is None:
            return
        if isinstance(scaling_iv, AdaptVis):
            state["busy"] = True
            try:
                with torch.no_grad(), attention.scaling(None):
                    plain = {k: v for k, v in batch_inputs.items() if k not in ("past_key_values", "use_cache")}
                    first = loaded.model(**plain, use_cache=False).logits[:, -1].float()
            finally:
                state["busy"] = False
            alpha = adaptvis_alpha(first.softmax(-1).max(-1).values, scaling_iv)
        else:
            alpha = scaling_iv.alpha
        attention._SPEC.set(scale_spec(loaded, batch_inputs, alpha, scaling_iv.heads))

    with ExitStack() as stack:
        token = attention._SPEC.set(None)
        stack.callback(attention._SPEC.reset, token)
        if scaling_iv is not None:
            stack.enter_context(text_attention(loaded, attention.register()))
        if inputs is not None:
            prepare(inputs)
        elif scaling_iv is not None or boosts:
            def from_call(mod, args, kwargs):
                if state["busy"]:
                    return None
                ids = kwargs.get("input_ids", args[0] if args else None)
                if ids is None:
                    raise ValueError("these interventions find the image tokens in input_ids; pass input_ids "
                                     "or apply(..., inputs=inputs)")
                if ids.shape[1] > 1 or state["image"] is None:  # a prompt; decoding steps keep its mask
                    prepare({**kwargs, "input_ids": ids})
                return None

            handle = loaded.model.register_forward_pre_hook(from_call, with_kwargs=True)
            stack.callback(handle.remove)
        for layer, edits in head_edits.items():
            module = loaded.adapter.o_proj_module(loaded.model, layer)

            def pre_hook(mod, args, edits=edits, layer=layer):
                x = args[0]
                z = g.split_heads(x).clone()
                for iv, hs in edits:
                    if isinstance(iv, Steer):  # the last position only: the one that predicts the answer
                        head, direction, std = hs
                        z[:, -1, head] = z[:, -1, head] + iv.alpha * std * direction.to(z.device, z.dtype)
                    elif isinstance(iv, Emphasize):
                        z[:, :, hs] = z[:, :, hs] * iv.gamma
                    elif iv.mode == "zero":
                        z[:, :, hs] = 0
                    else:
                        z[:, :, hs] = means[layer, hs].to(z.dtype)
                return (z.view_as(x),) + tuple(args[1:])

            handle = module.register_forward_pre_hook(pre_hook)
            stack.callback(handle.remove)
        if boosts:
            def boost(mod, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                image = state["image"]
                if state["busy"] or image is None or hidden.shape[:2] != image.shape:
                    return None  # a decoding step (the image is in the cache already) or a confidence pass
                out = hidden.clone()
                for alpha, d in boosts:
                    d = d.to(hidden.device, hidden.dtype)
                    h = out[image]  # [n_image_tokens, hidden]
                    out[image] = h + alpha * (h @ d.T) @ d
                if args:
                    return (out,) + tuple(args[1:]), kwargs
                return args, {**kwargs, "hidden_states": out}

            first = resolve(loaded.model, loaded.adapter.layers)[0]
            handle = first.register_forward_pre_hook(boost, with_kwargs=True)
            stack.callback(handle.remove)
        yield


def adaptvis_alpha(confidence: torch.Tensor, iv: AdaptVis) -> torch.Tensor:
    """Per-example alpha: alpha_low below the threshold, alpha_high at or above it (confidence rounded to
    two decimals, as AdaptVis does)."""
    rounded = torch.round(confidence * 100) / 100
    return torch.where(rounded < iv.threshold, torch.tensor(iv.alpha_low), torch.tensor(iv.alpha_high))


def adaptvis_logits(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor], iv: AdaptVis,
                    shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Last-position logits under AdaptVis: ``(logits [B, vocab], confidence [B], alpha [B])``.

    The confidence pass and the scaled pass differ only at the prompt's last query, so with
    ``shared_prefix`` the prompt minus its last token runs once into a KV cache, and the last token
    runs twice on it (unmodified, then scaled): about one forward pass instead of two.
    """
    _check_heads(loaded, iv.heads)
    model = loaded.model
    if not shared_prefix:
        with torch.no_grad():
            first = model(**inputs, use_cache=False).logits[:, -1].float()
        confidence = first.softmax(-1).max(-1).values
        alpha = adaptvis_alpha(confidence, iv)
        with torch.no_grad(), apply(loaded, [ScalingVis(1.0, iv.heads)], inputs=inputs), \
                attention.scaling(scale_spec(loaded, inputs, alpha, iv.heads)):
            logits = model(**inputs, use_cache=False).logits[:, -1].float()
        return logits, confidence, alpha
    from transformers import DynamicCache

    prefix = {k: v for k, v in inputs.items()}
    prefix["input_ids"] = inputs["input_ids"][:, :-1]
    prefix["attention_mask"] = inputs["attention_mask"][:, :-1]
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            prefix[key] = inputs[key][:, :-1]
    n = prefix["input_ids"].shape[1]
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(**prefix, past_key_values=cache, use_cache=True)
        step = {"input_ids": inputs["input_ids"][:, -1:], "attention_mask": inputs["attention_mask"],
                "past_key_values": cache, "use_cache": True,
                "cache_position": torch.tensor([n], device=inputs["input_ids"].device)}
        first = model(**step).logits[:, -1].float()
        confidence = first.softmax(-1).max(-1).values
        alpha = adaptvis_alpha(confidence, iv)
        cache.crop(-1)  # drop the unmodified last token; the prefix stays shared
        spec = scale_spec(loaded, inputs, alpha, iv.heads)
        with text_attention(loaded, attention.register()), attention.scaling(spec):
            logits = model(**step).logits[:, -1].float()
    return logits, confidence, alpha
