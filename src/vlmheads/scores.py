"""``HeadScores``: what a locate run found, owned by the library, saved to and loaded from its run directory.

A locate run directory holds

    scores.csv    one row per (method, function, layer, head): the score's kind, score, 95% interval, rank
    heads.json    the selection (function, method, k and its rule, the heads), the evidence (summary,
                  ablation check, skipped methods), the model's head geometry, the identity of its
                  files (``models.identity.source_identity``) and the format version of the record

``HeadScores.save(run_dir)`` writes both atomically; ``HeadScores.load(run_dir)`` reads them back
(every problem names the file, and the line for the CSV), so ``heads.intervene``, the head map and the
notebooks all read a run the same way, from disk, without the process that made it.
``HeadScores.foreign_to(...)`` says, before a model loads, why a run's heads do not belong to that model
or function (another model's files, another function, another geometry).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .methods.selection import Head, ranked
from .runs import write_csv, write_json
from .typed import line_of
from .errors import InputError

SCORE_FIELDS = ("layer", "head", "method", "function", "kind", "score", "ci_low", "ci_high", "rank")
HEADS_FIELDS = ("model", "function", "select_by", "k", "heads", "geometry")
# heads.json's format: 1 = before it carried one (no model files); 2 = "format" and "model_files";
# 3 = scores.csv has a kind column, and scores without an interval leave ci_low / ci_high empty
FORMAT = 3
# what a score is (the locate methods declare it: ``LocateMethod.scores``):
#   causal       measured by intervening on the head (ablation, patching, the prior's flips)
#   estimate     an approximation of a causal effect (attribution, a screen, a fit over head sets, DLA)
#   descriptive  read off the activations or attention (probes, attention to the image): no interval
KINDS = ("causal", "estimate", "descriptive")
# runs written before scores.csv carried the kind (format <= 2) are read with this (their descriptive scores
# wrote their value as both interval ends; they are read as they are)
KIND_BEFORE_FORMAT_3 = {"ablation": "causal", "noising": "causal", "denoising": "causal", "probe": "descriptive",
                        "image_share": "descriptive", "image_entropy": "descriptive"}


class LocateRunError(InputError):
    """A directory that is not a (readable) locate run; the message names the file."""


class ForeignRun(LocateRunError):
    """A locate run whose heads belong to another model, function or geometry than the one asked for."""


@dataclass
class HeadScores:
    """Per-head scores of every (method, function) and the selection made from them."""

    model: str
    function: str  # the target function (canonical name)
    select_by: str  # the method whose scores chose the heads
    geometry: dict  # n_layers, n_heads, n_kv_heads, head_dim
    scores: dict = field(default_factory=dict)  # (method, function) -> {"score", "ci_low", "ci_high"}: [L, H], "kind"
    selected: list = field(default_factory=list)  # [(layer, head)], best first
    k_rule: str = ""
    summary: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # method -> reason
    timings: dict = field(default_factory=dict)
    model_files: dict | None = None  # models.identity.source_identity of the model it ran on (None: not known)
    samples: list = field(default_factory=list, repr=False)  # samples.jsonl lines of the run (not in heads.json)
    format: int = FORMAT  # heads.json's format version, as read (1: a run from before versions)
    run_dir: Path | None = None
    _ranks: dict = field(default_factory=dict, repr=False)  # (method, function) -> [Head] as saved

    @property
    def functions(self) -> list[str]:
        return sorted({f for _, f in self.scores})

    @property
    def methods(self) -> list[str]:
        return sorted({m for m, _ in self.scores})

    def score(self, method: str | None = None, function: str | None = None) -> torch.Tensor:
        """``[n_layers, n_heads]`` scores of one method for one function (default: the selection's)."""
        key = (method or self.select_by, function or self.function)
        if key not in self.scores:
            have = ", ".join(f"{m}/{f}" for m, f in sorted(self.scores))
            raise KeyError(f"no {key[0]} scores for {key[1]} in this locate run; it has {have}")
        return self.scores[key]["score"]

    def ranking(self, method: str | None = None, function: str | None = None) -> list[Head]:
        """Every head, best first, by one method's scores for one function (default: the selection's)."""
        key = (method or self.select_by, function or self.function)
        if key in self._ranks:
            return list(self._ranks[key])
        return ranked(self.score(*key))

    def top(self, k: int | None = None) -> list[Head]:
        """The ``k`` best heads of the selection's ranking; ``None``: the heads the run selected."""
        if k is None:
            return list(self.selected)
        order = self.ranking()
        if not 1 <= k <= len(order):
            raise InputError(f"top-{k} asks for more heads than the model has ({len(order)})" if k > len(order)
                             else f"top-K needs K >= 1, got {k}")
        return order[:k]

    def frame(self):
        """Every score as a pandas DataFrame, one row per (method, function, layer, head): ``score``,
        ``ci_low``, ``ci_high`` (unrounded; NaN where a head was not computed) and ``rank`` (1 = best, by that
        method for that function): scores.csv as a table to query, e.g.
        ``run.frame().query("method == 'ablation'").nsmallest(5, "rank")``."""
        import pandas as pd

        parts = []
        for (method, function), v in sorted(self.scores.items()):
            n_layers, n_heads = v["score"].shape
            rank = torch.empty(n_layers * n_heads, dtype=torch.long)
            for i, (layer, head) in enumerate(self.ranking(method, function)):
                rank[layer * n_heads + head] = i + 1
            parts.append(pd.DataFrame({
                "layer": torch.arange(n_layers).repeat_interleave(n_heads).numpy(),  # [L*H], layer-major
                "head": torch.arange(n_heads).repeat(n_layers).numpy(),
                "method": method, "function": function, "kind": self.kind(method, function),
                **{k: v[k].double().flatten().numpy() for k in ("score", "ci_low", "ci_high")},
                "rank": rank.numpy()}))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SCORE_FIELDS))

    def kind(self, method: str, function: str | None = None) -> str:
        """``causal``, ``estimate`` or ``descriptive`` (``KINDS``): what the score of ``method`` is."""
        entry = self.scores.get((method, function or self.function)) or \
            next((v for (m, _), v in self.scores.items() if m == method), {})
        return entry.get("kind") or KIND_BEFORE_FORMAT_3.get(method, "causal")

    # -- files ----------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """scores.csv's rows; an interval end that does not exist (a descriptive score's) is left empty, a score
        that was not computed (a head a screen did not verify) is nan."""
        def cell(x: torch.Tensor, score: torch.Tensor):
            return "" if torch.isnan(x) and not torch.isnan(score) else round(float(x), 6)

        rows = []
        for (method, function), v in sorted(self.scores.items()):
            order = {h: i + 1 for i, h in enumerate(self.ranking(method, function))}
            n_layers, n_heads = v["score"].shape
            kind = self.kind(method, function)
            for layer in range(n_layers):
                for head in range(n_heads):
                    score = v["score"][layer, head]
                    rows.append({"layer": layer, "head": head, "method": method, "function": function, "kind": kind,
                                 "score": round(float(score), 6),
                                 "ci_low": cell(v["ci_low"][layer, head], score),
                                 "ci_high": cell(v["ci_high"][layer, head], score),
                                 "rank": order[(layer, head)]})
        return rows

    def heads_record(self) -> dict:
        score = self.scores.get((self.select_by, self.function), {}).get("score")
        return {"model": self.model, "function": self.function, "select_by": self.select_by,
                "k": len(self.selected), "k_rule": self.k_rule,
                "heads": [{"layer": l, "head": h, **({"score": round(float(score[l, h]), 6)} if score is not None else {})}
                          for l, h in self.selected],
                "summary": self.summary, "check": self.check, "skipped": self.skipped, "geometry": self.geometry,
                "model_files": self.model_files, "format": FORMAT}

    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        write_csv(run_dir / "scores.csv", self.rows())
        write_json(run_dir / "heads.json", self.heads_record())
        self.run_dir = run_dir

    @classmethod
    def load(cls, run_dir: str | Path) -> "HeadScores":
        run_dir = Path(run_dir)
        heads_path, scores_path = run_dir / "heads.json", run_dir / "scores.csv"
        if not run_dir.is_dir():
            raise LocateRunError(f"{run_dir} is not a directory: pass a locate run directory (results/locate/<run>)")
        if not heads_path.is_file():
            raise LocateRunError(f"{run_dir} is not a locate run (no heads.json); pass a directory written by "
                                 f"`python -m heads.locate`")
        try:
            text = heads_path.read_text(encoding="utf-8")
            info = json.loads(text)
        except UnicodeDecodeError as err:
            raise LocateRunError(f"{heads_path}: not UTF-8 text (byte {err.start}); the run is damaged: re-run "
                                 f"heads.locate") from None
        except json.JSONDecodeError as err:
            raise LocateRunError(f"{heads_path}: not valid JSON ({err.msg}, line {err.lineno}); the run is damaged: "
                                 f"re-run heads.locate") from None
        if not isinstance(info, dict):
            raise LocateRunError(f"{heads_path}: expected a JSON object")
        missing = [k for k in HEADS_FIELDS if k not in info]
        if missing:
            raise LocateRunError(f"{heads_path}: missing {', '.join(missing)}; the run is damaged: re-run heads.locate")
        if not scores_path.is_file():
            raise LocateRunError(f"{run_dir} has heads.json but no scores.csv; the run is incomplete: re-run heads.locate")
        version = info.get("format", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise LocateRunError(f"{heads_path}:{line_of(text, 'format')}: format must be a whole number >= 1, got "
                                 f"{version!r}")
        if version > FORMAT:
            raise LocateRunError(f"{heads_path}: format {version} was written by a newer vlmheads (this one reads up "
                                 f"to {FORMAT}): upgrade vlmheads to read it")
        for key, kind in (("model", str), ("function", str), ("select_by", str), ("geometry", dict), ("heads", list),
                          ("summary", dict), ("check", dict), ("skipped", dict), ("model_files", (dict, type(None)))):
            if key in info and not isinstance(info[key], kind):
                want = "an object or null" if key == "model_files" else \
                    {str: "a string", dict: "an object", list: "a list"}[kind]
                raise LocateRunError(f"{heads_path}:{line_of(text, key)}: {key} must be {want}, got "
                                     f"{info[key]!r}; the run is damaged: re-run heads.locate")
        g = info["geometry"]
        n_layers, n_heads = g.get("n_layers"), g.get("n_heads")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (n_layers, n_heads)):
            raise LocateRunError(f"{heads_path}:{line_of(text, 'geometry')}: geometry needs whole n_layers and "
                                 f"n_heads >= 1, got {g!r}")
        values: dict = {}
        ranks: dict = {}
        try:
            score_text = scores_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise LocateRunError(f"{scores_path}: not UTF-8 text (byte {err.start}); the run is damaged: re-run "
                                 f"heads.locate") from None
        reader = csv.DictReader(io.StringIO(score_text, newline=""))
        wanted = [f for f in SCORE_FIELDS if f != "kind" or version >= 3]  # the kind column: format 3 on
        if reader.fieldnames is None or set(wanted) - set(reader.fieldnames):
            raise LocateRunError(f"{scores_path}:1: header must have {', '.join(wanted)}")
        kinds: dict = {}
        for lineno, row in enumerate(reader, 2):
            try:
                layer, head = int(row["layer"]), int(row["head"])
                numbers = [float(row["score"])] + [float(row[k]) if row[k] != "" else float("nan")
                                                   for k in ("ci_low", "ci_high")]  # empty: no interval
                rank = int(row["rank"])
            except (TypeError, ValueError):
                raise LocateRunError(f"{scores_path}:{lineno}: malformed row {row!r}") from None
            if version >= 3 and row["kind"] not in KINDS:
                raise LocateRunError(f"{scores_path}:{lineno}: kind must be one of {', '.join(KINDS)}, got "
                                     f"{row['kind']!r}")
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise LocateRunError(f"{scores_path}:{lineno}: head L{layer}H{head} is outside the model's "
                                     f"{n_layers} x {n_heads} heads")
            key = (row["method"], row["function"])
            kinds[key] = row["kind"] if version >= 3 else KIND_BEFORE_FORMAT_3.get(row["method"], "causal")
            cell, seen = values.setdefault(key, (torch.zeros(3, n_layers, n_heads),
                                                 torch.zeros(n_layers, n_heads, dtype=torch.bool)))
            cell[:, layer, head] = torch.tensor(numbers)  # NaN stays NaN: a head that was not computed
            seen[layer, head] = True
            ranks.setdefault(key, {})[rank] = (layer, head)
        scores = {}
        for key, (cell, seen) in values.items():
            if not seen.all():
                raise LocateRunError(f"{scores_path}: {key[0]}/{key[1]} lacks rows for some heads; the run is damaged")
            scores[key] = {"score": cell[0], "ci_low": cell[1], "ci_high": cell[2], "kind": kinds[key]}
        selected = []
        for h in info["heads"]:
            pair = (h.get("layer"), h.get("head")) if isinstance(h, dict) else (None, None)
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in pair):
                raise LocateRunError(f"{heads_path}:{line_of(text, 'heads')}: 'heads' must be a list of "
                                     f"{{layer, head}} whole numbers, got {h!r}")
            if not (0 <= pair[0] < n_layers and 0 <= pair[1] < n_heads):
                raise LocateRunError(f"{heads_path}:{line_of(text, 'heads')}: selected head L{pair[0]}H{pair[1]} is "
                                     f"outside the run's own {n_layers} x {n_heads} heads; the run is damaged: re-run "
                                     f"heads.locate")
            selected.append(pair)
        chosen = scores.get((str(info["select_by"]), str(info["function"])))
        if chosen is not None and torch.isnan(chosen["score"]).all():
            raise LocateRunError(f"{scores_path}: every {info['select_by']} score for {info['function']} is NaN, so "
                                 f"nothing chose its heads; the run is damaged: re-run heads.locate")
        return cls(model=info["model"], function=info["function"], select_by=info["select_by"],
                   geometry=dict(g), scores=scores, selected=selected, k_rule=str(info.get("k_rule", "")),
                   summary=info.get("summary", {}), check=info.get("check", {}), skipped=info.get("skipped", {}),
                   model_files=info.get("model_files"), format=version, run_dir=run_dir,
                   _ranks={k: [r[i] for i in sorted(r)] for k, r in ranks.items()})

    def foreign_to(self, model: str, files: dict | None = None, function: str | None = None,
                   geometry: tuple[int, int] | None = None) -> dict[str, str]:
        """Why this run's heads are not ``model``'s (``files``: its ``models.identity.source_identity``;
        ``geometry``: its declared ``(n_layers, n_heads)``) for ``function``: ``{"function" | "model" |
        "geometry": reason}``, empty when they are. Read before the model loads: another model's files (by config and weights digest; by name for
        runs that recorded none), another function, another head geometry."""
        from .models.identity import same_model

        where = self.run_dir or "this locate run"
        reasons = {}
        if function is not None and function != self.function:
            reasons["function"] = (f"the locate run {where} holds heads for {self.function}, not {function}")
        same = same_model(self.model_files, files)
        if same is False:
            def label(f):
                return f"config {f['config_sha256']}, weights {f.get('weights_digest')}"
            reasons["model"] = (f"the locate run {where} was made on {self.model} ({label(self.model_files)}), not "
                                f"on {model} ({label(files)})")
        elif same is None and Path(str(self.model)).name != Path(str(model)).name:
            reasons["model"] = f"the locate run {where} was made on a model named {self.model}, not {model}"
        if geometry is not None and tuple(geometry) != (self.geometry.get("n_layers"), self.geometry.get("n_heads")):
            reasons["geometry"] = (f"the locate run {where} was made on a model with {self.geometry.get('n_layers')} "
                                   f"x {self.geometry.get('n_heads')} heads, but {model} has {geometry[0]} x "
                                   f"{geometry[1]}")
        return reasons


def find_locate_runs(root: Path, model: str | None = None, function: str | None = None,
                     warn=None, files: dict | None = None) -> list[Path]:
    """Locate run directories under ``root`` (oldest first) for a model and function; unreadable
    ``heads.json`` files are passed over (``warn`` is told which, with the reason). A run is the model's
    when its recorded files match ``files`` (``models.identity.source_identity``), and by name when
    either side records none."""
    from .models.identity import same_model

    runs = []
    for path in sorted(Path(root).glob("*/heads.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            run_model, run_function = info["model"], info["function"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            if warn:
                warn(f"warning: passing over {path}: unreadable ({type(err).__name__}: {err})")
            continue
        if function is not None and run_function != function:
            continue
        if model is not None:
            same = same_model(info.get("model_files"), files)
            if same is False or same is None and Path(str(run_model)).name != Path(model).name:
                continue
        runs.append(path.parent)
    return runs


def newest_locate_run(model: str, function: str, root: Path | None = None, warn=None) -> Path | None:
    """The newest locate run under ``root`` (default ``results/locate``) made for ``function`` on ``model``'s own
    files (``find_locate_runs`` with the model's ``source_identity``), or None: how intervene and flow pick
    the heads when no ``--heads-from`` is given. Checks the model's source exists; loads no weights."""
    from .data import canonical_function
    from .models.identity import source_identity
    from .models.loading import check_model_source
    from .runs import DEFAULT_RESULTS

    runs = find_locate_runs(Path(root) if root is not None else DEFAULT_RESULTS / "locate", model=model,
                            function=canonical_function(function), warn=warn,
                            files=source_identity(check_model_source(model)))
    return runs[-1] if runs else None
