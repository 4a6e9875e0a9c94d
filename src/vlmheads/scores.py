"""``HeadScores``: what a locate run found, owned by the library, saved to and loaded from its run directory.

A locate run directory holds

    scores.csv    one row per (method, function, layer, head): score, 95% interval, rank
    heads.json    the selection (function, method, k and its rule, the heads), the evidence (summary,
                  ablation check, skipped methods) and the model's head geometry

``HeadScores.save(run_dir)`` writes both atomically; ``HeadScores.load(run_dir)`` reads them back
(every problem names the file, and the line for the CSV), so ``heads.intervene``, the head map and the
notebooks all read a run the same way, from disk, without the process that made it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .methods.selection import Head, ranked
from .runs import write_csv, write_json

SCORE_FIELDS = ("layer", "head", "method", "function", "score", "ci_low", "ci_high", "rank")
HEADS_FIELDS = ("model", "function", "select_by", "k", "heads", "geometry")


class LocateRunError(ValueError):
    """A directory that is not a (readable) locate run; the message names the file."""


@dataclass
class HeadScores:
    """Per-head scores of every (method, function) and the selection made from them."""

    model: str
    function: str  # the target function (canonical name)
    select_by: str  # the method whose scores chose the heads
    geometry: dict  # n_layers, n_heads, n_kv_heads, head_dim
    scores: dict = field(default_factory=dict)  # (method, function) -> {"score", "ci_low", "ci_high"}: [L, H]
    selected: list = field(default_factory=list)  # [(layer, head)], best first
    k_rule: str = ""
    summary: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)  # method -> reason
    timings: dict = field(default_factory=dict)
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
            raise ValueError(f"top-{k} asks for more heads than the model has ({len(order)})" if k > len(order)
                             else f"top-K needs K >= 1, got {k}")
        return order[:k]

    # -- files ----------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        rows = []
        for (method, function), v in sorted(self.scores.items()):
            order = {h: i + 1 for i, h in enumerate(self.ranking(method, function))}
            n_layers, n_heads = v["score"].shape
            for layer in range(n_layers):
                for head in range(n_heads):
                    rows.append({"layer": layer, "head": head, "method": method, "function": function,
                                 "score": round(float(v["score"][layer, head]), 6),
                                 "ci_low": round(float(v["ci_low"][layer, head]), 6),
                                 "ci_high": round(float(v["ci_high"][layer, head]), 6),
                                 "rank": order[(layer, head)]})
        return rows

    def heads_record(self) -> dict:
        score = self.scores.get((self.select_by, self.function), {}).get("score")
        return {"model": self.model, "function": self.function, "select_by": self.select_by,
                "k": len(self.selected), "k_rule": self.k_rule,
                "heads": [{"layer": l, "head": h, **({"score": round(float(score[l, h]), 6)} if score is not None else {})}
                          for l, h in self.selected],
                "summary": self.summary, "check": self.check, "skipped": self.skipped, "geometry": self.geometry}

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
            info = json.loads(heads_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LocateRunError(f"{heads_path}: not valid JSON ({getattr(err, 'msg', err)}, line "
                                 f"{getattr(err, 'lineno', '?')}); the run is damaged: re-run heads.locate") from None
        if not isinstance(info, dict):
            raise LocateRunError(f"{heads_path}: expected a JSON object")
        missing = [k for k in HEADS_FIELDS if k not in info]
        if missing:
            raise LocateRunError(f"{heads_path}: missing {', '.join(missing)}; the run is damaged: re-run heads.locate")
        if not scores_path.is_file():
            raise LocateRunError(f"{run_dir} has heads.json but no scores.csv; the run is incomplete: re-run heads.locate")
        g = info["geometry"]
        try:
            n_layers, n_heads = int(g["n_layers"]), int(g["n_heads"])
        except (KeyError, TypeError, ValueError):
            raise LocateRunError(f"{heads_path}: geometry needs n_layers and n_heads, got {g!r}") from None
        values: dict = {}
        ranks: dict = {}
        with open(scores_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or set(SCORE_FIELDS) - set(reader.fieldnames):
                raise LocateRunError(f"{scores_path}:1: header must have {', '.join(SCORE_FIELDS)}")
            for lineno, row in enumerate(reader, 2):
                try:
                    layer, head = int(row["layer"]), int(row["head"])
                    numbers = [float(row[k]) for k in ("score", "ci_low", "ci_high")]
                    rank = int(row["rank"])
                except (TypeError, ValueError):
                    raise LocateRunError(f"{scores_path}:{lineno}: malformed row {row!r}") from None
                if not (0 <= layer < n_layers and 0 <= head < n_heads):
                    raise LocateRunError(f"{scores_path}:{lineno}: head L{layer}H{head} is outside the model's "
                                         f"{n_layers} x {n_heads} heads")
                key = (row["method"], row["function"])
                cell, seen = values.setdefault(key, (torch.zeros(3, n_layers, n_heads),
                                                     torch.zeros(n_layers, n_heads, dtype=torch.bool)))
                cell[:, layer, head] = torch.tensor(numbers)  # NaN stays NaN: a head that was not computed
                seen[layer, head] = True
                ranks.setdefault(key, {})[rank] = (layer, head)
        scores = {}
        for key, (cell, seen) in values.items():
            if not seen.all():
                raise LocateRunError(f"{scores_path}: {key[0]}/{key[1]} lacks rows for some heads; the run is damaged")
            scores[key] = {"score": cell[0], "ci_low": cell[1], "ci_high": cell[2]}
        try:
            selected = [(int(h["layer"]), int(h["head"])) for h in info["heads"]]
        except (KeyError, TypeError, ValueError):
            raise LocateRunError(f"{heads_path}: 'heads' must be a list of {{layer, head}}") from None
        return cls(model=str(info["model"]), function=str(info["function"]), select_by=str(info["select_by"]),
                   geometry=dict(g), scores=scores, selected=selected, k_rule=str(info.get("k_rule", "")),
                   summary=info.get("summary", {}), check=info.get("check", {}), skipped=info.get("skipped", {}),
                   run_dir=run_dir, _ranks={k: [r[i] for i in sorted(r)] for k, r in ranks.items()})


def find_locate_runs(root: Path, model: str | None = None, function: str | None = None,
                     warn=None) -> list[Path]:
    """Locate run directories under ``root`` (oldest first) for a model and function; unreadable
    ``heads.json`` files are passed over (``warn`` is told which, with the reason)."""
    runs = []
    for path in sorted(Path(root).glob("*/heads.json")):
        try:
            info = json.loads(path.read_text())
            run_model, run_function = info["model"], info["function"]
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            if warn:
                warn(f"warning: passing over {path}: unreadable ({type(err).__name__}: {err})")
            continue
        if function is not None and run_function != function:
            continue
        if model is not None and Path(str(run_model)).name != Path(model).name:
            continue
        runs.append(path.parent)
    return runs
