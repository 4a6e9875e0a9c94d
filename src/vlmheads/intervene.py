"""The intervene job: head-selective AdaptVis and the baselines, tuned on validation, reported on test.

Methods (each a small frozen intervention value, ``vlmheads.interventions``):

    none            the unmodified model
    scalingvis      ScalingVis(alpha), every layer and head
    adaptvis        AdaptVis(alpha_low, alpha_high, threshold), every layer and head
    head_adaptvis   AdaptVis on the located heads only (the suite's method)
    emphasize       Emphasize(located heads, gamma)
    ablate          Ablate(located heads) (zero)
    visionboost     VisionBoost(alpha, layout-probe directions fitted on the validation split)
    steer           Steer(alpha, located heads' correct-vs-wrong directions fitted on the validation
                    split); skipped, with the reason, when the model makes too few errors there

Hyper-parameters (alpha, threshold, gamma) are the published defaults, or with ``sweep`` chosen on
the protocol's validation split (AdaptVis's 20% sample) by accuracy (ties: the earlier grid point,
so the default wins a tie); results are on the test split (the other 80%), with bootstrap 95%
intervals, per relation and per prior group (organism scenes: consistent / violating / neutral).
Accuracy is option-argmax at the answer position (no generation).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Callable, Sequence

import torch

from .data import load
from .interventions import Ablate, AdaptVis, Emphasize, ScalingVis, Steer, VisionBoost, adaptvis_logits, apply
from .methods.directions import layout_directions, steering_directions
from .methods.batches import metric, option_batches
from .methods.selection import accuracy_summary
from .models.loading import LoadedModel

METHODS = ("none", "scalingvis", "adaptvis", "head_adaptvis", "emphasize", "ablate", "visionboost", "steer")
# the first point of each grid is the published default (AdaptVis's Controlled_A settings; gamma 2)
GRIDS = {
    "scalingvis": [{"alpha": a} for a in (0.8, 0.5, 1.2, 1.5, 2.0)],
    "adaptvis": [{"alpha_low": 0.5, "alpha_high": 1.5, "threshold": 0.4}] + [
        {"alpha_low": lo, "alpha_high": hi, "threshold": t}
        for lo, hi, t in product((0.5, 0.8), (1.2, 1.5, 2.0), (0.4, 0.6, 0.8, 0.95))
        if (lo, hi, t) != (0.5, 1.5, 0.4)],
    "emphasize": [{"gamma": g} for g in (2.0, 1.5, 3.0)],
    "ablate": [{}],
    "none": [{}],
    "visionboost": [{"alpha": a} for a in (1.0, 0.5, 2.0, 4.0)],
    "steer": [{"alpha": a} for a in (15.0, 5.0, 10.0)],  # ITI's usual strength first
}
GRIDS["head_adaptvis"] = GRIDS["adaptvis"]
HEAD_METHODS = ("head_adaptvis", "emphasize", "ablate", "steer")


@dataclass(frozen=True)
class InterveneConfig:
    model: str = "organism"
    datasets: tuple[str, ...] = ("organism:controlled", "organism:vsr")
    data_root: str | None = None
    methods: tuple[str, ...] = METHODS
    heads: tuple[tuple[int, int], ...] = ()
    heads_from: str | None = None
    k: int | None = None
    sweep: bool = False  # tune on the validation split; else the published defaults (first grid point)
    ranking: tuple[tuple[int, int], ...] = ()  # every head, best first (from the locate run): lets sweep tune k
    k_grid: tuple[int, ...] = (1, 2, 3, 5, 8)
    batch_size: int = 64
    bootstrap: int = 1000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _correct(loaded: LoadedModel, batches, method: str, params: dict, heads, directions=None,
             steering=None) -> torch.Tensor:
    out = []
    for b in batches:
        if method in ("adaptvis", "head_adaptvis"):
            iv = AdaptVis(heads=heads if method == "head_adaptvis" else None, **params)
            logits = adaptvis_logits(loaded, b.inputs, iv)[0]
        else:
            ivs = {"none": lambda: [], "scalingvis": lambda: [ScalingVis(**params)],
                   "emphasize": lambda: [Emphasize(heads, **params)], "ablate": lambda: [Ablate(heads)],
                   "visionboost": lambda: [VisionBoost(directions=directions, **params)],
                   "steer": lambda: [Steer(directions=steering, **params)]}[method]()
            with torch.no_grad(), apply(loaded, ivs, inputs=b.inputs):
                logits = loaded.model(**b.inputs, use_cache=False).logits[:, -1]
        out.append(metric(logits, b.option_ids, b.answer, "accuracy").cpu())
    return torch.cat(out)


@dataclass
class InterveneResult:
    rows: list = field(default_factory=list)  # one per (dataset, method, group)
    chosen: dict = field(default_factory=dict)  # (dataset, method) -> params
    probe_accuracy: dict = field(default_factory=dict)  # dataset -> VisionBoost layout probe accuracy
    skipped: dict = field(default_factory=dict)  # "dataset|method" -> reason
    timings: dict = field(default_factory=dict)


def run_intervene(loaded: LoadedModel, config: InterveneConfig, log: Callable[[str], None] = print
                  ) -> InterveneResult:
    heads = tuple(config.heads)
    needs_heads = {"head_adaptvis", "emphasize", "ablate", "steer"} & set(config.methods)
    if needs_heads and not heads:
        raise ValueError("head_adaptvis, emphasize and ablate need located heads: pass --heads-from a locate run")
    for layer, head in heads:
        loaded.geometry.check_head(layer, head)
    result = InterveneResult()
    kwargs = {"root": config.data_root} if config.data_root else {}
    for name in config.datasets:
        t0 = time.time()
        val = load(name, split="val", seed=config.seed, **kwargs)
        test = load(name, split="test", seed=config.seed, **kwargs)
        val_b = option_batches(loaded, list(val), config.batch_size)
        test_b = option_batches(loaded, list(test), config.batch_size)
        test_examples = [e for b in test_b for e in b.examples]
        directions = None
        if "visionboost" in config.methods:
            directions, probe_acc = layout_directions(loaded, list(val), seed=config.seed)
            result.probe_accuracy[name] = round(probe_acc, 4)
            log(f"{name:<22} layout probe on image tokens (validation split): training accuracy {probe_acc:.3f}")
        steering = None
        if "steer" in config.methods:
            try:
                steering = steering_directions(loaded, list(val), heads)
            except ValueError as err:
                result.skipped[f"{name}|steer"] = str(err)
                log(f"{name:<22} steer          skipped: {err}")
        for method in config.methods:
            if method == "steer" and steering is None:
                continue
            grid = GRIDS[method] if config.sweep else GRIDS[method][:1]
            # with --sweep, head-selective methods also tune k (the top-k located heads); the given k
            # comes first so that it wins ties. Ablate keeps its k: it is the diagnostic, not a fix.
            ks = [len(heads)]
            if config.sweep and config.ranking and method in ("head_adaptvis", "emphasize"):
                ks += [k for k in config.k_grid if k != len(heads) and k <= len(config.ranking)]
            candidates = [(k, p) for k in ks for p in grid]
            if len(candidates) > 1:
                scored = []
                for i, (k, p) in enumerate(candidates):
                    chosen = tuple(config.ranking[:k]) if config.ranking else heads
                    acc = float(_correct(loaded, val_b, method, p, chosen, directions, steering).mean())
                    scored.append((acc, -i, k, p))
                best_acc, _, k_best, params = max(scored, key=lambda s: (s[0], s[1]))
            else:
                (k_best, params), best_acc = candidates[0], float("nan")
            use_heads = tuple(config.ranking[:k_best]) if config.ranking and k_best != len(heads) else heads
            result.chosen[(name, method)] = {**params, "k": len(use_heads)} if method in HEAD_METHODS else params
            correct = _correct(loaded, test_b, method, params, use_heads, directions, steering)
            groups = {"all": list(range(len(test_examples)))}
            for i, e in enumerate(test_examples):
                groups.setdefault(f"relation={e.relation}", []).append(i)
                if e.meta.get("prior"):
                    groups.setdefault(f"prior={e.meta['prior']}", []).append(i)
            for group, idx in groups.items():
                summary = accuracy_summary(correct[idx], n_boot=config.bootstrap, seed=config.seed)
                result.rows.append({"dataset": name, "method": method, "group": group, "n": summary["n"],
                                    "accuracy": summary["accuracy"], "ci_low": summary["ci_low"],
                                    "ci_high": summary["ci_high"],
                                    "val_accuracy": round(best_acc, 4) if best_acc == best_acc else "",
                                    "params": json.dumps(result.chosen[(name, method)], sort_keys=True)})
            log(f"{name:<22} {method:<14} test {float(correct.mean()):.3f}  params {result.chosen[(name, method)]}")
        result.timings[name] = time.time() - t0
    return result


def write_outputs(result: InterveneResult, run_dir: Path) -> None:
    import plotly.graph_objects as go

    with open(run_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result.rows[0]))
        writer.writeheader()
        writer.writerows(result.rows)
    fig = go.Figure()
    rows = [r for r in result.rows if r["group"] == "all"]
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        fig.add_trace(go.Bar(name=method, x=[r["dataset"] for r in rs], y=[r["accuracy"] for r in rs],
                             error_y={"type": "data", "symmetric": False,
                                      "array": [r["ci_high"] - r["accuracy"] for r in rs],
                                      "arrayminus": [r["accuracy"] - r["ci_low"] for r in rs]},
                             hovertext=[f"params {r['params']}<br>n {r['n']}" for r in rs]))
    fig.update_layout(barmode="group", title="test accuracy (95% bootstrap CI), tuned on validation",
                      yaxis={"range": [0, 1], "title": "accuracy"}, template="plotly_white")
    (run_dir / "comparison.html").write_text(fig.to_html(include_plotlyjs=True, full_html=True))


def table_lines(result: InterveneResult, groups: Sequence[str] = ("all",)) -> list[str]:
    datasets = list(dict.fromkeys(r["dataset"] for r in result.rows))
    methods = list(dict.fromkeys(r["method"] for r in result.rows))
    lines = [f"{'method':<14}" + "".join(f"{d:>26}" for d in datasets)]
    for group in groups:
        if group != "all":
            lines.append(f"[{group}]")
        for m in methods:
            cells = []
            for d in datasets:
                r = next((r for r in result.rows if r["dataset"] == d and r["method"] == m and r["group"] == group), None)
                cells.append(f"{r['accuracy']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]" if r else "-")
            lines.append(f"{m:<14}" + "".join(f"{c:>26}" for c in cells))
    return lines
