"""How close a model sits to the setting AdaptVis was built for: LLaVA-1.5 on WhatsUp Controlled_A.

There, image tokens are ~90% of the prompt but get ~10% of the answer position's attention (text
dominance), the model answers prior-consistent questions well and prior-violating ones poorly, and
its confidence says which answers to trust (AdaptVis sharpens image attention when confident and
smooths it when not). An organism on which head-selective AdaptVis can be compared with AdaptVis must
show the same; this module measures each property on controlled scenes:

    prompt image share     image tokens / all (unpadded) prompt tokens
    image attention        the last prompt position's attention mass on image tokens, mean over
                           layers and heads (per layer too)
    object attention       the same position's mass on the two queried objects' patches, compared
                           between correct and wrong answers on prior-violating scenes (difference with
                           a bootstrap interval)
    confidence             top-1 probability of the next token at the answer position (AdaptVis's
                           signal); AUROC of confidence for correct vs wrong answers, and the share
                           below AdaptVis's 0.4 threshold

``setting_targets`` holds the targets the next organism is to meet (issue 10) and reports each one.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data import Example
from ..flow.knockout import object_positions
from ..methods.attention import answer_attention
from ..methods.batches import option_batches
from ..methods.selection import bootstrap_ci
from ..models.loading import LoadedModel
from ..world.questions import DECISION_FN, OBJECT_FN, RELATIONAL_FN, SPATIAL_FN

ADAPTVIS_THRESHOLD = 0.4  # AdaptVis's confidence threshold (sharpen above, smooth below)


def setting_measures(loaded: LoadedModel, examples: Sequence[Example], batch_size: int = 64) -> list[dict]:
    """Per example: correctness (option argmax), confidence, prompt image share, and the answer position's
    attention on image tokens (mean and per layer) and on the two queried objects (None without a layout)."""
    rows = []
    for batch in option_batches(loaded, list(examples), batch_size):
        logits, last = answer_attention(loaded, batch.inputs)  # [B, vocab], [B, L, H, S]
        image = loaded.image_token_mask(batch.inputs)  # [B, S]
        on_image = (last * image[:, None, None]).sum(-1)  # [B, L, H]
        positions = object_positions(loaded, batch)  # [B, 2] or None
        on_objects = None if positions is None else \
            last.gather(-1, positions[:, None, None, :].expand(*last.shape[:3], 2)).sum(-1)  # [B, L, H]
        confidence = logits.softmax(-1).max(-1).values  # [B]
        predicted = logits.gather(1, batch.option_ids).argmax(1)  # [B]
        n_tokens = batch.inputs["attention_mask"].sum(1)  # [B]
        for i, example in enumerate(batch.examples):
            rows.append({
                "id": example.id, "function": example.function, "prior": example.meta.get("prior"),
                "correct": bool(predicted[i] == batch.answer[i]), "confidence": float(confidence[i]),
                "prompt_image_share": float(image[i].sum() / n_tokens[i]),
                "image_attention": float(on_image[i].mean()),
                "image_attention_by_layer": [round(float(v), 4) for v in on_image[i].mean(-1)],
                "object_attention": None if on_objects is None else float(on_objects[i].mean()),
            })
    return rows


def _r(value: float) -> float | None:
    """Rounded to 4 places; None for nan (strict JSON has no NaN)."""
    return None if value != value else round(float(value), 4)


def auroc(scores_pos: torch.Tensor, scores_neg: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counting one half (Mann-Whitney); nan if a side is empty."""
    if not len(scores_pos) or not len(scores_neg):
        return float("nan")
    diff = scores_pos[:, None] - scores_neg[None, :]  # [P, N]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def _mean_difference(a: torch.Tensor, b: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of ``a`` minus mean of ``b`` with a percentile bootstrap interval (each side resampled)."""
    if not len(a) or not len(b):
        return {"difference": None, "ci_low": None, "ci_high": None, "n": [len(a), len(b)]}
    g = torch.Generator().manual_seed(seed)
    boot = a[torch.randint(0, len(a), (n_boot, len(a)), generator=g)].mean(1) \
        - b[torch.randint(0, len(b), (n_boot, len(b)), generator=g)].mean(1)  # [n_boot]
    return {"difference": round(float(a.mean() - b.mean()), 4), "ci_low": round(float(boot.quantile(0.025)), 4),
            "ci_high": round(float(boot.quantile(0.975)), 4), "n": [len(a), len(b)]}


