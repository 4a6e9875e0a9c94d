"""The intervene job: head-selective AdaptVis and the baselines, tuned on validation, reported on test.

Methods (each a small frozen intervention value, ``vlmheads.interventions``):

    none            the unmodified model
    scalingvis      ScalingVis(alpha), every layer and head
    adaptvis        AdaptVis(alpha_low, alpha_high, threshold), every layer and head
    head_adaptvis   AdaptVis on the located heads only (the suite's method)
    emphasize       Emphasize(located heads, gamma)
    attenuate       Emphasize(located heads, gamma < 1): the located heads turned down
    head_scalingvis ScalingVis(alpha) on the located heads only, alpha below and above 1
    ablate          Ablate(located heads) (zero)
    visionboost     VisionBoost(alpha, layout-probe directions fitted on the validation split)
    steer           Steer(alpha, located heads' correct-vs-wrong directions fitted on the validation
                    split); skipped, with the reason, when the model makes too few errors there

Hyper-parameters (alpha, threshold, gamma) are the published defaults, or with ``sweep`` chosen on
the protocol's validation split (AdaptVis's 20% sample) by accuracy (ties: the earlier grid point,
so the default wins a tie); results are on the test split (the other 80%), with bootstrap 95%
intervals, per relation and per prior group (organism scenes: consistent / violating / neutral).
Accuracy is option-argmax at the answer position (no generation).

Stages: with ``stages_dir`` each dataset's fitted directions and each (dataset, method) result are saved
as they finish, and a stage saved there is loaded instead of run; ``--resume`` continues an interrupted
run that way and ends with the results an uninterrupted run would have written.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Callable, Sequence

import torch

from .controls import CONTROLS, Chosen, Skip, random_head_sets  # noqa: F401 (random_head_sets: re-exported)
from .data import load
from .data.option_order import SCHEMES
from .interventions import (Ablate, AdaptVis, Emphasize, Intervention, ScalingVis, Steer, Suppress, VisionBoost,
                            adaptvis_logits, apply)
from .methods.batches import metric, option_batches
from .methods.directions import layout_directions, steering_directions
from .methods.selection import accuracy_summary
from .models.loading import LoadedModel
from .registry import Registry
from .samples import entries, outcomes, record, write_samples
from . import parallel
from .runs import ModelOptions, StageStore, slug, write_csv, write_json, write_text_atomic
from .errors import InputError, MissingInput


@dataclass(frozen=True)
class InterveneMethod:
    """One intervene method: its grid (the first point is the published default) and the interventions
    it applies for one grid point. ``fitted`` holds what was fitted on the validation split."""

    build: Callable[[dict, tuple, dict], list[Intervention]]  # (params, heads, fitted) -> interventions
    grid: tuple[dict, ...] = ({},)
    uses_heads: bool = False  # acts on the located heads
    tunes_k: bool = False  # with --sweep, k (the top-k located heads) is tuned too
    fit: str | None = None  # "steering" | "layout": directions fitted on the validation split
    shared_prefix: bool = False  # AdaptVis: confidence and scaled pass share the prompt's KV cache
    scales_attention: bool = False  # scales image-key attention logits by alpha (the random-attention control)
    default: bool = True  # run when no --method is given (opt-in methods are named with --method)


INTERVENE_METHODS: Registry[InterveneMethod] = Registry("intervene method")
_ADAPTVIS_GRID = tuple([{"alpha_low": 0.5, "alpha_high": 1.5, "threshold": 0.4}] + [
    {"alpha_low": lo, "alpha_high": hi, "threshold": t}
    for lo, hi, t in product((0.5, 0.8), (1.2, 1.5, 2.0), (0.4, 0.6, 0.8, 0.95)) if (lo, hi, t) != (0.5, 1.5, 0.4)])
# the first point of each grid is the published default (AdaptVis's Controlled_A settings; gamma 2)
INTERVENE_METHODS.register("none", InterveneMethod(lambda p, heads, fitted: []))
INTERVENE_METHODS.register("scalingvis", InterveneMethod(
    lambda p, heads, fitted: [ScalingVis(**p)], grid=tuple({"alpha": a} for a in (0.8, 0.5, 1.2, 1.5, 2.0)),
    scales_attention=True))
INTERVENE_METHODS.register("adaptvis", InterveneMethod(
    lambda p, heads, fitted: [AdaptVis(**p)], grid=_ADAPTVIS_GRID, shared_prefix=True, scales_attention=True))
INTERVENE_METHODS.register("head_adaptvis", InterveneMethod(
    lambda p, heads, fitted: [AdaptVis(heads=heads, **p)], grid=_ADAPTVIS_GRID, uses_heads=True, tunes_k=True,
    shared_prefix=True, scales_attention=True))
INTERVENE_METHODS.register("emphasize", InterveneMethod(
    lambda p, heads, fitted: [Emphasize(heads, **p)], grid=tuple({"gamma": g} for g in (2.0, 1.5, 3.0)),
    uses_heads=True, tunes_k=True))
INTERVENE_METHODS.register("attenuate", InterveneMethod(  # the located heads turned down, not up
    lambda p, heads, fitted: [Emphasize(heads, **p)], grid=tuple({"gamma": g} for g in (0.5, 0.25, 0.75)),
    uses_heads=True, tunes_k=True))
INTERVENE_METHODS.register("head_scalingvis", InterveneMethod(  # ScalingVis on the located heads only
    lambda p, heads, fitted: [ScalingVis(heads=heads, **p)],
    grid=tuple({"alpha": a} for a in (0.8, 0.5, 1.2, 1.5, 2.0)), uses_heads=True, tunes_k=True, scales_attention=True))
INTERVENE_METHODS.register("ablate", InterveneMethod(  # the diagnostic: keeps its k
    lambda p, heads, fitted: [Ablate(heads)], uses_heads=True))
INTERVENE_METHODS.register("visionboost", InterveneMethod(
    lambda p, heads, fitted: [VisionBoost(directions=fitted["layout"], **p)],
    grid=tuple({"alpha": a} for a in (1.0, 0.5, 2.0, 4.0)), fit="layout"))
INTERVENE_METHODS.register("steer", InterveneMethod(  # ITI's usual strength first
    lambda p, heads, fitted: [Steer(directions=fitted["steering"], **p)],
    grid=tuple({"alpha": a} for a in (15.0, 5.0, 10.0)), uses_heads=True, fit="steering"))
INTERVENE_METHODS.register("suppress", InterveneMethod(  # the located (prior) heads removed at the answer position
    lambda p, heads, fitted: [Suppress(heads, **p)], grid=tuple({"factor": f} for f in (0.0, 0.25, 0.5)),
    uses_heads=True, tunes_k=True, default=False))  # opt-in: the curated runs predate it
METHODS = tuple(name for name, m in INTERVENE_METHODS.items() if m.default)
GRIDS = {name: list(m.grid) for name, m in INTERVENE_METHODS.items()}
HEAD_METHODS = tuple(name for name, m in INTERVENE_METHODS.items() if m.uses_heads)


@dataclass(frozen=True)
class InterveneConfig(ModelOptions):
    model: str = "organism"
    datasets: tuple[str, ...] = ("organism:controlled", "organism:vsr")
    data_root: str | None = None
    methods: tuple[str, ...] = METHODS
    heads: tuple[tuple[int, int], ...] = ()  # the head set of head methods without their own k
    heads_from: str | None = None
    allow_foreign_heads: bool = False  # --allow-foreign-heads: heads located on another model or function
    k: int | None = None
    k_by_method: tuple[tuple[str, int], ...] = ()  # (method, k) from --emphasize top-K / --ablate top-K
    sweep: bool = False  # tune on the validation split; else the published defaults (first grid point)
    ranking: tuple[tuple[int, int], ...] = ()  # every head, best first (from the locate run): k per method, tuning
    k_grid: tuple[int, ...] = (1, 2, 3, 5, 8)
    batch_size: int = 64
    n: int | None = None  # at most this many examples of each split (None: the protocol's whole splits)
    random_heads: int = 0  # --random-heads N: each head method also run on N draws of as many random heads
    random_attention: int = 0  # --random-attention N: each attention-scaling method beside N random scalings
    blind: bool = False  # --blind: the unmodified model on blank images
    option_orders: str | None = None  # --option-orders circular|all: each method on every order of the options

    def __post_init__(self) -> None:
        if not self.methods:
            raise InputError(f"no methods; choose from {', '.join(INTERVENE_METHODS)}")
        for m in self.methods:
            INTERVENE_METHODS[m]
        if not self.datasets:
            raise InputError("no datasets")
        for name, value in (("--random-heads", self.random_heads), ("--random-attention", self.random_attention)):
            if value < 0:
                raise InputError(f"{name} must be 0 or more, got {value}")
        if self.option_orders is not None and self.option_orders not in SCHEMES:
            raise InputError(f"--option-orders is {' or '.join(SCHEMES)}, got {self.option_orders!r}")
        if self.blind and "none" not in self.methods:
            raise InputError("--blind reports the unmodified model on blank images: add --method none")
        for name, value in (("--batch-size", self.batch_size), ("bootstrap", self.bootstrap), ("--n", self.n or 1)):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        for method, k in self.k_by_method:
            INTERVENE_METHODS[method]
            if k < 1 or (self.ranking and k > len(self.ranking)):
                raise InputError(f"top-{k} for {method} asks for more heads than the model has ({len(self.ranking)})"
                                 if k >= 1 else f"top-K needs K >= 1, got {k}")

    def heads_for(self, method: str) -> tuple:
        own = dict(self.k_by_method).get(method)
        return tuple(self.ranking[:own]) if own is not None and self.ranking else tuple(self.heads)

    def to_dict(self) -> dict:
        return asdict(self)


def _logits(loaded: LoadedModel, batch, method: InterveneMethod, ivs: list[Intervention]) -> torch.Tensor:
    if method.shared_prefix:
        (iv,) = ivs
        return adaptvis_logits(loaded, batch.inputs, iv)[0]
    with torch.no_grad(), apply(loaded, ivs, inputs=batch.inputs):
        return loaded.last_logits(batch.inputs)


def _outcomes(loaded: LoadedModel, batches, method: InterveneMethod, ivs: list[Intervention]) -> dict:
    """Per test example: the predicted option, the probability of the correct option among the options, and
    correctness: ``{"prediction", "p_correct", "correct"}``, each ``[N]``."""
    return outcomes(batches, lambda b: _logits(loaded, b, method, ivs).float().gather(1, b.option_ids))


def _correct(loaded: LoadedModel, batches, method: InterveneMethod, ivs: list[Intervention]) -> torch.Tensor:
    return torch.cat(parallel.map_batches(
        lambda b: metric(_logits(loaded, b, method, ivs), b.option_ids, b.answer, "accuracy").cpu(), batches,
        "validation accuracy"))


@dataclass
class InterveneResult:
    rows: list = field(default_factory=list)  # one per (dataset, method, group)
    chosen: dict = field(default_factory=dict)  # (dataset, method) -> params
    applied: dict = field(default_factory=dict)  # dataset -> method -> [intervention JSON]
    probe_accuracy: dict = field(default_factory=dict)  # dataset -> VisionBoost layout probe accuracy
    datasets: dict = field(default_factory=dict)  # dataset -> {"val": identity, "test": identity}
    skipped: dict = field(default_factory=dict)  # "dataset|method" -> reason
    controls: dict = field(default_factory=dict)  # dataset -> control row ("METHOD (control)") -> what it drew
    samples: dict = field(default_factory=dict)  # (dataset, example id) -> its record in samples.jsonl
    timings: dict = field(default_factory=dict)
    resumed: list = field(default_factory=list)  # stages loaded from a previous run's stages_dir


def load_datasets(config: InterveneConfig) -> dict:
    """``{name: (validation split, test split)}`` (no model needed: the command calls this before loading
    one, so a bad dataset or root fails before any weights are read)."""
    kwargs = {"root": config.data_root} if config.data_root else {}
    kwargs["rendering"] = config.scene_rendering
    if config.n is not None:  # a smoke run: the first n of each split
        kwargs["limit"] = config.n
    return {name: (load(name, split="val", seed=config.seed, **kwargs), load(name, split="test", seed=config.seed,
                                                                          **kwargs)) for name in config.datasets}


def run_intervene(loaded: LoadedModel, config: InterveneConfig, log: Callable[[str], None] = print,
                  data: dict | None = None, progress: bool = False, stages_dir: Path | None = None) -> InterveneResult:
    needs_heads = [m for m in config.methods if INTERVENE_METHODS[m].uses_heads]
    if needs_heads and not any(config.heads_for(m) for m in needs_heads):
        raise InputError(f"{', '.join(needs_heads)} need located heads: pass --heads-from a locate run")
    for layer, head in set(config.heads) | set(config.ranking):
        loaded.geometry.check_head(layer, head)
    from tqdm.auto import tqdm

    result = InterveneResult()
    data = data if data is not None else load_datasets(config)
    bar = tqdm(total=len(config.datasets) * len(config.methods), desc="intervene", unit="method",
               disable=not (progress and parallel.world().main), dynamic_ncols=True)
    try:
        for name in config.datasets:
            _run_dataset(loaded, config, name, data[name], result, log, bar, stages_dir)
    finally:
        bar.close()
    if result.resumed:
        log(f"resumed: {len(result.resumed)} stage(s) loaded from {stages_dir}")
    return result


def _run_dataset(loaded: LoadedModel, config: InterveneConfig, name: str, splits, result: InterveneResult,
                 log: Callable[[str], None], bar, stages_dir: Path | None = None) -> None:
    """Fit what the methods need on the validation split, tune, and score every method on the test split;
    each of these stages is saved to (or, when a previous run saved it, loaded from) ``stages_dir``."""
    t0 = time.time()
    val, test = splits
    result.datasets[name] = {"val": val.identity(), "test": test.identity()}
    val_b = option_batches(loaded, list(val), config.batch_size)
    test_b = option_batches(loaded, list(test), config.batch_size)

    store = StageStore(stages_dir, config.to_dict(), log)  # stages of another config: recomputed
    fit, _ = store(f"{slug(name)}--fit", lambda: _fit(loaded, config, list(val), name, log), label=f"{name}/fit")
    fitted = fit["fitted"]
    if "probe_accuracy" in fit:
        result.probe_accuracy[name] = fit["probe_accuracy"]
    result.skipped.update({f"{name}|{m}": why for m, why in fit["skipped"].items()})
    for method_name in config.methods:
        bar.set_postfix_str(f"{name} / {method_name}")
        method = INTERVENE_METHODS[method_name]
        if method.fit and method.fit not in fitted:
            bar.update()
            continue
        done, was_loaded = store(f"{slug(name)}--{method_name}",
                                 lambda: _score_method(loaded, config, name, method_name, val_b, test_b, fitted),
                                 label=f"{name}/{method_name}")
        result.chosen[(name, method_name)] = done["chosen"]
        result.applied.setdefault(name, {})[method_name] = done["applied"]
        result.rows += done["rows"]
        for e, outcome in zip((e for b in test_b for e in b.examples), done["samples"]):
            line = result.samples.setdefault((name, e.id), record(e, dataset=name))
            line["methods"][method_name] = outcome
        log(f"{name:<22} {method_name:<16} test {done['accuracy']:.3f}  params {done['chosen']}"
            + ("  (resumed)" if was_loaded else ""))
        for row, control in done.get("controls", {}).items():
            result.controls.setdefault(name, {})[row] = control["detail"]
            for e, outcome in zip((e for b in test_b for e in b.examples), control["samples"]):
                result.samples[(name, e.id)]["methods"][row] = outcome
            log(f"{name:<22} {row:<32} test {control['accuracy']:.3f}")
        for row, why in done.get("skipped", {}).items():
            result.skipped[f"{name}|{row}"] = why
            log(f"{name:<22} {row:<32} skipped: {why}")
        bar.update()
    result.resumed += store.resumed
    result.timings[name] = time.time() - t0


def _score_method(loaded: LoadedModel, config: InterveneConfig, name: str, method_name: str, val_b, test_b,
                  fitted: dict) -> dict:
    """One method on one dataset: tuned on validation, scored on test (``results.csv`` rows and what it applied)."""
    method = INTERVENE_METHODS[method_name]
    params, heads, val_acc = _tune(loaded, config, method_name, val_b, fitted)
    chosen = {**params, "k": len(heads)} if method.uses_heads else params
    ivs = method.build(params, heads, fitted)
    outcome = _outcomes(loaded, test_b, method, ivs)
    correct = outcome["correct"]
    examples = [e for b in test_b for e in b.examples]
    rows = _rows(config, name, method_name, correct, examples, val_acc, chosen)
    done = {"chosen": chosen, "applied": [iv.to_json() for iv in ivs], "rows": rows, "accuracy": float(correct.mean()),
            "samples": entries(examples, outcome)}
    chosen_method = Chosen(loaded, config, method_name, method, params, heads, fitted, test_b, correct,
                           score=lambda batches, m, ivs: _outcomes(loaded, batches, m, ivs),
                           plain=INTERVENE_METHODS["none"])
    for control in CONTROLS.values():
        if not (control.wanted(config) and control.applies(chosen_method)):
            continue
        row = f"{method_name} ({control.label})"
        try:
            out = control.run(chosen_method)
        except Skip as why:
            done.setdefault("skipped", {})[row] = str(why)
            continue
        done["rows"] += _rows(config, name, row, out["correct"], examples, float("nan"), {**chosen, **out["params"]})
        done.setdefault("controls", {})[row] = {
            "detail": out["detail"], "accuracy": float(out["correct"].float().mean()),
            "samples": out.get("samples") or [{"correct": round(float(x), 6)} for x in out["correct"]]}
    return done


def _fit(loaded: LoadedModel, config: InterveneConfig, val: list, name: str, log: Callable[[str], None]) -> dict:
    """Directions the requested methods need, fitted on the validation split (a method whose fit is
    impossible, e.g. steering on a model that makes no errors, is skipped with the reason):
    ``{"fitted": {...}, "skipped": {method: reason}, "probe_accuracy": float (with layout directions)}``."""
    out: dict = {"fitted": {}, "skipped": {}}
    fits = {INTERVENE_METHODS[m].fit for m in config.methods} - {None}
    if "layout" in fits:
        out["fitted"]["layout"], probe_acc = layout_directions(loaded, val, seed=config.seed)
        out["probe_accuracy"] = round(probe_acc, 4)
        log(f"{name:<22} layout probe on image tokens (validation split): training accuracy {probe_acc:.3f}")
    if "steering" in fits:
        try:
            out["fitted"]["steering"] = steering_directions(loaded, val, config.heads_for("steer"))
        except ValueError as err:
            out["skipped"]["steer"] = str(err)
            log(f"{name:<22} steer          skipped: {err}")
    return out


def _tune(loaded: LoadedModel, config: InterveneConfig, method_name: str, val_b, fitted: dict):
    """``(params, heads, validation accuracy)``: the published default, or with ``sweep`` the best grid point
    on validation (ties: the earlier point, so the default wins a tie). Head-selective methods that tune k
    try the top-k located heads for k in the k grid too, the given k first."""
    method = INTERVENE_METHODS[method_name]
    heads = config.heads_for(method_name)
    grid = list(method.grid) if config.sweep else list(method.grid[:1])
    ks = [len(heads)]
    if config.sweep and config.ranking and method.tunes_k:
        ks += [k for k in config.k_grid if k != len(heads) and k <= len(config.ranking)]
    candidates = [(k, p) for k in ks for p in grid]
    if len(candidates) == 1:
        return candidates[0][1], heads, float("nan")
    scored = []
    for i, (k, p) in enumerate(candidates):
        chosen = tuple(config.ranking[:k]) if config.ranking else heads
        scored.append((float(_correct(loaded, val_b, method, method.build(p, chosen, fitted)).mean()), -i, k, p))
    best_acc, _, k_best, params = max(scored, key=lambda s: (s[0], s[1]))
    use_heads = tuple(config.ranking[:k_best]) if config.ranking and k_best != len(heads) else heads
    return params, use_heads, best_acc


def _rows(config: InterveneConfig, name: str, method_name: str, correct: torch.Tensor, examples, val_acc: float,
          chosen: dict) -> list[dict]:
    """results.csv rows: all examples, per relation and per prior group, with bootstrap intervals."""
    groups = {"all": list(range(len(examples)))}
    for i, e in enumerate(examples):
        groups.setdefault(f"relation={e.relation}", []).append(i)
        if e.meta.get("prior"):
            groups.setdefault(f"prior={e.meta['prior']}", []).append(i)
    rows = []
    for group, idx in groups.items():
        summary = accuracy_summary(correct[idx], n_boot=config.bootstrap, seed=config.seed)
        rows.append({"dataset": name, "method": method_name, "group": group, "n": summary["n"],
                     "accuracy": summary["accuracy"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
                     "val_accuracy": round(val_acc, 4) if val_acc == val_acc else "",
                     "params": json.dumps(chosen, sort_keys=True)})
    return rows


def write_outputs(result: InterveneResult, run_dir: Path) -> None:
    """results.csv, interventions.json (exactly what was applied, re-loadable with
    ``vlmheads.interventions.from_json``), samples.jsonl (one test example a line: its id, a digest of its
    prompt, options and pixels, the answer, and per method the prediction, the correct option's probability
    among the options and correctness) and the offline chart comparison.html, each written atomically."""
    import plotly.graph_objects as go

    write_csv(run_dir / "results.csv", result.rows)
    write_json(run_dir / "interventions.json", result.applied)
    write_samples(run_dir / "samples.jsonl", result.samples.values())
    fig = go.Figure()
    rows = [r for r in result.rows if r["group"] == "all"]
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        control = method.endswith(")")  # "METHOD (control)": hatched, grouped with its method in the legend
        fig.add_trace(go.Bar(name=method, x=[r["dataset"] for r in rs], y=[r["accuracy"] for r in rs],
                             legendgroup=method.split(" (")[0], marker_pattern_shape="/" if control else "",
                             error_y={"type": "data", "symmetric": False,
                                      "array": [r["ci_high"] - r["accuracy"] for r in rs],
                                      "arrayminus": [r["accuracy"] - r["ci_low"] for r in rs]},
                             hovertext=[f"params {r['params']}<br>n {r['n']}" for r in rs]))
    fig.update_layout(barmode="group", title="test accuracy (95% bootstrap CI), tuned on validation; hatched: "
                                             "controls (random heads / attention, blind, option orders)",
                      yaxis={"range": [0, 1], "title": "accuracy"}, template="plotly_white")
    write_text_atomic(run_dir / "comparison.html", fig.to_html(include_plotlyjs=True, full_html=True))


def table_lines(result: InterveneResult, groups: Sequence[str] = ("all",)) -> list[str]:
    datasets = list(dict.fromkeys(r["dataset"] for r in result.rows))
    methods = list(dict.fromkeys(r["method"] for r in result.rows))
    width = max([16, *(len(m) + 1 for m in methods)])
    lines = [f"{'method':<{width}}" + "".join(f"{d:>26}" for d in datasets)]
    for group in groups:
        if group != "all":
            lines.append(f"[{group}]")
        for m in methods:
            cells = []
            for d in datasets:
                r = next((r for r in result.rows if r["dataset"] == d and r["method"] == m and r["group"] == group), None)
                cells.append(f"{r['accuracy']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]" if r else "-")
            lines.append(f"{m:<{width}}" + "".join(f"{c:>26}" for c in cells))
    return lines


def results_frame(run_dir: str | Path):
    """An intervene run's results.csv as a pandas DataFrame, one row per (dataset, method, group): n, accuracy
    and its interval, the validation accuracy of the tuned point (NaN without ``--sweep``) and ``params`` as
    dicts; control rows are named ``METHOD (control)``."""
    import pandas as pd

    path = Path(run_dir) / "results.csv"
    if not path.is_file():
        raise MissingInput(f"{path}: no results.csv; pass a finished intervene run directory")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    frame["params"] = frame["params"].map(json.loads)
    return frame