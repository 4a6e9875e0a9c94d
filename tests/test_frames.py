"""The researcher-facing tables: a locate run's scores, an intervene run's results and a flow run's tables as
pandas DataFrames, the same numbers as the CSV files the runs write."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from vlmheads.errors import UserError
from vlmheads.scores import HeadScores


def _scores() -> HeadScores:
    score = torch.tensor([[0.5, 2.0, -1.0], [float("nan"), 0.25, 3.0]])  # [L=2, H=3], one head not computed
    run = HeadScores(model="m", function="spatial_perception", select_by="ablation",
                     geometry={"n_layers": 2, "n_heads": 3})
    run.scores[("ablation", "spatial_perception")] = {"score": score, "ci_low": score - 1, "ci_high": score + 1}
    run.scores[("probe", "spatial_perception")] = {"score": -score, "ci_low": -score, "ci_high": -score}
    return run


def test_a_locate_runs_frame_holds_every_score_with_its_rank_as_scores_csv_does(tmp_path):
    run = _scores()
    frame = run.frame()
    assert list(frame.columns) == ["layer", "head", "method", "function", "kind", "score", "ci_low", "ci_high", "rank"]
    assert frame.groupby("method")["kind"].first().to_dict() == {"ablation": "causal", "probe": "descriptive"}
    assert len(frame) == 2 * 6
    ablation = frame[frame.method == "ablation"].set_index(["layer", "head"])
    assert ablation.loc[(1, 2), "rank"] == 1 and ablation.loc[(0, 1), "rank"] == 2  # 3.0 first, then 2.0
    assert math.isnan(ablation.loc[(1, 0), "score"]) and ablation.loc[(0, 0), "ci_high"] == 1.5
    run.save(tmp_path)
    written = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert [int(r["rank"]) for r in written] == frame["rank"].tolist()
    for r, (_, row) in zip(written, frame.iterrows()):
        assert (int(r["layer"]), int(r["head"]), r["method"]) == (row["layer"], row["head"], row["method"])
        assert float(r["score"]) == pytest.approx(row["score"], abs=1e-6, nan_ok=True)
    again = HeadScores.load(tmp_path).frame()
    assert again[["layer", "head", "method", "rank"]].equals(frame[["layer", "head", "method", "rank"]])


def test_an_intervene_runs_results_frame_parses_the_params(tmp_path):
    from vlmheads.data import organism_examples
    from vlmheads.intervene import InterveneConfig, _rows, results_frame
    from vlmheads.runs import write_csv

    examples = organism_examples(8, seed=0, function="relational", split="controlled")
    correct = torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1])
    config = InterveneConfig(bootstrap=50)
    rows = _rows(config, "organism:controlled", "none", correct, examples, float("nan"), {}) + \
        _rows(config, "organism:controlled", "emphasize", correct, examples, 0.75, {"gamma": 2.0, "k": 3})
    write_csv(tmp_path / "results.csv", rows)
    frame = results_frame(tmp_path)
    overall = frame[frame.group == "all"].set_index("method")
    assert overall.loc["none", "accuracy"] == 0.75 and overall.loc["none", "n"] == 8
    assert math.isnan(overall.loc["none", "val_accuracy"]) and overall.loc["emphasize", "val_accuracy"] == 0.75
    assert overall.loc["emphasize", "params"] == {"gamma": 2.0, "k": 3} and overall.loc["none", "params"] == {}
    assert len(frame) == len(rows)
    with pytest.raises(UserError, match="no results.csv"):
        results_frame(tmp_path / "nothing")


def test_a_flow_runs_frames_are_its_tables(tmp_path):
    from vlmheads.flow.run import flow_frames
    from vlmheads.runs import write_csv

    write_csv(tmp_path / "knockout.csv", [{"edge": "image->last", "layer_start": 0, "layer_end": 1, "function": "f",
                                           "metric": "accuracy", "drop": 0.25, "ci_low": 0.0, "ci_high": 0.5, "n": 8}])
    write_csv(tmp_path / "probes.csv", [{"site": "decoder", "layer": 1, "position": "last", "accuracy": 0.9,
                                         "ci_low": 0.8, "ci_high": 1.0, "chance": 0.25, "n_test": 10}])
    frames = flow_frames(tmp_path)
    assert sorted(frames) == ["knockout", "probes"]  # no rollout.csv: not in the run
    assert frames["knockout"].loc[0, "drop"] == 0.25 and frames["probes"].loc[0, "position"] == "last"
    with pytest.raises(UserError, match="knockout.csv"):
        flow_frames(tmp_path / "nothing")
