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
    assert main(["train", "--recipe", "prior", "--install", "--out", str(tmp_path / "p")]) == 2
    assert "makes no shipped organism" in capsys.readouterr().err and not (tmp_path / "p").exists()
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


@pytest.mark.parametrize("extra", [{}, {"text_only_batch": 2, "prior_free_functions": ("spatial_perception",)}],
                         ids=["plain", "text-only-and-prior-free"])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, extra):
    """A run stopped after its first checkpoint and resumed ends bit-identical to an uninterrupted one
    (the text-only questions' generator is part of the saved state)."""
    from dataclasses import replace

    from vlmheads.organism.train import MICRO_CONFIG, train

    config = replace(MICRO_CONFIG, steps=4, checkpoint_every=2, eval_every=2, **extra)
    train(config, tmp_path / "whole" / "model", checkpoint_dir=tmp_path / "whole" / "checkpoint", log=lambda m: None)
    history = train(config, tmp_path / "cut" / "model", checkpoint_dir=tmp_path / "cut" / "checkpoint",
                    stop_after=3, log=lambda m: None)  # interrupted during step 3; its checkpoint is step 2
    assert not (tmp_path / "cut" / "model").exists() and [e["step"] for e in history["log"]] == [2]
    train(config, tmp_path / "cut" / "model", checkpoint_dir=tmp_path / "cut" / "checkpoint", resume=True,
          log=lambda m: None)
    a = load_model(tmp_path / "whole" / "model").model.state_dict()
    b = load_model(tmp_path / "cut" / "model").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    whole = json.loads((tmp_path / "whole" / "model" / "training.json").read_text())
    cut = json.loads((tmp_path / "cut" / "model" / "training.json").read_text())
    assert [e["accuracy"] for e in whole["log"]] == [e["accuracy"] for e in cut["log"]]


def test_resume_command_and_its_refusals(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--micro", "--checkpoint-every", "1", "--out", str(run)]) == 0
    assert (run / "checkpoint" / "state.pt").is_file()
    assert main(["train", "--resume", str(run)]) == 2
    assert "already finished; nothing to resume" in capsys.readouterr().err
    meta = json.loads((run / "metadata.json").read_text())
    meta["status"] = "interrupted"  # as a Ctrl-C leaves it
    (run / "metadata.json").write_text(json.dumps(meta))
    assert main(["train", "--resume", str(run)]) == 0  # the last checkpoint is the last step: it only saves
    assert json.loads((run / "metadata.json").read_text())["status"] == "finished"
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_prior_recipe_micro_run_records_its_rendering_and_loaders_use_it(tmp_path):
    """--recipe prior fine-tunes organism-competent on weakened images; the saved model declares the
    rendering, and the commands draw the organism's scenes that way for it (read before it loads)."""
    from heads._cli import model_rendering
    from vlmheads.organism.train import PRIOR_RENDERING

    run = tmp_path / "prior"
    assert main(["train", "--micro", "--recipe", "prior", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["init_from"] == "organism-competent" and config["prior_strength"] == 0.99
    assert json.loads((run / "model" / "config.json").read_text())["vlmheads_rendering"] == PRIOR_RENDERING
    assert model_rendering(str(run / "model")) == PRIOR_RENDERING and model_rendering("organism-competent") is None
    assert load_model(run / "model").rendering.contrast == PRIOR_RENDERING["contrast"]
    ev = tmp_path / "eval"
    assert main(["eval", "--model", str(run / "model"), "--n", "8", "--generate", "0", "--out", str(ev)]) == 0
    assert json.loads((ev / "config.json").read_text())["rendering"] == PRIOR_RENDERING


def test_setting_recipes_micro_runs_carry_the_model_onto_the_wide_canvas(tmp_path, capsys):
    """setting-base warm-starts organism-competent's weights into 144-px images (9x9 16-px patches, 81 image
    tokens); setting fine-tunes such a run on the prior and the weakened wide rendering, which the saved
    model declares, so every loader draws 144-px scenes for it."""
    from heads._cli import model_rendering
    from vlmheads.data import organism_examples
    from vlmheads.organism.train import SETTING_RENDERING

    assert main(["train", "--micro", "--recipe", "setting", "--out", str(tmp_path / "x")]) == 2
    assert "pass --init" in capsys.readouterr().err and not (tmp_path / "x").exists()
    base = tmp_path / "base"
    assert main(["train", "--micro", "--recipe", "setting-base", "--out", str(base)]) == 0
    vision = json.loads((base / "model" / "config.json").read_text())["vision_config"]
    assert (vision["image_size"], vision["patch_size"]) == (144, 16)
    run = tmp_path / "setting"
    assert main(["train", "--micro", "--recipe", "setting", "--init", str(base / "model"), "--out", str(run)]) == 0
    assert model_rendering(str(run / "model")) == SETTING_RENDERING
    loaded = load_model(run / "model")
    assert loaded.rendering.image_size == 144
    example = organism_examples(1, seed=0, function="relational_reasoning", rendering=loaded.rendering)[0]
    enc = loaded.processor(text=[loaded.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.prompt}]}],
        add_generation_prompt=True, tokenize=False)], images=[example.image], return_tensors="pt")
    assert example.image.size == (144, 144) and int(loaded.image_token_mask(enc).sum()) == 81
    ev = tmp_path / "eval"
    assert main(["eval", "--model", str(run / "model"), "--n", "8", "--generate", "0", "--out", str(ev)]) == 0
    setting = json.loads((ev / "setting.json").read_text())["summary"]
    assert setting["prompt_image_share"] > 0.75  # 81 image tokens of about 104
