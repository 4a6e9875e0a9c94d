"""The flow job: attention knockout by edge class and layer window (causal), and relation probes through
every layer (descriptive), for one cognitive function's questions.

    knockout.csv   edge, layer_start, layer_end, function, metric, drop, ci_low, ci_high, n
                   (every sliding window of ``window`` layers, and all layers at once)
    probes.csv     site (vision / decoder), layer, position, accuracy, ci_low, ci_high, chance, n_test
    rollout.csv    patch, rollout, flow, knockout: per image patch, means over the examples
    flow.html      the page (``vlmheads.flow.page``); metadata.json holds the rollout/flow agreement
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .. import parallel
from ..data import canonical_function, load, organism_examples
from ..methods.batches import option_batches
from ..methods.selection import accuracy_summary, bootstrap_ci
from ..models.loading import LoadedModel
from ..runs import ModelOptions, StageStore, write_csv
from .knockout import EDGES, knockout_effects, windows
from .probes import relation_probes
from .rollout import FLOW_EXAMPLES, MAX_FLOW_TOKENS, agreement_of, image_positions, rollout_batch
from ..errors import InputError, MissingInput


@dataclass(frozen=True)
class FlowConfig(ModelOptions):
    function: str = "relational_reasoning"
    model: str = "organism"
    dataset: str = "organism:decomposed"
    data_root: str | None = None
    n: int = 128
    edges: tuple[str, ...] = EDGES
    window: int | None = None  # layers per window (default: a quarter of the layers, at least 1)
    probes: bool = True
    rollout: bool = True  # attention rollout/flow against per-patch knockout (one pass per image patch)
    heads: tuple[tuple[int, int], ...] = ()  # located heads to draw on the images (from a locate run)
    heads_from: str | None = None
    allow_foreign_heads: bool = False  # --allow-foreign-heads: heads located on another model or function
    batch_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "function", canonical_function(self.function))
        for edge in self.edges:
            if edge not in EDGES:
                raise InputError(f"unknown edge class {edge!r}; choose from {', '.join(EDGES)}")
        if not self.edges:
            raise InputError(f"no edge classes; choose from {', '.join(EDGES)}")
        for name, value, low in (("--n", self.n, 1), ("--batch-size", self.batch_size, 1),
                                 ("--window", self.window or 1, 1), ("bootstrap", self.bootstrap, 10)):
            if value < low:
                raise InputError(f"{name} must be at least {low}, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)


def flow_examples(config: FlowConfig) -> list:
    """The run's examples of the function (no model needed: checked before one is loaded)."""
    if config.dataset.strip().lower() == "organism:decomposed":
        return organism_examples(config.n, seed=config.seed, function=config.function, split="controlled",
                                 rendering=config.scene_rendering)
    kwargs = {"root": config.data_root} if config.data_root else {}
    return list(load(config.dataset, function=config.function, seed=config.seed, limit=config.n,
                     rendering=config.scene_rendering, **kwargs))


@dataclass
class FlowResult:
    knockout: list
    probes: list
    notes: dict
    timings: dict
    rollout: dict = field(default_factory=dict)  # per-patch means and the agreement summaries
    attention: dict = field(default_factory=dict)  # answer attention over the image grid, per layer
    resumed: list = field(default_factory=list)  # stages loaded from a previous run's stages_dir


