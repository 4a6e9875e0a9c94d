"""Static figures (matplotlib), each a pure function of a saved run: what the notebooks show inline.

    head_scores_figure(HeadScores.load(run))        layer x head map of one method's scores, selection outlined
    ablation_check_figure(HeadScores.load(run))     accuracy per function: unablated / selected / random heads
    intervene_figure(rows of results.csv)            test accuracy per method and dataset, with intervals
    organism_figure(rows of accuracy.csv)            organism accuracy per function and prior group

matplotlib is imported when a figure is drawn (``pip install vlmheads[notebooks]``); the interactive
Plotly maps (``headmap.py``) need only plotly.
"""

from __future__ import annotations

from typing import Sequence

from ..scores import HeadScores


def _plt():
    import matplotlib.pyplot as plt  # headless runs get the Agg backend by themselves

    return plt


def head_scores_figure(scores: HeadScores, method: str | None = None, function: str | None = None):
    plt = _plt()
    method, function = method or scores.select_by, function or scores.function
    grid = scores.score(method, function).numpy()  # [L, H]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * grid.shape[1], 1.2 + 0.45 * grid.shape[0]))
    import numpy as np

    bound = float(np.nanmax(np.abs(grid))) if not np.isnan(grid).all() else 1.0  # NaN: heads not computed
    bound = bound or 1.0
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for layer, head in scores.selected:
        ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    ax.set_xticks(range(grid.shape[1]), [f"H{h}" for h in range(grid.shape[1])])
    ax.set_yticks(range(grid.shape[0]), [f"L{l}" for l in range(grid.shape[0])])
    ax.set_title(f"{method} scores for {function}\n(outlined: the {len(scores.selected)} selected heads)", fontsize=10)
    fig.colorbar(image, ax=ax, label=method)
    fig.tight_layout()
    return fig


def _bars(ax, groups: Sequence[str], series: dict[str, list[tuple[float, float, float]]]):
    """Grouped bars with asymmetric error bars; ``series``: name -> [(value, low, high)] per group."""
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [v for v, _, _ in values]
        err = [[v - lo for v, lo, _ in values], [hi - v for v, _, hi in values]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="lower right")


def ablation_check_figure(scores: HeadScores):
    plt = _plt()
    functions = list(scores.check["functions"])
    series = {}
    for key, label in (("unablated", "unablated"), ("selected_ablated", "selected heads ablated"),
                       ("random_ablated", "random heads ablated")):
        series[label] = [(r[key]["accuracy"], r[key]["ci_low"], r[key]["ci_high"])
                         for r in (scores.check["functions"][f] for f in functions)]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _bars(ax, [f.replace("_", " ") for f in functions], series)
    ax.set_title(f"ablation check: {scores.check['k']} selected vs {scores.check['k']} random heads "
                 f"({scores.check['mode']})", fontsize=10)
    fig.tight_layout()
    return fig


_MISSING = (float("nan"), float("nan"), float("nan"))  # a method a run skipped on one dataset: no bar


def intervene_figure(rows: Sequence[dict], group: str = "all"):
    plt = _plt()
    rows = [r for r in rows if r["group"] == group]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    series = {d: [next(((float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"])) for r in rows
                        if r["dataset"] == d and r["method"] == m), _MISSING) for m in methods] for d in datasets}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    _bars(ax, methods, series)
    ax.set_title(f"test accuracy ({group}), 95% bootstrap intervals; parameters tuned on validation", fontsize=10)
    fig.tight_layout()
    return fig


def organism_figure(rows: Sequence[dict]):
    plt = _plt()
    functions = list(dict.fromkeys(r["function"] for r in rows))
    groups = [g for g in dict.fromkeys(r["group"] for r in rows) if g != "all"]
    series = {g: [next((float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"])) for r in rows
                       if r["function"] == f and r["group"] == g) for f in functions] for g in groups}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _bars(ax, [f.replace("_", " ") for f in functions], series)
    ax.set_title("organism accuracy on held-out controlled scenes, by textual prior (95% CI)", fontsize=10)
    fig.tight_layout()
    return fig