def summarise_setting(rows: Sequence[dict], n_boot: int = 1000) -> dict:
    """The measures of ``setting_measures`` summarised (see the module docstring)."""
    def column(key, keep=lambda r: True):
        return torch.tensor([r[key] for r in rows if keep(r) and r[key] is not None], dtype=torch.float32)

    layers = torch.tensor([r["image_attention_by_layer"] for r in rows])  # [N, L]
    image_attention = column("image_attention")
    lo, hi = bootstrap_ci(image_attention[:, None], n_boot=n_boot)
    out = {"n": len(rows),
           "prompt_image_share": round(float(column("prompt_image_share").mean()), 4),
           "image_attention": {"mean": round(float(image_attention.mean()), 4), "ci_low": round(float(lo[0]), 4),
                               "ci_high": round(float(hi[0]), 4),
                               "by_layer": [round(float(v), 4) for v in layers.mean(0)]},
           "confidence": {}, "object_attention_violating": {}}
    for function in sorted({r["function"] for r in rows}):
        mine = [r for r in rows if r["function"] == function]
        conf_ok = torch.tensor([r["confidence"] for r in mine if r["correct"]])
        conf_bad = torch.tensor([r["confidence"] for r in mine if not r["correct"]])
        viol = [r for r in mine if r["prior"] == "violating"]
        v_ok = torch.tensor([r["confidence"] for r in viol if r["correct"]])
        v_bad = torch.tensor([r["confidence"] for r in viol if not r["correct"]])
        out["confidence"][function] = {
            "auroc_correct_vs_wrong": _r(auroc(conf_ok, conf_bad)),
            "auroc_violating": _r(auroc(v_ok, v_bad)),
            "below_threshold": round(sum(r["confidence"] < ADAPTVIS_THRESHOLD for r in mine) / len(mine), 4),
            "n_correct": len(conf_ok), "n_wrong": len(conf_bad)}
        attn_ok = torch.tensor([r["object_attention"] for r in viol if r["correct"] and r["object_attention"] is not None])
        attn_bad = torch.tensor([r["object_attention"] for r in viol if not r["correct"]
                                 and r["object_attention"] is not None])
        out["object_attention_violating"][function] = {
            "correct": _r(attn_ok.mean()) if len(attn_ok) else None,
            "wrong": _r(attn_bad.mean()) if len(attn_bad) else None,
            **_mean_difference(attn_ok, attn_bad, n_boot=n_boot)}
    return out


def _accuracy(table: Sequence[dict], function: str, group: str) -> float:
    return next(r["accuracy"] for r in table if r["function"] == function and r["group"] == group)


def setting_targets(table: Sequence[dict], setting: dict) -> list[dict]:
    """Issue 10's targets, each ``{"property", "target", "value", "met"}`` (``met`` None: reported only).
    ``table``: the accuracy rows of ``evaluate_organism``; ``setting``: ``summarise_setting``'s output."""
    rows = []
    for function in (RELATIONAL_FN, DECISION_FN):
        consistent, violating = _accuracy(table, function, "consistent"), _accuracy(table, function, "violating")
        rows += [
            {"property": f"{function}: prior-consistent accuracy", "target": ">= 0.95", "value": consistent,
             "met": consistent >= 0.95},
            {"property": f"{function}: prior-violating accuracy", "target": "<= 0.80", "value": violating,
             "met": violating <= 0.80},
            {"property": f"{function}: consistent - violating gap", "target": ">= 0.15",
             "value": round(consistent - violating, 4), "met": consistent - violating >= 0.15}]
    for function in (OBJECT_FN, SPATIAL_FN):
        value = _accuracy(table, function, "all")
        rows.append({"property": f"{function}: accuracy (all scenes)", "target": ">= 0.95", "value": value,
                     "met": value >= 0.95})
    share, attention = setting["prompt_image_share"], setting["image_attention"]["mean"]
    rows += [{"property": "image tokens' share of the prompt", "target": ">= 0.75", "value": share,
              "met": share >= 0.75},
             {"property": "answer position's attention on image tokens", "target": "<= 0.35", "value": attention,
              "met": attention <= 0.35}]
    for function, r in setting["object_attention_violating"].items():
        rows.append({"property": f"{function}: object attention, correct - wrong (violating)", "target": "reported",
                     "value": r["difference"], "ci": [r["ci_low"], r["ci_high"]], "met": None})
    for function, r in setting["confidence"].items():
        rows.append({"property": f"{function}: confidence AUROC, correct vs wrong", "target": "reported",
                     "value": r["auroc_correct_vs_wrong"], "met": None})
    return rows
