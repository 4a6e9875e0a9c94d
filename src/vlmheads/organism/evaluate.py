"""Evaluate a model on fresh held-out organism scenes, per cognitive function and prior group.

Scenes come from the controlled split (every object pair in every relation) with a seed stream the
training run never uses. Groups: ``consistent`` (a prior pair in its usual relation), ``violating``
(a prior pair in another relation), ``neutral`` (a pair without a prior), ``all``.
Accuracy is option-likelihood argmax, with a bootstrap 95% interval; a greedy-generation check
scores a subset the AdaptVis way (the gold option word appears in the generated text).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..data import organism_examples
from ..evaluation.options import score_options
from ..models.loading import LoadedModel
from .questions import DECISION_FN, OBJECT_FN, ORGANISM_FUNCTIONS, RELATIONAL_FN, SPATIAL_FN

# accuracy targets on prior-consistent held-out scenes (issue #2)
TARGETS = {OBJECT_FN: 0.97, SPATIAL_FN: 0.95, RELATIONAL_FN: 0.90, DECISION_FN: 0.90}
GROUPS = ("all", "consistent", "violating", "neutral")


@dataclass(frozen=True)
class EvalConfig:
    model: str = "organism"
    n_per_function: int = 1200
    seed: int = 20_000
    split: str = "controlled"
    batch_size: int = 64
    n_generate: int = 48  # per function, for the generation check
    bootstrap: int = 1000

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(values: np.ndarray, n_resamples: int, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_resamples, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def generation_check(loaded: LoadedModel, examples, max_new_tokens: int = 3) -> list[dict]:
    import torch

    records = []
    for start in range(0, len(examples), 16):
        batch = examples[start:start + 16]
        enc = loaded.encode_examples(batch)
        with torch.no_grad():
            out = loaded.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        texts = loaded.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for e, text in zip(batch, texts):
            records.append({"id": e.id, "function": e.function, "generated": text.strip(),
                            "correct": e.answer.lower() in text.lower().split()})
    return records


def evaluate_organism(loaded: LoadedModel, config: EvalConfig, log=print):
    """Returns (per-example records, accuracy table rows, generation records)."""
    records = []
    generated = []
    for function in ORGANISM_FUNCTIONS:
        examples = organism_examples(config.n_per_function, seed=config.seed, function=function, split=config.split)
        scores = score_options(loaded, examples, batch_size=config.batch_size)
        for e, s in zip(examples, scores):
            records.append({"id": e.id, "function": function, "prior": e.meta["prior"], "relation": e.relation,
                            "answer": e.answer, "predicted": e.options[s.predicted], "correct": s.correct,
                            "logit_diff": round(s.logit_diff, 4)})
        acc = np.mean([s.correct for s in scores])
        log(f"  {function:<30} accuracy {acc:.3f} on {len(scores)} held-out examples")
        if config.n_generate:
            generated += generation_check(loaded, examples[:config.n_generate])
    table = []
    for function in ORGANISM_FUNCTIONS:
        for group in GROUPS:
            hits = np.array([r["correct"] for r in records if r["function"] == function
                             and (group == "all" or r["prior"] == group)], dtype=float)
            low, high = bootstrap_ci(hits, config.bootstrap)
            table.append({"function": function, "group": group, "n": len(hits),
                          "accuracy": round(float(hits.mean()), 4) if len(hits) else float("nan"),
                          "ci_low": round(low, 4), "ci_high": round(high, 4),
                          "target": TARGETS[function] if group == "consistent" else None})
    return records, table, generated


def target_report(table: list[dict]) -> dict[str, dict]:
    """For each function: consistent-scene accuracy, its target, and whether it is met."""
    report = {}
    for row in table:
        if row["group"] == "consistent":
            report[row["function"]] = {"accuracy": row["accuracy"], "target": row["target"],
                                       "met": bool(row["accuracy"] >= row["target"])}
    return report