def run_flow(loaded: LoadedModel, config: FlowConfig, examples: list, log: Callable[[str], None] = print,
             progress: bool = False, stages_dir=None) -> FlowResult:
    """Knockout by edge class and window, the probes, rollout against per-patch knockout and the attention
    maps; each saved as a stage in ``stages_dir`` as it finishes (and loaded from there when a previous run
    of the same config saved it: ``heads.flow --resume``)."""
    from tqdm.auto import tqdm

    g = loaded.geometry
    size = config.window or max(1, g.n_layers // 4)
    spans = windows(g.n_layers, size) + ([(0, g.n_layers)] if size < g.n_layers else [])
    batches = option_batches(loaded, examples, config.batch_size)
    store = StageStore(stages_dir, config.to_dict(), log)

    def stage(name: str, compute):
        return store(name, compute)[0]

    notes, rows, timings = {}, [], {}
    plain: dict = {}  # each batch's uncut logits, computed once for every cut
    t = time.time()
    with tqdm(total=len(config.edges) * len(spans), desc="flow knockout", unit="cut",
              disable=not (progress and parallel.world().main), dynamic_ncols=True) as bar:
        for edge in config.edges:
            for start, end in spans:
                bar.set_postfix_str(f"{edge} L{start}-{end - 1}")
                drops = stage(f"knockout-{edge.replace('->', '-to-')}-L{start}-{end - 1}",
                              lambda: knockout_effects(loaded, batches, edge, range(start, end),
                                                       ("logit_diff", "accuracy"), plain=plain))
                bar.update()
                if drops is None:
                    notes[edge] = ("skipped: no object positions (the dataset has no scene layouts, or the "
                                   "model's image tokens are not one square grid)")
                    bar.update(len(spans) - 1)
                    break
                for m, d in drops.items():
                    if m == "accuracy":
                        s = accuracy_summary(d)  # drop of accuracy: mean of per-example 0/+-1 changes
                        drop, lo, hi = s["accuracy"], s["ci_low"], s["ci_high"]
                    else:
                        lo_t, hi_t = bootstrap_ci(d[:, None], n_boot=config.bootstrap, seed=config.seed)
                        drop, lo, hi = round(float(d.mean()), 4), round(float(lo_t[0]), 4), round(float(hi_t[0]), 4)
                    rows.append({"edge": edge, "layer_start": start, "layer_end": end - 1, "function": config.function,
                                 "metric": m, "drop": drop, "ci_low": lo, "ci_high": hi, "n": int(d.numel())})
    timings["knockout"] = time.time() - t
    for edge in config.edges:
        if edge in notes:
            log(f"{edge}: {notes[edge]}")
    probes = []
    if config.probes:
        t = time.time()
        probes, note = stage("probes", lambda: relation_probes(loaded, batches, seed=config.seed))
        if note:
            notes["probes"] = note
            log(f"probes: {note}")
        timings["probes"] = time.time() - t
    t = time.time()
    rollout, attention = {}, {}
    if config.heads:
        log("located heads drawn on the images: " + ", ".join(f"L{l}H{h}" for l, h in config.heads)
            + (f" (from {config.heads_from})" if config.heads_from else ""))
    try:
        if config.rollout:
            budget = flow_budgets(batches)  # attention flow: the first FLOW_EXAMPLES examples only
            with tqdm(total=len(parallel.world().share(len(batches))), desc="rollout vs per-patch knockout", unit="batch",
                      disable=not (progress and parallel.world().main), dynamic_ncols=True) as rolled:
                def one(index):
                    part = rollout_batch(loaded, batches[index], flow_examples=budget[index])
                    rolled.update()
                    return part

                parts = store.items([f"rollout-batch{i}" for i in range(len(batches))], one, "rollout")
            agreement = agreement_of(parts)
            rollout = {"rollout_mean": agreement["rollout"].mean(0).tolist(),
                       "knockout_mean": agreement["knockout"].mean(0).tolist(),
                       "flow_mean": agreement["flow"].mean(0).tolist() if agreement["flow"] is not None else None,
                       **{k: v for k, v in agreement.items() if k.startswith("spearman")}}
        attention = stage("attention", lambda: image_attention_maps(loaded, batches, heads=config.heads))
        if config.rollout:
            s = rollout["spearman_rollout"]
            log(f"rollout vs knockout per patch: Spearman {s['accuracy']:.2f} [{s['ci_low']:.2f}, "
                f"{s['ci_high']:.2f}]" + (f"; attention flow {rollout['spearman_flow']['accuracy']:.2f}"
                                           if "spearman_flow" in rollout else ""))
        else:
            notes["rollout"] = "skipped: --no-rollout"
            log(f"rollout: {notes['rollout']}")
    except (ValueError, RuntimeError) as err:  # e.g. rows whose image tokens differ in number (tiled images)
        notes["rollout"] = f"skipped: {str(err).splitlines()[0]}"
        log(f"rollout: {notes['rollout']}")
    timings["rollout"] = time.time() - t
    if store.resumed:
        log(f"resumed: {len(store.resumed)} stage(s) loaded from {stages_dir}")
    return FlowResult(rows, probes, notes, timings, rollout, attention, store.resumed)


def flow_budgets(batches) -> list[int]:
    """Per batch, how many of its examples get attention flow (what ``rollout_batch`` is given): the first
    ``FLOW_EXAMPLES`` examples of the run, among batches with prompts of at most ``MAX_FLOW_TOKENS`` tokens;
    known from the batches' shapes alone, so every batch can be computed on its own."""
    budgets, flowed = [], 0
    for batch in batches:
        budget = FLOW_EXAMPLES - flowed
        budgets.append(budget)
        take = max(0, min(budget, batch.size))
        if take and batch.inputs["input_ids"].shape[1] <= MAX_FLOW_TOKENS:
            flowed += take
    return budgets


def image_attention_maps(loaded: LoadedModel, batches, heads=(), gallery: int = 3) -> dict:
    """The answer position's attention over the image grid per layer (heads averaged), for correctly and
    wrongly answered examples; the image tokens' share of attention and of the sequence; and for each of
    ``heads`` (located heads), its attention over the image on up to ``gallery`` correct and ``gallery``
    wrong examples, with those examples' images (for drawing the attention on them)."""
    import torch

    from ..data import as_pil
    from ..methods.batches import metric
    from ..sites.attention import attention_probabilities

    for layer, head in heads:
        loaded.geometry.check_head(layer, head)
    def one(batch) -> tuple:
        logits, attentions = attention_probabilities(loaded, batch.inputs)  # [B, S, V], L x [B, H, S, S]
        image = loaded.image_token_mask(batch.inputs).cpu()
        positions = image_positions(loaded, batch.inputs).cpu()  # [B, n_image]
        last = [a[:, :, -1].float().cpu() for a in attentions]  # L x [B, H, S]
        return (torch.stack([a.mean(1).gather(1, positions) for a in last], 1),  # [B, L, n_image]
                torch.stack([(a.mean(1) * image).sum(1) for a in last], 1),  # [B, L]
                image.sum(1).float() / batch.inputs["attention_mask"].sum(1).cpu(),  # [B]
                torch.stack([last[l][:, h].gather(1, positions) for l, h in heads], 1) if heads else None,  # [B, K, n]
                metric(logits[:, -1], batch.option_ids, batch.answer, "accuracy").bool().cpu())  # [B]

    maps, right, share, seq_share, per_head, examples = [], [], [], [], [], []
    for batch, (m, s, q, h, r) in zip(batches, parallel.map_batches(one, batches, "attention maps")):
        maps.append(m)
        share.append(s)
        seq_share.append(q)
        if heads:
            per_head.append(h)
            examples += list(batch.examples)
        right.append(r)
    maps, right = torch.cat(maps), torch.cat(right)
    n_image = maps.shape[-1]
    side = int(round(n_image ** 0.5))
    shape = (side, side) if side * side == n_image else (1, n_image)
    layers = []
    for layer in range(maps.shape[1]):
        entry = {}
        for name, rows in (("correct", right), ("wrong", ~right)):
            entry[name] = maps[rows, layer].mean(0).view(*shape).tolist() if bool(rows.any()) else None
        layers.append(entry)
    out = {"layers": layers, "n_correct": int(right.sum()), "n_wrong": int((~right).sum()),
           "image_share": [round(float(x), 4) for x in torch.cat(share).mean(0)],
           "image_share_of_sequence": round(float(torch.cat(seq_share).mean()), 4), "grid": list(shape)}
    if heads:
        per_head = torch.cat(per_head)  # [N, K, n_image]
        chosen = right.nonzero()[:gallery, 0].tolist() + (~right).nonzero()[:gallery, 0].tolist()
        out["heads"] = [list(h) for h in heads]
        out["gallery"] = [{"correct": bool(right[i]), "id": examples[i].id, "answer": examples[i].answer,
                           "image": _small_image(as_pil(examples[i].image)),
                           "maps": [per_head[i, k].view(*shape).tolist() for k in range(len(heads))]}
                          for i in chosen]
    return out


def _small_image(image, largest: int = 224) -> list:
    """An RGB image as nested lists ``[H][W][3]``, at most ``largest`` px on its longer side."""
    scale = min(1.0, largest / max(image.size))
    if scale < 1:
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    import numpy as np

    return np.asarray(image.convert("RGB")).tolist()


def write_outputs(result: FlowResult, run_dir, title: str = "flow") -> None:
    from ..runs import write_text_atomic
    from .page import flow_html

    write_csv(run_dir / "knockout.csv", result.knockout)
    if result.probes:
        write_csv(run_dir / "probes.csv", result.probes)
    if result.rollout:
        r = result.rollout
        write_csv(run_dir / "rollout.csv", [
            {"patch": i, "rollout": round(r["rollout_mean"][i], 6),
             "flow": round(r["flow_mean"][i], 6) if r.get("flow_mean") else "", "knockout": round(k, 6)}
            for i, k in enumerate(r["knockout_mean"])])
    write_text_atomic(run_dir / "flow.html", flow_html(result.knockout, result.probes, result.rollout,
                                                        result.attention, title))


def report_lines(result: FlowResult, metric: str = "accuracy") -> list[str]:
    rows = [r for r in result.knockout if r["metric"] == metric]
    spans = list(dict.fromkeys((r["layer_start"], r["layer_end"]) for r in rows))
    edges = list(dict.fromkeys(r["edge"] for r in rows))
    head = f"{'knockout: ' + metric + ' drop':<28}" + "".join(f"{f'L{a}-{b}':>18}" for a, b in spans)
    lines = [head]
    for edge in edges:
        cells = []
        for a, b in spans:
            r = next(r for r in rows if r["edge"] == edge and (r["layer_start"], r["layer_end"]) == (a, b))
            cells.append(f"{r['drop']:.2f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]")
        lines.append(f"{edge:<28}" + "".join(f"{c:>18}" for c in cells))
    if result.probes:
        lines.append("\nprobes (held-out accuracy; chance " + f"{result.probes[0]['chance']:.2f}):")
        sites = list(dict.fromkeys((r["site"], r["position"]) for r in result.probes))
        for site, position in sites:
            accs = [f"{r['accuracy']:.2f}" for r in result.probes if (r["site"], r["position"]) == (site, position)]
            lines.append(f"  {site:<8} {position:<12} by layer: {' '.join(accs)}")
    return lines


def flow_frames(run_dir) -> dict:
    """A flow run's tables as pandas DataFrames, by name: ``knockout`` (edge, layer window, metric, drop and its
    interval), and where the run wrote them ``probes`` (site, layer, position, held-out accuracy, chance) and
    ``rollout`` (per image patch: mean rollout, knockout and flow importance)."""
    import pandas as pd
    from pathlib import Path

    run_dir = Path(run_dir)
    if not (run_dir / "knockout.csv").is_file():
        raise MissingInput(f"{run_dir / 'knockout.csv'}: missing; pass a finished flow run directory")
    return {name: pd.read_csv(run_dir / f"{name}.csv", keep_default_na=False, na_values=[""])
            for name in ("knockout", "probes", "rollout") if (run_dir / f"{name}.csv").is_file()}