"""The engine behind every per-head method: run the model once, then re-run only what an edit changes.

A clean forward pass records each decoder layer's input (hidden states and the keyword arguments
the decoder passes: masks, rotary embeddings...) and each layer's per-head outputs ``z``. Editing a
head of layer L cannot change layers < L, so ``run_from(L, edit, copies)`` restarts at layer L from
the recorded input, repeated ``copies`` times along the batch (copy c holds rows c*B..(c+1)*B-1),
lets ``edit`` change ``z`` of layer L in place, runs the remaining layers, the final norm and the
LM head at the last position only:

    clean pass:     embed -> L0 -> L1 -> ... -> L{n-1} -> norm -> head            (once per batch)
    run_from(L):            [recorded input of L, x copies] -> L .. L{n-1} -> norm -> head[-1]

so scoring all H heads of layer L costs one pass over ``n - L`` layers with an H-times larger
batch instead of H full passes. Two more savings apply to pre-norm residual layers whose parts the
adapter names (``Adapter.layer_parts``: input norm, attention, post-attention norm, MLP; Llama, Qwen2,
Idefics3's text model):

* layer L starts at its ``o_proj`` from the recorded (edited) ``z``: its attention is not recomputed;
* the last layer runs its MLP on the last position only (the only one the metric reads).

What a decoder adds between its layers, outside the layer modules (Qwen3-VL's deepstack visual
features), is recorded on the clean pass as layer i+1's input minus layer i's output and added back
after layer i on every restart (``self.injections``).

On construction the restarted path is checked against the plain forward pass (no edit); if a
model's layers do not fit, the sweep falls back to calling whole layers, then to full forward
passes on the repeated batch (``self.path`` says which runs: "fast", "layers" or "full"). In the fast path the last layer's
attention computes the last query only (``self.last_query``) when its attention has Llama's plain
shape; the same check decides that. The check's tolerance follows the dtype (``check_tolerance``):
1e-4 in float32, a few rounding units of the logits' scale in bfloat16/float16, where a restarted pass
rounds differently from the plain one (measured on LLaVA-1.5-7B's width in bf16: up to 0.037) and a
fixed 1e-4 sent every real model down the full path, a whole forward per head. ``self.path_note`` says
why a path slower than "fast" was taken.
"""

from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from typing import Callable, Mapping

import torch

from ..sites import heads as site
from ..models.adapter import resolve
from ..models.loading import LoadedModel

PATHS = ("fast", "layers", "full")  # fastest first
ZEdit = Callable[[torch.Tensor], None]  # z [copies * B, S, H, D], edited in place
_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, tuple]]" = weakref.WeakKeyDictionary()
# model -> {(batch, input shape): (the path that reproduced its plain forward pass, last query only, why)}


def check_tolerance(dtype: torch.dtype, reference: torch.Tensor) -> tuple[float, float]:
    """``(atol, rtol)`` within which a restarted pass's last-position logits count as the plain pass's:
    1e-4 / 1e-4 in float32 (and float64); in a half type 4 of its rounding units (``finfo.eps``: 2^-7 for
    bf16, 2^-10 for fp16) times the logits' scale (their largest magnitude, at least 1), no relative part.
    Measured on LLaVA-1.5-7B's width in bf16: the correct restart moves the logits by 0.031 at scale 5.7,
    0.7 units (tolerance 0.18); a wrong restart (other positions, a missed residual) moves them by their
    own scale."""
    if dtype not in (torch.bfloat16, torch.float16):
        return 1e-4, 1e-4
    scale = max(1.0, float(reference.detach().abs().max()))
    return 4 * torch.finfo(dtype).eps * scale, 0.0


# the batch axis of a decoder layer's keyword arguments, by name and rank, where the size alone could
# mislead: multimodal rotary position ids are [3, B, S] (Qwen2-VL's M-RoPE: temporal, height, width) and
# their cos/sin [3, B, S, D] in the transformers releases that pass them to the layers unmerged; at a
# batch of 3 the size guess below would take their first axis
BATCH_AXES: dict[str, dict[int, int]] = {"position_ids": {3: 1}, "position_embeddings": {4: 1}}
_LOG = logging.getLogger(__name__)
_GUESSED: set = set()  # (name, rank, shape, batch) of the guesses already logged


