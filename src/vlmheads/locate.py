"""The locate job: score every head for one cognitive function, select the few that carry it, check.

Steps (each method is optional; ``LocateConfig.methods``):

1. data: examples of every function the dataset has (the organism's four by default), and for the
   organism, counterfactual pairs per function (same question, re-rendered image, other answer);
2. ablation (causal): per-head effect on the metric, per function (for specificity);
3. activation patching, noising and denoising (causal, organism pairs), per function;
4. attribution patching (gradient x difference), compared with exact noising patching;
5. probing (descriptive): held-out balanced accuracy of a per-head function probe;
6. attention to the image (descriptive): share and spatial entropy at the answer position;
7. selection: top-k by the chosen method's score for the target function (elbow by default);
   sparsity, specificity; the ablation check (selected vs k random heads, all functions).

Results come back as a ``LocateResult``; ``write_outputs`` writes scores.csv, heads.json and the
head map into a run directory.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .data import canonical_function, load, organism_pairs
from .methods.attention import image_attention
from .methods.attribution import attribution_effects
from .methods.batches import METRICS, option_batches
from .methods.checks import ablation_check
from .methods.effects import ABLATIONS, ablation_effects, head_means, pair_batches, patching_effects
from .methods.probing import probe_scores
from .methods.selection import bootstrap_ci, elbow_k, ranked, sparsity, specificity, top_k
from .methods.sweep import LayerSweep
from .models.loading import LoadedModel

METHODS = ("ablation", "patching", "attribution", "probe", "attention")
CAUSAL = ("ablation", "noising", "denoising")


@dataclass(frozen=True)
class LocateConfig:
    function: str = "spatial_perception"
    model: str = "organism"
    dataset: str = "organism:decomposed"
    data_root: str | None = None
    n: int = 64  # examples per function
    methods: tuple[str, ...] = METHODS
    ablation: str = "zero"
    metric: str = "logit_diff"
    select_by: str = "ablation"  # ablation | noising | denoising | attribution | probe
    top_k: int | None = None  # None: the elbow of the sorted scores
    max_auto_k: int | None = None  # cap for the elbow (default: 10% of heads, at least 1)
    random_draws: int = 5
    batch_size: int = 32
    bootstrap: int = 1000
    seed: int = 0
    device: str = "cpu"
    dtype: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "function", canonical_function(self.function))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {self.ablation!r}; use one of {ABLATIONS}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; use one of {METRICS}")
        if self.n < 4:
            raise ValueError(f"--n must be at least 4 examples per function, got {self.n}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {self.top_k}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LocateResult:
    config: LocateConfig
    geometry: dict
    functions: list[str]
    scores: dict = field(default_factory=dict)  # (method, function) -> {"score", "ci_low", "ci_high"} [L, H]
    selected: list = field(default_factory=list)
    k_rule: str = ""
    summary: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # method -> reason


def _examples_by_function(config: LocateConfig) -> dict[str, list]:
    if config.dataset.strip().lower() == "organism:decomposed":
        # n fresh controlled examples per function (the registry's fixed 400 would cap n at 100)
        from .data import organism_examples
        from .world.questions import ORGANISM_FUNCTIONS

        by_function = {f: organism_examples(config.n, seed=config.seed, function=f, split="controlled")
                       for f in ORGANISM_FUNCTIONS}
    else:
        kwargs = {"root": config.data_root} if config.data_root else {}
        if config.dataset.startswith("organism:"):
            kwargs["seed"] = config.seed
        by_function = {}
        for e in load(config.dataset, **kwargs):
            by_function.setdefault(e.function, []).append(e)
        by_function = {f: ex[:config.n] for f, ex in by_function.items()}
    if config.function not in by_function:
        raise ValueError(f"dataset {config.dataset!r} has no {config.function!r} questions; it has "
                         f"{', '.join(sorted(by_function)) or 'none'}")
    return by_function


def run_locate(loaded: LoadedModel, config: LocateConfig, log: Callable[[str], None] = print) -> LocateResult:
    g = loaded.geometry
    total_heads = g.n_total
    if config.top_k is not None and config.top_k > total_heads:
        raise ValueError(f"--top-k {config.top_k} is larger than the number of heads: {loaded.name} has "
                         f"{total_heads} ({g.n_layers} layers x {g.n_heads}); choose 1..{total_heads}")
    torch.manual_seed(config.seed)
    result = LocateResult(config=config, geometry=asdict(g), functions=[])
    t0 = time.time()
    by_function = _examples_by_function(config)
    result.functions = sorted(by_function)
    batches = {f: option_batches(loaded, ex, config.batch_size) for f, ex in by_function.items()}
    organism = config.dataset.startswith("organism:")
    pairs = {}
    if organism and ({"patching", "attribution"} & set(config.methods)):
        for f in result.functions:
            p = organism_pairs(config.n, seed=config.seed, function=f)
            clean = option_batches(loaded, [a for a, _ in p], config.batch_size)
            corrupt = option_batches(loaded, [b for _, b in p], config.batch_size)
            pairs[f] = pair_batches(clean, corrupt)
    elif {"patching", "attribution"} & set(config.methods):
        from .data.counterfactuals import text_swap_pairs

        reasons = {}
        for f in result.functions:
            p, skipped = text_swap_pairs(loaded, by_function[f])
            for why, n in skipped.items():
                reasons[why] = reasons.get(why, 0) + n
            if p:
                clean = option_batches(loaded, [a for a, _ in p], config.batch_size)
                corrupt = option_batches(loaded, [b for _, b in p], config.batch_size)
                pairs[f] = pair_batches(clean, corrupt)
        result.summary["counterfactual_pairs"] = {"kind": "text: swap the two objects",
                                                  "pairs": {f: sum(b.size for b in pairs[f][0]) for f in pairs},
                                                  "examples_without_pair": reasons}
        if not pairs:
            result.skipped["patching"] = result.skipped["attribution"] = \
                "no counterfactual pairs: object swaps need two-object relational questions whose swapped " \
                f"names tokenize to the same length ({', '.join(f'{n} {w}' for w, n in reasons.items())})"
    result.timings["data"] = time.time() - t0
    log(f"data: {', '.join(f'{f} {len(ex)}' for f, ex in by_function.items())} examples"
        + (f"; counterfactual pairs: {', '.join(f'{f} {sum(b.size for b in p[0])}' for f, p in pairs.items())}"
           if pairs else ""))

    def put(method: str, function: str, per_example: torch.Tensor, scale: float = 1.0) -> None:
        lo, hi = bootstrap_ci(per_example, n_boot=config.bootstrap, seed=config.seed)
        result.scores[(method, function)] = {"score": per_example.float().mean(0) / scale,
                                             "ci_low": lo / scale, "ci_high": hi / scale}

    means = head_means(loaded, [b for bs in batches.values() for b in bs]) if config.ablation == "mean" else None
    if "ablation" in config.methods:
        t = time.time()
        for f in result.functions:
            r = ablation_effects(loaded, batches[f], config.ablation, metric_name=config.metric,
                                 reference=[b for bs in batches.values() for b in bs])
            put("ablation", f, r.effects)
            result.summary.setdefault("base_metric", {})[f] = round(float(r.base.mean()), 4)
            result.summary["restart_path"] = r.partial
            log(f"ablation ({config.ablation}) {f}: base {config.metric} {float(r.base.mean()):.3f}, "
                f"max head effect {float(r.effects.mean(0).max()):.3f}")
        result.timings["ablation"] = time.time() - t
    if "patching" in config.methods and pairs:
        t = time.time()
        for f, (clean, corrupt) in pairs.items():
            noise = patching_effects(loaded, clean, corrupt, "noising")
            deno = patching_effects(loaded, clean, corrupt, "denoising")
            put("noising", f, noise.effects)
            gap = float(noise.base.mean() - deno.base.mean())  # clean - corrupted metric
            put("denoising", f, deno.effects, scale=gap if abs(gap) > 1e-6 else 1.0)
            result.summary.setdefault("patching_gap", {})[f] = round(gap, 4)
            log(f"patching {f}: clean-corrupt gap {gap:.3f}")
        result.timings["patching"] = time.time() - t
    if "attribution" in config.methods and pairs:
        t = time.time()
        for f, (clean, corrupt) in pairs.items():
            put("attribution", f, attribution_effects(loaded, clean, corrupt, config.metric))
        result.timings["attribution"] = time.time() - t
        agreement = {}
        for f in pairs:
            if ("noising", f) in result.scores:
                agreement[f] = _agreement(result.scores[("attribution", f)]["score"],
                                          result.scores[("noising", f)]["score"])
        result.summary["attribution_vs_exact_noising"] = agreement
        if agreement:
            log("attribution vs exact patching: " + ", ".join(
                f"{f} spearman {a['spearman']:.2f}, top-{a['k']} overlap {a['top_overlap']:.2f}"
                for f, a in agreement.items()))
    if "probe" in config.methods:
        if len(result.functions) < 2:
            result.skipped["probe"] = "probing needs sub-questions of at least two functions"
        else:
            t = time.time()
            feats, labels = [], []
            for f in result.functions:
                for b in batches[f]:
                    z = LayerSweep(loaded, b.inputs, check=False).z  # L x [B, S, H, D]
                    feats.append(torch.stack([zl[:, -1] for zl in z], 1).cpu())  # [B, L, H, D]
                    labels += [f] * b.size
            features = torch.cat(feats)
            for f in result.functions:
                s = probe_scores(features, labels, f, seed=config.seed)
                result.scores[("probe", f)] = {"score": s, "ci_low": s, "ci_high": s}
            result.timings["probe"] = time.time() - t
    if "attention" in config.methods:
        t = time.time()
        for f in result.functions:
            share, entropy = image_attention(loaded, batches[f])
            result.scores[("image_share", f)] = {"score": share, "ci_low": share, "ci_high": share}
            result.scores[("image_entropy", f)] = {"score": entropy, "ci_low": entropy, "ci_high": entropy}
        result.timings["attention"] = time.time() - t

    # -- selection and evidence --------------------------------------------------------------
    key = (config.select_by, config.function)
    if key not in result.scores:
        raise ValueError(f"cannot select by {config.select_by!r}: that method did not run "
                         f"({result.skipped.get(config.select_by, 'not in --methods')})")
    score = result.scores[key]["score"]
    cap = config.max_auto_k or max(1, total_heads // 10)
    k = config.top_k or elbow_k(score, max_k=cap)
    result.k_rule = "--top-k" if config.top_k else f"elbow of sorted scores (capped at {cap})"
    result.selected = top_k(score, k)
    result.summary["sparsity_80"] = {f"{m}|{f}": round(sparsity(v["score"]), 4) for (m, f), v in result.scores.items()
                                     if m in CAUSAL + ("attribution",)}
    tops = {f: top_k(result.scores[(config.select_by, f)]["score"], k) for f in result.functions
            if (config.select_by, f) in result.scores}
    result.summary["top_heads_by_function"] = {f: [list(h) for h in hs] for f, hs in tops.items()}
    result.summary["specificity_jaccard"] = specificity(tops)
    t = time.time()
    result.check = ablation_check(loaded, batches, result.selected, draws=config.random_draws, seed=config.seed,
                                  mode=config.ablation, means=means)
    result.timings["check"] = time.time() - t
    return result


def _agreement(estimate: torch.Tensor, exact: torch.Tensor) -> dict:
    def ranks(x):
        r = torch.empty_like(x.flatten())
        r[x.flatten().argsort()] = torch.arange(x.numel(), dtype=r.dtype)
        return r

    a, b = ranks(estimate), ranks(exact)
    spearman = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    k = max(1, estimate.numel() // 10)
    overlap = len(set(ranked(estimate)[:k]) & set(ranked(exact)[:k])) / k
    return {"spearman": round(spearman, 4), "k": k, "top_overlap": round(overlap, 4)}


def score_rows(result: LocateResult) -> list[dict]:
    rows = []
    for (method, function), v in sorted(result.scores.items()):
        order = {h: i + 1 for i, h in enumerate(ranked(v["score"]))}
        n_layers, n_heads = v["score"].shape
        for layer in range(n_layers):
            for head in range(n_heads):
                rows.append({"layer": layer, "head": head, "method": method, "function": function,
                             "score": round(float(v["score"][layer, head]), 6),
                             "ci_low": round(float(v["ci_low"][layer, head]), 6),
                             "ci_high": round(float(v["ci_high"][layer, head]), 6),
                             "rank": order[(layer, head)]})
    return rows


def write_outputs(result: LocateResult, run_dir: Path, model_name: str) -> None:
    from .plots.headmap import headmap_html

    rows = score_rows(result)
    with open(run_dir / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    heads = {"model": model_name, "function": result.config.function, "select_by": result.config.select_by,
             "k": len(result.selected), "k_rule": result.k_rule,
             "heads": [{"layer": l, "head": h,
                        "score": round(float(result.scores[(result.config.select_by, result.config.function)]
                                             ["score"][l, h]), 6)} for l, h in result.selected],
             "summary": result.summary, "check": result.check, "skipped": result.skipped,
             "geometry": result.geometry}
    (run_dir / "heads.json").write_text(json.dumps(heads, indent=1) + "\n")
    (run_dir / "headmap.html").write_text(headmap_html(result, title=f"{model_name}: heads by function"))


def report_lines(result: LocateResult) -> list[str]:
    cfg = result.config
    score = result.scores[(cfg.select_by, cfg.function)]
    lines = [f"\nselected {len(result.selected)} heads for {cfg.function} by {cfg.select_by} ({result.k_rule}):"]
    for l, h in result.selected:
        lines.append(f"  L{l}H{h:<3} score {float(score['score'][l, h]):8.3f}  "
                     f"[{float(score['ci_low'][l, h]):.3f}, {float(score['ci_high'][l, h]):.3f}]")
    s80 = result.summary.get("sparsity_80", {}).get(f"{cfg.select_by}|{cfg.function}")
    if s80 is not None:
        lines.append(f"sparsity: {s80:.1%} of heads carry 80% of the {cfg.select_by} effect")
    lines.append(f"\nablation check ({result.check['mode']}; k={result.check['k']}; "
                 f"{len(result.check['random_sets'])} random draws):")
    lines.append(f"  {'function':<30} {'unablated':>10} {'selected':>10} {'random':>10}")
    for f, r in result.check["functions"].items():
        mark = " <- target" if f == cfg.function else ""
        lines.append(f"  {f:<30} {r['unablated']['accuracy']:>10.3f} {r['selected_ablated']['accuracy']:>10.3f} "
                     f"{r['random_ablated']['accuracy']:>10.3f}{mark}")
    if result.skipped:
        lines.append("skipped: " + "; ".join(f"{m}: {why}" for m, why in result.skipped.items()))
    return lines
