"""Evaluate a model on fresh held-out organism scenes, per cognitive function and prior group.

Scenes come from the controlled split (every object pair in every relation) with a seed stream the
training run never uses. Groups: ``consistent`` (a prior pair in its usual relation), ``violating``
(a prior pair in another relation), ``neutral`` (a pair without a prior), ``all``.
Accuracy is option-likelihood argmax, with a bootstrap 95% interval; a greedy-generation check
scores a subset the AdaptVis way (the gold option word appears in the generated text).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..data import organism_examples
from ..evaluation.generation import generate_answers
from ..evaluation.options import score_options
from ..methods.selection import accuracy_summary
from ..models.loading import LoadedModel
from ..world.questions import DECISION_FN, OBJECT_FN, ORGANISM_FUNCTIONS, RELATIONAL_FN, SPATIAL_FN
from ..world.scenes import Rendering

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
    rendering: dict | None = None  # the model's own rendering of the scenes (None: clean)

    def to_dict(self) -> dict:
        return asdict(self)


def generation_check(loaded: LoadedModel, examples, max_new_tokens: int = 3) -> list[dict]:
    """Greedy generation scored the AdaptVis way: the gold option word appears in the generated text."""
    texts = generate_answers(loaded, examples, max_new_tokens=max_new_tokens)
    return [{"id": e.id, "function": e.function, "generated": text,
             "correct": e.answer.lower() in text.lower().split()} for e, text in zip(examples, texts)]


def evaluate_organism(loaded: LoadedModel, config: EvalConfig, log=print):
    """Returns (per-example records, accuracy table rows, generation records, the examples by function)."""
    records = []
    generated = []
    by_function = {}
    for function in ORGANISM_FUNCTIONS:
        examples = by_function[function] = organism_examples(config.n_per_function, seed=config.seed, function=function, split=config.split,
                                     rendering=Rendering.from_dict(config.rendering))
        scores = score_options(loaded, examples, batch_size=config.batch_size)
        for e, s in zip(examples, scores):
            records.append({"id": e.id, "function": function, "prior": e.meta["prior"], "relation": e.relation,
                            "answer": e.answer, "predicted": e.options[s.predicted], "correct": s.correct,
                            "logit_diff": round(s.logit_diff, 4)})
        acc = sum(s.correct for s in scores) / len(scores)
        log(f"  {function:<30} accuracy {acc:.3f} on {len(scores)} held-out examples")
        if config.n_generate:
            generated += generation_check(loaded, examples[:config.n_generate])
    table = []
    for function in ORGANISM_FUNCTIONS:
        for group in GROUPS:
            hits = torch.tensor([float(r["correct"]) for r in records if r["function"] == function
                                 and (group == "all" or r["prior"] == group)])
            summary = accuracy_summary(hits, n_boot=config.bootstrap) if len(hits) else \
                {"n": 0, "accuracy": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
            table.append({"function": function, "group": group, "n": summary["n"], "accuracy": summary["accuracy"],
                          "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
                          "target": TARGETS[function] if group == "consistent" else None})
    return records, table, generated, by_function


def target_report(table: list[dict]) -> dict[str, dict]:
    """For each function: consistent-scene accuracy, its target, and whether it is met."""
    report = {}
    for row in table:
        if row["group"] == "consistent":
            report[row["function"]] = {"accuracy": row["accuracy"], "target": row["target"],
                                       "met": bool(row["accuracy"] >= row["target"])}
    return report