def _batch_axis(value: torch.Tensor, batch: int, name: str | None) -> int | None:
    """The batch axis of one recorded tensor: declared (``BATCH_AXES``, by name and rank) when it is, else
    the guess: axis 0 when its size is the batch, else axis 1 (not behind a broadcast axis of size 1);
    None when neither (a tensor shared by every row). A guess is logged once per name, rank and shape
    (``logging``, ``vlmheads.methods.sweep``, level INFO): the restart check still guards it."""
    declared = BATCH_AXES.get(name or "", {}).get(value.dim())
    if declared is not None:
        return declared if value.shape[declared] == batch else None
    guess = None
    if value.dim() >= 1 and value.shape[0] == batch:
        guess = 0
    elif value.dim() >= 2 and value.shape[1] == batch and value.shape[0] != 1:
        guess = 1
    key = (name, value.dim(), tuple(value.shape), batch)
    if guess is not None and key not in _GUESSED:
        _GUESSED.add(key)
        _LOG.info("batch axis of %s %s at batch %d guessed from its sizes: axis %d (declare it in BATCH_AXES "
                  "if that is wrong)", name or "a recorded tensor", tuple(value.shape), batch, guess)
    return guess


def _map_batch(value, batch: int, op: Callable[[torch.Tensor, int], torch.Tensor], name: str | None = None):
    """Apply ``op(tensor, axis)`` to every tensor along its batch axis (``_batch_axis``; ``name``: the keyword
    it was passed under, kept for the tensors inside a tuple); recurse into tuples, lists and dicts; leave
    everything else as it is."""
    if torch.is_tensor(value):
        axis = _batch_axis(value, batch, name)
        return value if axis is None else op(value, axis)
    if isinstance(value, tuple):
        return tuple(_map_batch(v, batch, op, name) for v in value)
    if isinstance(value, list):
        return [_map_batch(v, batch, op, name) for v in value]
    if isinstance(value, dict):
        return {k: _map_batch(v, batch, op, k) for k, v in value.items()}
    return value


def _repeat(value, batch: int, copies: int):
    """``copies`` copies of every batch-major tensor, copy-major (copy c holds rows c*B..(c+1)*B-1)."""
    if copies == 1:
        return value
    return _map_batch(value, batch, lambda t, dim: t.repeat(*[copies if d == dim else 1 for d in range(t.dim())]))


def _take(value, batch: int, rows: torch.Tensor | None):
    """``rows`` of every batch-major tensor."""
    if rows is None:
        return value
    return _map_batch(value, batch, lambda t, dim: t.index_select(dim, rows.to(t.device)))


