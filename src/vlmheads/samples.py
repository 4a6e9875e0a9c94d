"""``samples.jsonl``: one example a line, so a researcher can list the items a method fixed and the ones it broke.

Each line: the example's id, a digest of what the model saw (prompt, options, pixels), its options, answer,
function and prior group, and per method (``"methods"``) the predicted option, the correct option's
probability among the options and correctness. Intervene and locate runs both write it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import parallel
from .interventions import apply
from .runs import write_text_atomic


def example_digest(example) -> str:
    """sha256 (16 hex digits) of what the model saw: the prompt, the options and the image's pixels."""
    from .data import as_pil

    digest = hashlib.sha256("\0".join([example.prompt, *example.options]).encode())
    if example.image is not None:
        image = as_pil(example.image)
        digest.update(f"{image.mode}{image.size}".encode() + image.tobytes())
    return digest.hexdigest()[:16]


def record(example, **extra) -> dict:
    """The line of one example, its methods still empty."""
    return {**extra, "id": example.id, "digest": example_digest(example), "options": list(example.options),
            "answer": example.answer, "function": example.function, "prior": example.meta.get("prior"),
            "methods": {}}


def outcomes(batches, option_logits: Callable) -> dict:
    """Per example of ``batches``: ``{"prediction", "p_correct", "correct"}``, each ``[N]``, from
    ``option_logits(batch) -> [B, K]`` (the options' first-token logits at the answer position)."""
    def one(b) -> tuple[torch.Tensor, torch.Tensor]:
        opts = option_logits(b).float()  # [B, K]
        return opts.argmax(1).cpu(), opts.softmax(1).gather(1, b.answer[:, None].to(opts.device))[:, 0].cpu()

    done = parallel.map_batches(one, batches, "answers")
    preds, probs = [d[0] for d in done], [d[1] for d in done]
    pred, answer = torch.cat(preds), torch.cat([b.answer.cpu() for b in batches])
    return {"prediction": pred, "p_correct": torch.cat(probs), "correct": (pred == answer).float()}


def under(loaded, batches, interventions: Sequence = (), means: torch.Tensor | None = None) -> dict:
    """``outcomes`` of a plain pass with ``interventions`` applied."""
    def option_logits(b):
        with torch.no_grad(), apply(loaded, list(interventions), inputs=b.inputs, means=means):
            return loaded.last_logits(b.inputs).float().gather(1, b.option_ids)

    return outcomes(batches, option_logits)


def entries(examples, outcome: dict) -> list[dict]:
    """One ``methods`` entry per example: the predicted option, p(correct) among the options, correctness."""
    return [{"prediction": e.options[int(p)], "p_correct": round(float(q), 6), "correct": bool(c)}
            for e, p, q, c in zip(examples, outcome["prediction"], outcome["p_correct"], outcome["correct"])]


def write_samples(path: Path, records) -> None:
    write_text_atomic(Path(path), "".join(json.dumps(r) + "\n" for r in records))
