"""The locate job: score every head for one cognitive function, select the few that carry it, check.

Steps (each method is optional; ``LocateConfig.methods``):

1. data: examples of every function the dataset has (the organism's four by default), and for the
   organism, counterfactual pairs per function (same question, re-rendered image, other answer);
2. ablation (causal): per-head effect on the metric, per function (for specificity);
3. activation patching, noising and denoising (causal, organism pairs), per function;
4. attribution patching (gradient x difference), compared with exact noising patching;
5. probing (descriptive): held-out balanced accuracy of a per-head function probe;
6. attention to the image (descriptive): share and spatial entropy at the answer position;
   (opt-in) redundancy-aware attribution: random head sets ablated together, a linear fit per head
   (finds heads that back each other up, which single-head ablation misses);
   (opt-in) direct logit attribution: what each head writes straight into the answer (one pass per
   batch; ``methods.logit_attribution``); with it the located heads are labelled writing or routing;
7. selection: top-k by the chosen method's score for the target function (elbow by default);
   sparsity, specificity; the ablation check (selected vs k random heads, all functions).

Results come back as a ``HeadScores`` (``vlmheads.scores``); ``write_outputs`` saves it (scores.csv,
heads.json) and draws the head map from it into a run directory. Methods are looked up in
``LOCATE_METHODS``: adding one = its module in ``vlmheads.methods`` + one ``register`` entry here.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import parallel
from .data import canonical_function, load, organism_pairs
from .interventions import Ablate, Suppress
from .methods.attention import image_attention
from .methods.attribution import attribution_effects
from .methods.batches import METRICS, option_batches
from .methods.checks import ablation_check
from .methods.effects import ABLATIONS, ablation_effects, head_means, pair_batches, patching_effects
from .methods.logit_attribution import dla_effects, head_roles
from .methods.prior import from_batches, net_interval, prior_effects, prior_split
from .methods.probing import probe_scores
from .methods.redundancy import redundancy_scores
from .methods.screen import screened_ablation
from .methods.selection import bootstrap_ci, elbow_k, measured, ranked, sparsity, specificity, top_k
from .methods.sweep import LayerSweep
from .models.loading import LoadedModel
from .registry import Registry
from .runs import ModelOptions, StageStore
from .samples import entries, record, under, write_samples
from .scores import HeadScores
from .errors import InputError

CAUSAL = ("ablation", "noising", "denoising")
SCREENS = ("auto", "attribution", "off")
SCREEN_ABOVE = 256  # heads: above this, "auto" screens (all-head exact ablation costs ~n_heads / 2 passes)


@dataclass(frozen=True)
class LocateMethod:
    """One locate method: what it scores and how. ``run(state, function)`` is one stage: it scores every
    head for one function (``state.put``), and is saved as soon as it finishes; ``finish(state)`` runs
    once after all of its stages (cheap summaries only)."""

    run: Callable[["LocateState", str], None]
    scores: dict[str, str]  # score names it writes (scores.csv's method column) -> kind (vlmheads.scores.KINDS)
    selectable: tuple[str, ...] = ()  # of those, the ones ``select_by`` may name
    needs_pairs: bool = False  # counterfactual pairs
    finish: Callable[["LocateState"], None] | None = None

    def functions(self, state: "LocateState") -> list[str]:
        return sorted(state.pairs) if self.needs_pairs else state.functions


LOCATE_METHODS: Registry[LocateMethod] = Registry("locate method")


@dataclass(frozen=True)
class LocateConfig(ModelOptions):
    function: str = "spatial_perception"
    model: str = "organism"
    dataset: str = "organism:decomposed"
    data_root: str | None = None
    n: int = 64  # examples per function
    methods: tuple[str, ...] = ("ablation", "patching", "attribution", "probe", "attention")  # DEFAULT_METHODS
    ablation: str = "zero"
    metric: str = "logit_diff"
    select_by: str = "ablation"  # ablation | noising | denoising | attribution | probe
    top_k: int | None = None  # None: the elbow of the sorted scores
    max_auto_k: int | None = None  # cap for the elbow (default: 10% of heads, at least 1)
    random_draws: int = 5
    screen: str = "auto"  # ablation by screen + verify: "auto" (when the model has > SCREEN_ABOVE heads), "attribution", "off"
    verify: int = 40  # heads the exact ablation verifies after the screen
    batch_size: int = 32

    def __post_init__(self) -> None:
        """Every check that needs no model: bad input fails here, before anything is loaded or scored."""
        object.__setattr__(self, "function", canonical_function(self.function))
        if not self.methods:
            raise InputError(f"--methods is empty; choose from {', '.join(LOCATE_METHODS)}")
        for m in self.methods:
            LOCATE_METHODS[m]  # unknown names fail with the list
        if self.ablation not in ABLATIONS:
            raise InputError(f"unknown ablation {self.ablation!r}; use one of {', '.join(ABLATIONS)}")
        if self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}; use one of {', '.join(METRICS)}")
        selectable = {s: m for m, method in LOCATE_METHODS.items() for s in method.selectable}
        if self.select_by not in selectable:
            raise InputError(f"unknown --select-by {self.select_by!r}; choose from {', '.join(selectable)}")
        if selectable[self.select_by] not in self.methods:
            raise InputError(f"--select-by {self.select_by} needs the {selectable[self.select_by]} method: add it to "
                             f"--methods (now {','.join(self.methods)})")
        for name, value, low in (("--n", self.n, 1), ("--random-draws", self.random_draws, 1),
                                 ("--batch-size", self.batch_size, 1), ("--bootstrap", self.bootstrap, 10)):
            if value < low:
                raise InputError(f"{name} must be at least {low}, got {value}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {self.top_k}")
        if self.screen not in SCREENS:
            raise InputError(f"unknown --screen {self.screen!r}; use one of {', '.join(SCREENS)}")
        if self.verify < 1:
            raise InputError(f"--verify must be at least 1, got {self.verify}")
        if self.screen == "attribution" and self.top_k is not None and self.top_k > self.verify:
            raise InputError(f"--top-k {self.top_k} is more than the {self.verify} heads --verify checks exactly; "
                             f"raise --verify to at least {self.top_k}")
        if self.max_auto_k is not None and self.max_auto_k < 1:
            raise InputError(f"max_auto_k must be at least 1, got {self.max_auto_k}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LocateState:
    """What the methods of one run share: the model, its batches and pairs, and the result being filled.

    Every stage (one method for one function) is saved to ``stages`` as it finishes (temporary file,
    then rename, with its checksum and the config's fingerprint beside it); a stage already saved there is
    loaded instead of run when it checks out, and recomputed (with a warning naming it) when it does not,
    which is how ``--resume`` continues an interrupted run with the same scores it would have had."""

    loaded: LoadedModel
    config: LocateConfig
    batches: dict  # function -> [OptionBatch]
    pairs: dict  # function -> (clean batches, corrupt batches)
    result: HeadScores
    log: Callable[[str], None]
    stages: StageStore  # where finished stages are saved (and loaded from on --resume)
    means: torch.Tensor | None = None
    cache: dict = field(default_factory=dict)  # what several stages of one method share (probe features)
    screening: bool = False  # ablation by screen + verify
    _writes: dict | None = None

    @property
    def functions(self) -> list[str]:
        return sorted(self.batches)

    def put(self, method: str, function: str, per_example: torch.Tensor, scale: float = 1.0) -> None:
        """Mean over examples of ``per_example [N, L, H]`` with its bootstrap interval, as ``method`` scores."""
        lo, hi = bootstrap_ci(per_example, n_boot=self.config.bootstrap, seed=self.config.seed)
        self.put_scores(method, function, {"score": per_example.float().mean(0) / scale,
                                           "ci_low": lo / scale, "ci_high": hi / scale})

    def put_descriptive(self, method: str, function: str, score: torch.Tensor) -> None:
        """One measurement per head ``[L, H]`` and no interval (NaN; scores.csv leaves it empty)."""
        nan = torch.full_like(score, float("nan"))
        self.put_scores(method, function, {"score": score, "ci_low": nan, "ci_high": nan})

    def note(self, key: str, function: str | None, value) -> None:
        """A summary entry (``summary[key][function]``, or ``summary[key]`` without a function)."""
        if function is None:
            self.result.summary[key] = value
        else:
            self.result.summary.setdefault(key, {})[function] = value
        if self._writes is not None:
            self._writes["summary"].append((key, function, value))

    def put_scores(self, method: str, function: str, value: dict) -> None:
        """Scores with their own intervals ``{"score", "ci_low", "ci_high"}``, each ``[L, H]``; their kind is the
        one the method that writes ``method`` declares (``LocateMethod.scores``)."""
        value = {**value, "kind": score_kind(method)}
        self.result.scores[(method, function)] = value
        if self._writes is not None:
            self._writes["scores"][(method, function)] = value

    def stage(self, name: str, function: str, run: Callable[[], None]) -> bool:
        """Run one stage, or load it if a previous run saved it and it checks out (``runs.StageStore``);
        True if loaded."""
        def compute() -> dict:
            self._writes = {"scores": {}, "summary": []}
            try:
                run()
                return self._writes
            finally:
                self._writes = None

        saved, loaded = self.stages(f"{name}--{function}", compute, label=f"{name}/{function}")
        if loaded:
            self.result.scores.update(saved["scores"])
            for key, fn, value in saved["summary"]:
                self.note(key, fn, value)
        return loaded


def examples_by_function(config: LocateConfig) -> dict[str, list]:
    """The run's examples per function (no model needed: the commands call this before loading one, so a
    bad dataset, root or function fails before any weights are read)."""
    if config.dataset.strip().lower() == "organism:decomposed":
        # n fresh controlled examples per function (the registry's fixed 400 would cap n at 100)
        from .data import organism_examples
        from .world.questions import ORGANISM_FUNCTIONS

        by_function = {f: organism_examples(config.n, seed=config.seed, function=f, split="controlled",
                                            rendering=config.scene_rendering)
                       for f in ORGANISM_FUNCTIONS}
    else:
        kwargs = {"root": config.data_root} if config.data_root else {}
        if config.dataset.startswith("organism:"):
            kwargs["seed"] = config.seed
        by_function = {}
        for e in load(config.dataset, rendering=config.scene_rendering, **kwargs):
            by_function.setdefault(e.function, []).append(e)
        by_function = {f: ex[:config.n] for f, ex in by_function.items()}
    if config.function not in by_function:
        raise InputError(f"dataset {config.dataset!r} has no {config.function!r} questions; it has "
                         f"{', '.join(sorted(by_function)) or 'none'}")
    return by_function


def _pairs(loaded: LoadedModel, config: LocateConfig, by_function: dict, result: HeadScores) -> dict:
    """Counterfactual pairs per function: re-rendered images on organism data, object swaps in the text
    elsewhere (relational questions only); the reasons for missing pairs go into the result."""
    pairs = {}
    if config.dataset.startswith("organism:"):
        for f in sorted(by_function):
            p = organism_pairs(config.n, seed=config.seed, function=f, rendering=config.scene_rendering)
            clean = option_batches(loaded, [a for a, _ in p], config.batch_size)
            corrupt = option_batches(loaded, [b for _, b in p], config.batch_size)
            pairs[f] = pair_batches(clean, corrupt)
        return pairs
    from .data.counterfactuals import text_swap_pairs

    reasons: dict[str, int] = {}
    for f in sorted(by_function):
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
        why = "no counterfactual pairs: object swaps need two-object relational questions whose swapped " \
              f"names tokenize to the same length ({', '.join(f'{n} {w}' for w, n in reasons.items())})"
        for name, method in LOCATE_METHODS.items():
            if method.needs_pairs and name in config.methods:
                result.skipped[name] = why
    return pairs


def run_locate(loaded: LoadedModel, config: LocateConfig, log: Callable[[str], None] = print,
               examples: dict[str, list] | None = None, stages_dir: Path | None = None,
               progress: bool = False) -> HeadScores:
    """Score, select, check. With ``stages_dir`` every finished stage is saved there and saved stages are
    loaded instead of re-run (resume); ``progress`` draws a tqdm bar over the stages (stderr)."""
    g = loaded.geometry
    total_heads = g.n_total
    if config.top_k is not None and config.top_k > total_heads:
        raise InputError(f"--top-k {config.top_k} is larger than the number of heads: {loaded.name} has "
                         f"{total_heads} ({g.n_layers} layers x {g.n_heads}); choose 1..{total_heads}")
    torch.manual_seed(config.seed)
    result = HeadScores(model=loaded.name, function=config.function, select_by=config.select_by,
                        geometry=asdict(g), model_files=loaded.source)
    t0 = time.time()
    by_function = examples if examples is not None else examples_by_function(config)
    batches = {f: option_batches(loaded, ex, config.batch_size) for f, ex in sorted(by_function.items())}
    needs_pairs = any(LOCATE_METHODS[m].needs_pairs for m in config.methods)
    pairs = _pairs(loaded, config, by_function, result) if needs_pairs else {}
    state = LocateState(loaded, config, batches, pairs, result, log,
                        stages=StageStore(stages_dir, config.to_dict(), log))
    state.screening = _screening(config, total_heads, result, log)
    if len(state.functions) < 2 and "probe" in config.methods:
        result.skipped["probe"] = "probing needs sub-questions of at least two functions"
    elif "probe" in config.methods and min(len(ex) for ex in by_function.values()) < 2:
        result.skipped["probe"] = "probing needs at least two examples of each function (--n 2 or more)"
    if "prior" in config.methods and not any(prior_split(ex)[0] for ex in by_function.values()):
        result.skipped["prior"] = (f"no example of {config.dataset} is marked as one the prior and the image "
                                   f"disagree on (meta['prior'] == 'violating', as the organism's are)")
    chooser = next(m for m in config.methods if config.select_by in LOCATE_METHODS[m].selectable)
    if chooser in result.skipped or (LOCATE_METHODS[chooser].needs_pairs and config.function not in pairs):
        reason = result.skipped.get(chooser, f"no counterfactual pairs for {config.function}")
        raise InputError(f"cannot select by {config.select_by}: {reason}; choose another --select-by "
                         f"(ablation works on every dataset)")
    result.timings["data"] = time.time() - t0
    log(f"data: {', '.join(f'{f} {len(ex)}' for f, ex in by_function.items())} examples"
        + (f"; counterfactual pairs: {', '.join(f'{f} {sum(b.size for b in p[0])}' for f, p in pairs.items())}"
           if pairs else ""))
    if config.ablation == "mean":  # one reference set for every function: the mean over all of them
        state.means = head_means(loaded, [b for bs in batches.values() for b in bs])
    plan = [(name, f) for name in LOCATE_METHODS if name in config.methods and name not in result.skipped
            for f in LOCATE_METHODS[name].functions(state)]  # registry order: attribution after patching
    bar = _progress(len(plan) + 1, "locate", progress)
    try:
        _run_stages(state, plan, bar)
        _select_and_check(state, bar)
    finally:
        bar.close()  # also on Ctrl-C: the bar ends its line before the command's last word
    return result


def _screening(config: LocateConfig, total_heads: int, result: HeadScores, log: Callable[[str], None]) -> bool:
    """Whether ablation runs as screen + verify, said in the output and recorded in the summary."""
    if "ablation" not in config.methods or config.screen == "off" or \
            (config.screen == "auto" and total_heads <= SCREEN_ABOVE):
        return False
    verify = min(config.verify, total_heads)
    why = f"auto: {total_heads} heads > {SCREEN_ABOVE}" if config.screen == "auto" else "--screen attribution"
    result.summary["screen"] = {"method": "attribution", "verify": verify, "reason": why}
    log(f"ablation: attribution screen of all {total_heads} heads, exact ablation of the top {verify} ({why}; "
        f"--screen off for all-head exact ablation)")
    return True


def _run_stages(state: LocateState, plan: list[tuple[str, str]], bar) -> None:
    """Every (method, function) stage in ``plan``, in registry order (attribution after patching)."""
    for name in LOCATE_METHODS:
        stages = [f for m, f in plan if m == name]
        if not stages:
            continue
        t = time.time()
        for f in stages:
            bar.set_postfix_str(f"{name} / {f}")
            state.stage(name, f, lambda name=name, f=f: LOCATE_METHODS[name].run(state, f))
            bar.update()
        if LOCATE_METHODS[name].finish:
            LOCATE_METHODS[name].finish(state)
        state.result.timings[name] = time.time() - t
    resumed = state.stages.resumed
    if resumed:
        state.log(f"resumed: {len(resumed)} of {len(plan)} stages loaded from {state.stages.dir}")
        state.result.summary["resumed_stages"] = list(resumed)


def _select_and_check(state: LocateState, bar) -> None:
    """Top-k (or the elbow) by the chosen method, sparsity, specificity, and the ablation check."""
    config, result = state.config, state.result
    if (config.select_by, config.function) not in result.scores:
        why = result.summary.get("prior", {}).get(config.function) if config.select_by.startswith("prior") else None
        said = (why.get("skipped") or f"{why.get('prior_driven_errors')} prior-driven errors of {why.get('violating')} "
                f"violating examples, {why.get('grounded_correct')} grounded answers right of {why.get('grounded')}"
                ) if why else ""
        raise InputError(f"no {config.select_by} scores for {config.function} to select by"
                         + (f" ({said})" if said else "") + ": a model that makes no prior-driven errors here has "
                         "nothing to flip; choose another --select-by or --function")
    score = result.score()
    cap = config.max_auto_k or max(1, score.numel() // 10)
    if state.screening and config.select_by == "ablation":
        cap = min(cap, max(1, config.verify // 2))  # choose among verified heads, with a margin
    k = config.top_k or elbow_k(score, max_k=cap)
    result.k_rule = "--top-k" if config.top_k else f"elbow of sorted scores (capped at {cap})"
    result.selected = top_k(score, k)
    total = next((m for m in ("ablation", config.select_by) if m != "dla" and (m, config.function) in result.scores),
                 None)
    if ("dla", config.function) in result.scores and total is not None:  # writing or routing
        result.summary["head_roles"] = {"by": f"dla vs {total}", "heads": head_roles(
            result.selected, result.scores[("dla", config.function)]["score"],
            result.scores[(total, config.function)]["score"])}
    result.summary["sparsity_80"] = {f"{m}|{f}": round(sparsity(v["score"]), 4) for (m, f), v in result.scores.items()
                                     if m in CAUSAL + ("attribution",)}
    partial = {f"{m}|{f}": measured(v["score"]) for (m, f), v in result.scores.items()
               if m in CAUSAL + ("attribution",) and measured(v["score"]) < v["score"].numel()}
    if partial:  # under the screen: the fraction is of the verified heads
        result.summary["sparsity_80_of_measured_heads"] = partial
    tops = {f: top_k(result.scores[(config.select_by, f)]["score"], k) for f in state.functions
            if (config.select_by, f) in result.scores}
    result.summary["top_heads_by_function"] = {f: [list(h) for h in hs] for f, hs in tops.items()}
    result.summary["specificity_jaccard"] = specificity(tops)
    t = time.time()
    bar.set_postfix_str("ablation check")
    result.check = ablation_check(state.loaded, state.batches, result.selected, draws=config.random_draws,
                                  seed=config.seed, mode=config.ablation, means=state.means)
    result.samples = located_samples(state)
    bar.update()
    result.timings["check"] = time.time() - t


def located_samples(state: LocateState) -> list[dict]:
    """samples.jsonl of a locate run: every example with the unmodified model's answer ("none"), with the
    selected heads ablated as the check ablates them ("ablate", every position), and for a prior target with
    them zeroed at the answer position only ("suppress", as the prior scores measure): which items the
    located heads carry, and which prior-driven answers removing them flips."""
    config, selected = state.config, tuple(state.result.selected)
    variants = {"none": [], "ablate": [Ablate(selected, config.ablation)]}
    if config.select_by.startswith("prior"):
        variants["suppress"] = [Suppress(selected, 0.0)]
    lines = []
    for f in state.functions:
        examples = from_batches(state.batches[f])
        got = {name: entries(examples, under(state.loaded, state.batches[f], ivs, means=state.means))
               for name, ivs in variants.items()}
        for i, e in enumerate(examples):
            line = record(e)
            line["methods"] = {name: got[name][i] for name in variants}
            lines.append(line)
    return lines


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar with ETA on stderr (a silent stand-in when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="stage", disable=not (enabled and parallel.world().main),
                dynamic_ncols=True)


# -- the methods ---------------------------------------------------------------------------------------

def _ablation(state: LocateState, f: str) -> None:
    cfg = state.config
    if state.screening:
        estimate, r, verified = screened_ablation(state.loaded, state.batches[f], cfg.verify, cfg.ablation,
                                                  cfg.metric, means=state.means)
        state.put("ablation_screen", f, estimate)  # the estimate of every head
        state.note("verified_heads", f, [list(h) for h in verified])  # exact scores exist for these only
    else:
        r = ablation_effects(state.loaded, state.batches[f], cfg.ablation, metric_name=cfg.metric,
                             means=state.means)
    state.put("ablation", f, r.effects)
    state.note("base_metric", f, round(float(r.base.mean()), 4))
    state.note("restart_path", None, r.path)
    if r.path != "fast" and r.path_note:
        state.note("restart_path_note", None, r.path_note)
        state.log(f"ablation sweep path: {r.path}, slower than fast ({r.path_note})")
    mean = r.effects.mean(0)  # [L, H]; NaN for heads a screen did not verify
    state.log(f"ablation ({cfg.ablation}) {f}: base {cfg.metric} {float(r.base.mean()):.3f}, max "
              f"{'verified ' if state.screening else ''}head effect {float(mean[~mean.isnan()].max()):.3f}")


def _patching(state: LocateState, f: str) -> None:
    clean, corrupt = state.pairs[f]
    noise = patching_effects(state.loaded, clean, corrupt, "noising")
    deno = patching_effects(state.loaded, clean, corrupt, "denoising")
    state.put("noising", f, noise.effects)
    gap = float(noise.base.mean() - deno.base.mean())  # clean - corrupted metric
    state.put("denoising", f, deno.effects, scale=gap if abs(gap) > 1e-6 else 1.0)
    state.note("patching_gap", f, round(gap, 4))
    state.log(f"patching {f}: clean-corrupt gap {gap:.3f}")


def _attribution(state: LocateState, f: str) -> None:
    clean, corrupt = state.pairs[f]
    state.put("attribution", f, attribution_effects(state.loaded, clean, corrupt, state.config.metric))


def _attribution_agreement(state: LocateState) -> None:
    agreement = {}
    for f in state.pairs:
        if ("noising", f) in state.result.scores and ("attribution", f) in state.result.scores:
            agreement[f] = _agreement(state.result.scores[("attribution", f)]["score"],
                                      state.result.scores[("noising", f)]["score"])
    state.result.summary["attribution_vs_exact_noising"] = agreement
    if agreement:
        state.log("attribution vs exact patching: " + ", ".join(
            f"{f} spearman {a['spearman']:.2f}, top-{a['k']} overlap {a['top_overlap']:.2f}"
            for f, a in agreement.items()))


def _probe(state: LocateState, f: str) -> None:
    if "probe" not in state.cache:  # every function's answer-position head outputs, once per run
        every = [(function, b) for function in state.functions for b in state.batches[function]]

        def answer_z(item) -> torch.Tensor:
            z = LayerSweep(state.loaded, item[1].inputs, check=False).z  # L x [B, S, H, D]
            return torch.stack([zl[:, -1] for zl in z], 1).cpu()  # [B, L, H, D]

        feats = parallel.map_batches(answer_z, every, "probe features")
        labels = [function for function, b in every for _ in range(b.size)]
        state.cache["probe"] = (torch.cat(feats), labels)
    features, labels = state.cache["probe"]
    state.put_descriptive("probe", f, probe_scores(features, labels, f, seed=state.config.seed))


def _redundancy(state: LocateState, f: str) -> None:
    cfg = state.config
    score, low, high, summary = redundancy_scores(state.loaded, state.batches[f], mode=cfg.ablation,
                                                  metric_name=cfg.metric, means=state.means, seed=cfg.seed)
    state.put_scores("redundancy", f, {"score": score, "ci_low": low, "ci_high": high})
    state.note("redundancy_fit", f, summary)
    state.log(f"redundancy {f}: {summary['subsets']} random head sets, fit R^2 {summary['r2']:.2f}")


def _dla(state: LocateState, f: str) -> None:
    effects = dla_effects(state.loaded, state.batches[f])  # [N, L, H]
    state.put("dla", f, effects)
    mean = effects.mean(0)
    layer, head = divmod(int(mean.abs().argmax()), mean.shape[1])
    state.log(f"direct logit attribution {f}: largest L{layer}H{head} {float(mean[layer, head]):.3f}")


def _prior(state: LocateState, f: str) -> None:
    violating, grounded = prior_split(from_batches(state.batches[f]))
    if not violating or not grounded:
        state.note("prior", f, {"skipped": f"{len(violating)} violating and {len(grounded)} grounded examples"})
        return
    summary = {}
    for positions, suffix in (("answer", ""), ("all", "_all")):
        r = prior_effects(state.loaded, violating, grounded, positions, state.config.batch_size)
        summary.update(violating=r.n_violating, prior_driven_errors=len(r.flip), grounded=r.n_grounded,
                       grounded_correct=len(r.broken))
        if not len(r.flip) or not len(r.broken):
            break  # nothing to flip (a model without the prior's errors) or nothing to break
        state.put(f"prior_flip{suffix}", f, r.flip)
        state.put(f"prior_break{suffix}", f, r.broken)
        net, low, high = net_interval(r.flip, r.broken, n_boot=state.config.bootstrap, seed=state.config.seed)
        state.put_scores(f"prior_net{suffix}", f, {"score": net, "ci_low": low, "ci_high": high})
    state.note("prior", f, summary)
    state.log(f"prior {f}: {summary['prior_driven_errors']} prior-driven errors of {summary['violating']} "
              f"violating examples; {summary['grounded_correct']} grounded answers right of {summary['grounded']}")


def _attention(state: LocateState, f: str) -> None:
    share, entropy = image_attention(state.loaded, state.batches[f])
    state.put_descriptive("image_share", f, share)
    state.put_descriptive("image_entropy", f, entropy)


LOCATE_METHODS.register("ablation", LocateMethod(_ablation, {"ablation": "causal", "ablation_screen": "estimate"},
                                                 selectable=("ablation",)))
LOCATE_METHODS.register("patching", LocateMethod(_patching, {"noising": "causal", "denoising": "causal"},
                                                 selectable=("noising", "denoising"), needs_pairs=True))
LOCATE_METHODS.register("attribution", LocateMethod(_attribution, {"attribution": "estimate"},
                                                    selectable=("attribution",), needs_pairs=True,
                                                    finish=_attribution_agreement))
LOCATE_METHODS.register("probe", LocateMethod(_probe, {"probe": "descriptive"}, selectable=("probe",)))
LOCATE_METHODS.register("attention", LocateMethod(_attention, {"image_share": "descriptive",
                                                               "image_entropy": "descriptive"}))
LOCATE_METHODS.register("redundancy", LocateMethod(_redundancy, {"redundancy": "estimate"},
                                                   selectable=("redundancy",)))
LOCATE_METHODS.register("dla", LocateMethod(_dla, {"dla": "estimate"}, selectable=("dla",)))  # opt-in: a pass a batch
LOCATE_METHODS.register("prior", LocateMethod(  # opt-in (--target prior): four head sweeps per function
    _prior, {name: "causal" for name in ("prior_flip", "prior_break", "prior_net", "prior_flip_all",
                                         "prior_break_all", "prior_net_all")},
    selectable=("prior_net", "prior_flip", "prior_net_all")))


def score_kind(name: str) -> str:
    """The kind (``vlmheads.scores.KINDS``) of the score ``name``, as the method that writes it declares."""
    for method in LOCATE_METHODS.values():
        if name in method.scores:
            return method.scores[name]
    raise KeyError(f"no locate method writes a {name!r} score")
METHODS = LOCATE_METHODS.names()
DEFAULT_METHODS = LocateConfig.methods  # redundancy is opt-in: it costs ~4 forward passes per head and batch


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


def write_outputs(result: HeadScores, run_dir: Path) -> None:
    """scores.csv and heads.json (``HeadScores.save``), samples.jsonl (``located_samples``), then the head map
    drawn from what was saved."""
    from .plots.headmap import write_headmap

    result.save(run_dir)
    write_samples(run_dir / "samples.jsonl", result.samples)
    write_headmap(HeadScores.load(run_dir), run_dir / "headmap.html")


def report_lines(result: HeadScores) -> list[str]:
    cfg = result
    score = result.scores[(cfg.select_by, cfg.function)]
    lines = [f"\nselected {len(result.selected)} heads for {cfg.function} by {cfg.select_by} ({result.k_rule}):"]
    roles = result.summary.get("head_roles", {}).get("heads", {})
    for l, h in result.selected:
        role = roles.get(f"L{l}H{h}")
        low, high = float(score["ci_low"][l, h]), float(score["ci_high"][l, h])
        lines.append(f"  L{l}H{h:<3} score {float(score['score'][l, h]):8.3f}  "
                     + (f"[{low:.3f}, {high:.3f}]" if not math.isnan(low) else f"({result.kind(cfg.select_by)}: no interval)")
                     + (f"  {role['role']} (direct {role['direct']:.3f} of {role['total']:.3f})" if role else ""))
    prior = result.summary.get("prior", {}).get(cfg.function)
    if cfg.select_by.startswith("prior") and prior and "skipped" not in prior:
        lines.append(f"prior-driven errors flipped to the grounded answer (of {prior['prior_driven_errors']}) and "
                     f"grounded answers broken (of {prior['grounded_correct']}), the head zeroed at the answer "
                     f"position | at every position:")
        for l, h in result.selected:
            cells = []
            for suffix in ("", "_all"):
                for kind in ("flip", "break"):
                    v = result.scores.get((f"prior_{kind}{suffix}", cfg.function))
                    cells.append(f"{kind} {float(v['score'][l, h]):.2f} [{float(v['ci_low'][l, h]):.2f}, "
                                 f"{float(v['ci_high'][l, h]):.2f}]" if v else f"{kind} -")
            lines.append(f"  L{l}H{h:<3} {', '.join(cells[:2])} | {', '.join(cells[2:])}")
    s80 = result.summary.get("sparsity_80", {}).get(f"{cfg.select_by}|{cfg.function}")
    of = result.summary.get("sparsity_80_of_measured_heads", {}).get(f"{cfg.select_by}|{cfg.function}")
    if s80 is not None and of is not None:
        lines.append(f"sparsity: {s80:.1%} of the {of} verified heads carry 80% of their {cfg.select_by} effect "
                     f"(the other {score['score'].numel() - of} were screened out, not measured)")
    elif s80 is not None:
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