class LayerSweep:
    """Recorded clean pass of one batch, and cheap re-runs with edits at one layer."""

    def __init__(self, loaded: LoadedModel, inputs: Mapping[str, torch.Tensor], check: bool = True):
        self.loaded = loaded
        self.model = loaded.model
        adapter = loaded.adapter
        self.layers = resolve(self.model, adapter.layers)
        self.norm = resolve(self.model, adapter.final_norm)
        self.lm_head = resolve(self.model, adapter.lm_head)
        self.batch = int(inputs["input_ids"].shape[0])
        self.inputs = dict(inputs)
        self.layer_inputs: list[tuple[tuple, dict]] = []
        self.z: list[torch.Tensor] = []  # per layer [B, S, H, D]
        outputs: list[torch.Tensor] = []  # per layer, its output hidden states [B, S, hidden]
        handles = []

        def record_input(module, args, kwargs):
            self.layer_inputs.append((args, kwargs))

        def record_output(module, args, out):
            outputs.append(out[0] if isinstance(out, tuple) else out)

        def record_z(z):
            self.z.append(z.detach().clone())

        for layer in self.layers:
            handles.append(layer.register_forward_pre_hook(record_input, with_kwargs=True))
            handles.append(layer.register_forward_hook(record_output))
        try:
            with torch.no_grad(), site.hooks(loaded, {i: record_z for i in range(len(self.layers))}):
                out = loaded.forward(inputs)  # the vocabulary head at the answer position only
        finally:
            for h in handles:
                h.remove()
        self.logits = out.logits[:, -1].float()  # [B, vocab] at the answer position
        # what the decoder adds between layers, outside the layer modules (Qwen3-VL's deepstack adds visual
        # features at the image positions after its first layers): layer i+1's input minus layer i's output.
        # It does not depend on the hidden states, so the restarts add the recorded difference back.
        self.injections: dict[int, torch.Tensor] = {}  # layer i -> [B, S, hidden], added after layer i
        for i in range(len(self.layers) - 1):
            gap = self.layer_inputs[i + 1][0][0] - outputs[i]
            if gap.abs().max() > 0:
                self.injections[i] = gap
        self.parts = [adapter.layer_parts(m) for m in self.layers]  # None: a layer without the declared parts
        llama_like = all(p is not None for p in self.parts)
        self.path = "fast" if llama_like else "layers"
        self.last_query = llama_like and self._plain_llama_attention()
        self.path_note = None if llama_like else \
            (f"layers without the parts the adapter names ({adapter.input_norm}, {adapter.attention}, "
             f"{adapter.post_attention_norm}, {adapter.mlp})")
        if check:
            # restarting at the first and the last layer must reproduce the plain forward pass; checked
            # once per model and batch size (shapes decide which tensors _repeat treats as batch-major)
            checked = _CHECKED.setdefault(self.model, {})
            key = (self.batch, tuple(inputs["input_ids"].shape))
            if key in checked:
                self.path, self.last_query, self.path_note = checked[key]
            else:
                options = [("fast", True), ("fast", False), ("layers", False), ("full", False)]
                failed = [] if llama_like else [self.path_note]
                for path, last_query in options if llama_like else options[2:]:
                    if last_query and not self.last_query:
                        continue
                    self.path, self.last_query = path, last_query
                    why = None if path == "full" else self._reproduces()
                    if why is None:
                        break
                    failed.append(f"{path}{' (last query only)' if last_query else ''}: {why}")
                if self.path != "fast":
                    self.path_note = "; ".join(dict.fromkeys(failed))
                checked[key] = (self.path, self.last_query, self.path_note)

    def _plain_llama_attention(self) -> bool:
        """Whether the last layer's attention has the plain Llama shape ``_last_query_attention`` redoes
        (no query/key norms, 1-D rotary; Qwen's multimodal rotary and others fail the check below)."""
        import sys

        attn = self.parts[-1].attention
        module = sys.modules[type(attn).__module__]
        return (all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
                and not hasattr(attn, "q_norm") and hasattr(module, "apply_rotary_pos_emb")
                and hasattr(module, "eager_attention_forward")
                and self.model.config.get_text_config()._attn_implementation in ("eager", "sdpa", None))

    def _reproduces(self) -> str | None:
        """None if restarting at the first and at the last layer gives the plain pass's logits (within
        ``check_tolerance``); else why not."""
        dtype = self.loaded.dtype  # the model's compute dtype (its logits may come out upcast to float32)
        atol, rtol = check_tolerance(dtype, self.logits)
        try:
            for layer in (0, len(self.layers) - 1):
                restarted = self.run_from(layer, None, copies=2)[:self.batch]
                if not torch.allclose(restarted, self.logits, atol=atol, rtol=rtol):
                    gap = float((restarted.float() - self.logits.float()).abs().max())
                    return (f"restarting at layer {layer} moved the logits by up to {gap:.3g} (tolerance {atol:.3g} "
                            f"in {str(dtype).replace('torch.', '')})")
        except (RuntimeError, IndexError, TypeError, ValueError) as err:
            return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"
        return None

    def run_from(self, layer: int, edit: ZEdit | None, copies: int) -> torch.Tensor:
        """Last-position logits ``[copies * B, vocab]`` with ``edit`` applied to layer's ``z``."""
        if self.path == "full":
            return self._full(layer, edit, copies)
        if self.path == "fast":
            return self._fast(layer, edit, copies)
        hidden = _repeat(self.layer_inputs[layer][0][0], self.batch, copies)
        kwargs_of = self._kwargs_maker(None, self.batch, copies)
        with torch.no_grad(), (site.hook(self.loaded, layer, edit) if edit else _null()):
            for i in range(layer, len(self.layers)):
                args, _ = self.layer_inputs[i]
                out = self.layers[i](hidden, *tuple(args[1:]), **kwargs_of(i))
                hidden = self._inject(i, out[0] if isinstance(out, tuple) else out, None, copies)
            return self.lm_head(self.norm(hidden[:, -1:])).float()[:, 0]

    def _kwargs_maker(self, rows: torch.Tensor | None, n: int, copies: int) -> Callable[[int], dict]:
        """Layer i's own recorded keyword arguments (masks, rotary embeddings...), for ``rows`` repeated
        ``copies`` times. Layers may differ (sliding-window vs global attention layers get other masks);
        layers that were given the very same tensors share one repeated copy."""
        memo: dict[tuple, dict] = {}

        def kwargs_of(i: int) -> dict:
            recorded = self.layer_inputs[i][1]
            key = tuple((k, id(v)) for k, v in recorded.items())
            if key not in memo:
                kwargs = _repeat(_take(dict(recorded), self.batch, rows), n, copies)
                kwargs.pop("use_cache", None)
                memo[key] = kwargs
            return memo[key]
        return kwargs_of

    def run_chunked(self, layer: int, make_edit: Callable[[torch.Tensor], ZEdit], copies: int,
                    rows_per_pass: int) -> torch.Tensor:
        """Like ``run_from`` but over chunks of the batch's rows, about ``rows_per_pass`` rows per pass.

        ``make_edit(rows)`` returns the edit for a chunk: ``z`` is then ``[copies * len(rows), S, H, D]``,
        copy-major over those rows. Returns ``[copies, B, vocab]``. On CPU, passes of ~64 rows ran
        fastest in ``benchmarks/bench_locate.py``; larger repeated batches lost more to memory traffic
        than they saved in overhead.
        """
        if self.path != "fast":
            rows = torch.arange(self.batch)
            return self.run_from(layer, make_edit(rows), copies).view(copies, self.batch, -1)
        chunk = max(1, rows_per_pass // copies)
        parts = []
        for start in range(0, self.batch, chunk):
            rows = torch.arange(start, min(self.batch, start + chunk))
            out = self._fast(layer, make_edit(rows), copies, rows)
            parts.append(out.view(copies, len(rows), -1))
        return torch.cat(parts, dim=1)

    def _fast(self, layer: int, edit: ZEdit | None, copies: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        args, _ = self.layer_inputs[layer]
        n = self.batch if rows is None else len(rows)
        kwargs_of = self._kwargs_maker(rows, n, copies)
        residual = _repeat(_take(args[0], self.batch, rows), n, copies)  # [k*n, S, hidden]
        z = _repeat(_take(self.z[layer], self.batch, rows), n, copies).clone()  # [k*n, S, H, D]
        if edit is not None:
            edit(z)
        last = len(self.layers) - 1
        with torch.no_grad():
            parts = self.parts[layer]
            if layer == last:  # nothing after this layer reads the other positions
                z, residual = z[:, -1:], residual[:, -1:]
            attn = self.loaded.adapter.o_proj_module(self.model, layer)(z.flatten(-2))
            hidden = self._inject(layer, self._mlp(parts, residual + attn, only_last=layer == last), rows, copies)
            for i in range(layer + 1, last + 1):
                parts = self.parts[i]
                normed = parts.input_norm(hidden)
                if i == last and self.last_query:
                    attn = self._last_query_attention(parts.attention, normed, kwargs_of(i))
                    hidden = self._mlp(parts, hidden[:, -1:] + attn, only_last=True)
                else:
                    attn = parts.attention(hidden_states=normed, **kwargs_of(i))[0]
                    hidden = self._inject(i, self._mlp(parts, hidden + attn, only_last=i == last), rows, copies)
            return self.lm_head(self.norm(hidden[:, -1:])).float()[:, 0]

    def _inject(self, layer: int, hidden: torch.Tensor, rows: torch.Tensor | None, copies: int) -> torch.Tensor:
        """``hidden`` after layer ``layer`` plus what the decoder adds there outside the layers (if anything)."""
        gap = self.injections.get(layer)
        if gap is None:
            return hidden
        n = self.batch if rows is None else len(rows)
        return hidden + _repeat(_take(gap, self.batch, rows), n, copies)

    @staticmethod
    def _last_query_attention(attn, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Llama-style attention output at the last position only: keys and values for every position,
        one query. ``[N, 1, hidden]``. Used for the last layer, where only that position is read."""
        import sys

        module = sys.modules[type(attn).__module__]
        rotary, eager = module.apply_rotary_pos_emb, module.eager_attention_forward
        n, seq = hidden.shape[:2]
        q = attn.q_proj(hidden[:, -1:]).view(n, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(hidden).view(n, seq, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(hidden).view(n, seq, -1, attn.head_dim).transpose(1, 2)
        cos, sin = kwargs["position_embeddings"]
        q = rotary(q, q, cos[:, -1:], sin[:, -1:])[0]
        k = rotary(k, k, cos, sin)[0]
        mask = kwargs.get("attention_mask")
        mask = mask[:, :, -1:, :] if mask is not None else None
        out, _ = eager(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        return attn.o_proj(out.reshape(n, 1, -1).contiguous())

    @staticmethod
    def _mlp(parts, hidden: torch.Tensor, only_last: bool) -> torch.Tensor:
        if only_last:
            hidden = hidden[:, -1:]
        return hidden + parts.mlp(parts.post_attention_norm(hidden))

    def _full(self, layer: int, edit: ZEdit | None, copies: int) -> torch.Tensor:
        # every input is batch-major or holds all images' patches/tiles in one tensor, row by row (Qwen's
        # flattened patches, InternVL's tiles): ``copies`` whole copies along dim 0 are right for both
        inputs = {k: torch.cat([v] * copies) if torch.is_tensor(v) and v.dim() >= 1 and copies > 1 else v
                  for k, v in self.inputs.items()}
        with torch.no_grad(), (site.hook(self.loaded, layer, edit) if edit else _null()):
            return self.loaded.last_logits(inputs).float()


@contextmanager
def _null():
    yield
