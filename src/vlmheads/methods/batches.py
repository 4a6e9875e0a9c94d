"""Encoded batches with their answer options, and the metrics read off the answer position.

Options are scored by their first token at the last prompt position (``option_ids [B, K]``); the
organism's and most datasets' options are single words. Options whose first tokens collide make a
metric meaningless, so they are rejected.

    logit_diff  correct option's logit minus the best wrong option's (default)
    prob        softmax probability of the correct option over the full vocabulary
    accuracy    1 if the correct option has the highest logit among the options
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..data.example import Example
from ..evaluation.options import continuation_ids
from ..models.loading import LoadedModel
from ..errors import InputError

METRICS = ("logit_diff", "prob", "accuracy")


@dataclass
class OptionBatch:
    inputs: Mapping[str, torch.Tensor]
    option_ids: torch.Tensor  # [B, K] first token of each option
    answer: torch.Tensor  # [B] index of the correct option
    examples: tuple[Example, ...]

    @property
    def size(self) -> int:
        return int(self.answer.shape[0])


def option_batches(loaded: LoadedModel, examples: Sequence[Example], batch_size: int) -> list[OptionBatch]:
    """Batches of examples that share their number of options (one function at a time, typically)."""
    if not examples:
        raise InputError("no examples: the dataset is empty")
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    by_k: dict[int, list[Example]] = {}
    for e in examples:
        by_k.setdefault(len(e.options), []).append(e)
    batches = []
    for group in by_k.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            ids = []
            for e in chunk:
                prompt = loaded.chat_prompt(e.prompt)
                first = [continuation_ids(loaded.tokenizer, prompt, o)[0] for o in e.options]
                if len(set(first)) != len(first):
                    raise InputError(f"example {e.id}: options {e.options} share a first token; the head metrics "
                                     f"read one token per option")
                ids.append(first)
            batches.append(OptionBatch(
                inputs=loaded.encode_examples(chunk),
                option_ids=torch.tensor(ids, device=loaded.device),
                answer=torch.tensor([e.answer_index for e in chunk], device=loaded.device),
                examples=tuple(chunk)))
    return batches


def metric(logits: torch.Tensor, option_ids: torch.Tensor, answer: torch.Tensor, name: str = "logit_diff",
           ) -> torch.Tensor:
    """Per-row metric ``[N]`` from last-position logits ``[N, vocab]``; ``option_ids``/``answer`` may be
    for a batch of B rows with N = copies * B (they are tiled)."""
    copies = logits.shape[0] // option_ids.shape[0]
    option_ids = option_ids.repeat(copies, 1)
    answer = answer.repeat(copies)
    opt = logits.float().gather(1, option_ids)  # [N, K]
    correct = opt.gather(1, answer[:, None])[:, 0]
    if name == "logit_diff":
        wrong = opt.scatter(1, answer[:, None], float("-inf")).max(1).values
        return correct - wrong
    if name == "prob":
        return logits.float().softmax(-1).gather(1, option_ids.gather(1, answer[:, None]))[:, 0]
    if name == "accuracy":
        return (opt.argmax(1) == answer).float()
    raise InputError(f"unknown metric {name!r}; use one of {METRICS}")


def take_rows(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor], rows: Sequence[int]) -> dict:
    """The encoded inputs of ``rows`` of a batch, its padding kept (so each row computes what it does in
    the whole batch): batch-major tensors ``[B, ...]`` are indexed; a tensor that holds every image's
    patches or tiles in one (Qwen's flattened patches ``[sum patches, D]`` beside ``image_grid_thw``,
    InternVL's and Llama4's tiles ``[sum tiles, 3, H, W]``) is cut at each row's share, which is
    proportional to the row's image tokens in every family here."""
    B = inputs["input_ids"].shape[0]
    rows = [int(r) for r in rows]
    counts = loaded.image_token_mask(inputs).sum(1).tolist()  # [B] image tokens per row
    out = {}
    for key, value in inputs.items():
        if not torch.is_tensor(value) or value.dim() == 0:
            out[key] = value
            continue
        flattened = value.shape[0] != B or (key == "pixel_values" and "image_grid_thw" in inputs)
        if not flattened:
            out[key] = value[rows]
            continue
        total, tokens = value.shape[0], sum(counts)
        if tokens == 0 or any(total * c % tokens for c in counts):
            raise ValueError(f"cannot split {key} {tuple(value.shape)} into the batch's rows by their image tokens "
                             f"{counts}; run the batch whole (a smaller --batch-size)")
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + total * c // tokens)
        out[key] = torch.cat([value[bounds[r]:bounds[r + 1]] for r in rows])
    return out
