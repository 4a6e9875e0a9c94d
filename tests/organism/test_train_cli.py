"""The training loop (micro configuration: checks the loop, not accuracy) and the organism command."""

import json

import pytest

import torch

from heads.organism import main
from vlmheads.models import load_model

pytestmark = pytest.mark.e2e  # end-to-end runs of the command


def test_micro_training_run_writes_a_loadable_model(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--micro", "--out", str(run)]) == 0
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"] == "finished" and meta["seed"] == 0
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 3 and config["arch"]["text_layers"] == 4
    history = json.loads((run / "model" / "training.json").read_text())
    assert history["log"][-1]["step"] == 3
    assert all(torch.isfinite(torch.tensor(e["answer_loss"])) for e in history["log"])
    loaded = load_model(run / "model")
    assert loaded.geometry.n_heads == 8 and loaded.adapter.family == "llava"


def test_training_is_seeded(tmp_path):
    assert main(["train", "--micro", "--seed", "3", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--micro", "--seed", "3", "--out", str(tmp_path / "b")]) == 0
    a = load_model(tmp_path / "a" / "model").model.state_dict()
    b = load_model(tmp_path / "b" / "model").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_to_install_a_micro_model_or_overwrite_a_run(tmp_path, capsys):
    assert main(["train", "--micro", "--install"]) == 2
    assert "would replace the shipped organism" in capsys.readouterr().err
    (tmp_path / "done.txt").write_text("finished")
    assert main(["train", "--micro", "--out", str(tmp_path)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (tmp_path / "done.txt").read_text() == "finished"


def test_eval_command_writes_a_complete_run(tmp_path, capsys):
    run = tmp_path / "eval"
    assert main(["eval", "--n", "24", "--generate", "4", "--out", str(run)]) == 0
    for name in ("config.json", "metadata.json", "accuracy.csv", "examples.jsonl", "summary.json", "setting.json"):
        assert (run / name).exists(), name
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["model"]["family"] == "llava" and meta["dataset"]["name"] == "organism:controlled"
    out = capsys.readouterr().out
    assert "targets on prior-consistent scenes" in out and "the AdaptVis setting" in out
    setting = json.loads((run / "setting.json").read_text())  # strict JSON: no NaN
    assert setting["summary"]["n"] == 48  # 24 relational + 24 decision questions
    properties = [t["property"] for t in setting["targets"]]
    assert "image tokens' share of the prompt" in properties
    assert "relational_reasoning: consistent - violating gap" in properties


def test_eval_bad_model_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert "no model directory" in capsys.readouterr().err
