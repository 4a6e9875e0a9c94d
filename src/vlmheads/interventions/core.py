"""``apply(loaded, interventions)``: one context manager that composes interventions and always cleans up.

    with apply(loaded, [ScalingVis(alpha=2.0)]):
        loaded.model(**inputs)

Each intervention value installs itself (``Intervention.install``) into an ``Installation``
(``installation.py``), which removes everything on exit, also when the body raises. Interventions that
act on image tokens find them in ``inputs=`` when given, else in each call's own ``input_ids`` (a
forward pre-hook on the model reads them; in ``generate`` the prefill call sets them and the decoding
steps keep them). ``adaptvis_logits`` is AdaptVis with the confidence and scaled passes sharing the
prompt's KV cache.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Mapping, Sequence

import torch

from ..models.loading import LoadedModel
from ..models.positions import split_last_token
from ..sites import attention
from ..sites.attention import scale_spec, text_attention
from .installation import Installation, no_op_check
from .values import AdaptVis, Intervention, ScalingVis

@contextmanager
def apply(loaded: LoadedModel, interventions: Sequence[Intervention], inputs: Mapping[str, torch.Tensor] | None = None,
          means: torch.Tensor | None = None):
    """Install ``interventions`` for the duration of the block (see the module docstring).

    Every value is checked against the model before anything is installed. AdaptVis outside
    ``adaptvis_logits`` runs its unmodified confidence pass inside the model's pre-hook (two full
    passes; ``adaptvis_logits`` shares the prompt's KV cache instead).
    """
    interventions = list(interventions)
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"unknown intervention {iv!r}: use the values in vlmheads.interventions")
        iv.check(loaded)
    with ExitStack() as stack:
        token = attention._SPEC.set(None)
        stack.callback(attention._SPEC.reset, token)
        ctx = Installation(loaded, stack, means)
        for iv in interventions:
            iv.install(ctx)
        if inputs is not None:
            ctx.prepare(inputs)
        elif ctx.needs_batch:
            ctx.watch_calls()
        yield
        if ctx.check_after is not None:
            ctx.check_after()


def adaptvis_alpha(confidence: torch.Tensor, iv: AdaptVis) -> torch.Tensor:
    """Per-example alpha (see ``AdaptVis.alpha_for``)."""
    return iv.alpha_for(confidence)


def adaptvis_logits(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor], iv: AdaptVis,
                    shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Last-position logits under AdaptVis: ``(logits [B, vocab], confidence [B], alpha [B])``.

    The confidence pass and the scaled pass differ only at the prompt's last query, so with
    ``shared_prefix`` the prompt minus its last token runs once into a KV cache, and the last token
    runs twice on it (unmodified, then scaled): about one forward pass instead of two.
    """
    iv.check(loaded)
    model = loaded.model
    if not shared_prefix:
        with torch.no_grad():
            first = loaded.last_logits(inputs).float()
        confidence = first.softmax(-1).max(-1).values
        alpha = adaptvis_alpha(confidence, iv)
        with torch.no_grad(), apply(loaded, [ScalingVis(1.0, iv.heads)], inputs=inputs), \
                attention.scaling(scale_spec(loaded, inputs, alpha, iv.heads)):
            logits = loaded.last_logits(inputs).float()
        return logits, confidence, alpha
    from transformers import DynamicCache

    prefix, step = split_last_token(model, inputs)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(**prefix, past_key_values=cache, use_cache=True, **loaded.last_only)  # only its cache is read
        first = model(**step, past_key_values=cache).logits[:, -1].float()
        confidence = first.softmax(-1).max(-1).values
        alpha = adaptvis_alpha(confidence, iv)
        try:
            cache.crop(-1)  # drop the unmodified last token; the prefix stays shared
        except (ValueError, RuntimeError, NotImplementedError, AttributeError, IndexError):
            # caches that cannot be cropped (sliding-window layers past their window): run the prefix again
            cache = DynamicCache(config=model.config)
            model(**prefix, past_key_values=cache, use_cache=True, **loaded.last_only)  # only its cache is read
        spec = scale_spec(loaded, inputs, alpha, iv.heads)
        before = attention.CALLS[0]
        with text_attention(loaded, attention.register()), attention.scaling(spec):
            logits = model(**step, past_key_values=cache).logits[:, -1].float()
        no_op_check(loaded, "AdaptVis", 1, attention.CALLS[0] - before)
    return logits, confidence, alpha
