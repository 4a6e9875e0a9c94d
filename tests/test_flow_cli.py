"""python -m heads.flow end to end on the organism."""

from __future__ import annotations

import csv
import json

import pytest

from heads.flow import main as flow_main

# checked against the competent organism's heads and knockout effects (the default organism is the
# prior-biased one); a later --model in argv still wins
COMPETENT = ["--model", "organism-competent"]


def main(argv):
    return flow_main([*COMPETENT, *argv])

pytestmark = pytest.mark.e2e  # end-to-end runs of the command


def test_flow_writes_knockout_and_probes(tmp_path, capsys):
    from heads.locate import main as locate_main

    located = tmp_path / "located"
    assert locate_main([*COMPETENT, "--function", "spatial", "--n", "8", "--methods", "ablation",
                        "--random-draws", "1", "--top-k", "2", "--out", str(located)]) == 0
    out = tmp_path / "run"
    assert main(["--n", "32", "--window", "2", "--heads-from", str(located), "--out", str(out)]) == 0
    # spatial heads drawn on relational questions, deliberately (the README's competent-organism run)
    captured = capsys.readouterr()
    assert f"note: drawing spatial_perception heads from {located} on relational_reasoning questions" in captured.err
    for name in ("config.json", "metadata.json", "knockout.csv", "probes.csv", "rollout.csv", "flow.html"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "knockout.csv").open()))
    spans = {(r["layer_start"], r["layer_end"]) for r in rows}
    assert spans == {("0", "1"), ("1", "2"), ("2", "3"), ("0", "3")}  # windows of 2 of 4 layers, and all
    assert {r["edge"] for r in rows} == {"image->answer", "image->question", "question->answer", "object->answer",
                                         "background->answer"}
    assert all(float(r["ci_low"]) <= float(r["drop"]) <= float(r["ci_high"]) for r in rows)
    every = {r["metric"]: float(r["drop"]) for r in rows if r["edge"] == "image->answer" and r["layer_start"] == "0"
             and r["layer_end"] == "3"}
    assert every["accuracy"] > 0.4 and every["logit_diff"] > 0
    probes = list(csv.DictReader((out / "probes.csv").open()))
    answer = [float(r["accuracy"]) for r in probes if r["site"] == "decoder" and r["position"] == "answer"]
    assert len(answer) == 5 and answer[-1] > 0.8  # readable at the answer position by the last layer
    assert {r["site"] for r in probes} == {"vision", "decoder"}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "finished" and meta["dataset"]["function"] == "relational_reasoning"
    agreement = meta["rollout_agreement"]["spearman_rollout"]
    assert -1 <= agreement["ci_low"] <= agreement["accuracy"] <= agreement["ci_high"] <= 1
    patches = list(csv.DictReader((out / "rollout.csv").open()))
    assert len(patches) == 16 and all(r["flow"] != "" for r in patches)  # organism: 16 patches, flow computed
    printed = captured.out
    assert "knockout: accuracy drop" in printed and "located heads drawn on the images: L0H4, " in printed
    assert json.loads((out / "config.json").read_text())["heads"] == [[0, 4], [2, 1]]
    html = (out / "flow.html").read_text()
    assert "L0H4 | correct" in html and 'data-view="located heads on the image"' in html


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_next", "qwen3_vl", "internvl"])
def test_flow_runs_on_tiny_families(tmp_path, family):
    """Qwen2-VL (merged patches: no vision probes), LLaVA-NeXT and InternVL (tiles: no square token grid, so
    the object/background edges and probes are skipped with the reason) and Qwen3-VL (deepstack) still run
    end to end."""
    from vlmheads.testing import TINY_BUILDERS, tiny_processor

    model, _, processor = TINY_BUILDERS[family](gqa=True)
    model.save_pretrained(tmp_path / "tiny")
    (processor or tiny_processor(family)).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "run"
    assert main(["--model", str(tmp_path / "tiny"), "--n", "8", "--out", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    rows = list(csv.DictReader((out / "knockout.csv").open()))
    assert {r["edge"] for r in rows} >= {"image->answer", "question->answer"}
    if family in ("llava_next", "internvl"):
        assert "object->answer" in meta["notes"] and "square grid" in meta["notes"]["object->answer"]
    assert (out / "flow.html").stat().st_size > 1_000_000


def test_no_rollout_skips_the_pass_per_image_patch(tmp_path, monkeypatch):
    """At true widths the rollout's per-patch knockout is a pass per image token: --no-rollout skips it."""
    import vlmheads.flow.run as flow_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the rollout ran")

    monkeypatch.setattr(flow_run, "rollout_batch", must_not_run)
    out = tmp_path / "run"
    assert main(["--n", "8", "--window", "4", "--edges", "image->answer", "--no-probes", "--no-rollout",
                 "--out", str(out)]) == 0
    assert not (out / "rollout.csv").exists() and (out / "knockout.csv").is_file() and (out / "flow.html").is_file()
    meta, config = (json.loads((out / name).read_text()) for name in ("metadata.json", "config.json"))
    assert meta["notes"]["rollout"] == "skipped: --no-rollout" and config["rollout"] is False


def test_interrupted_flow_resumes_to_the_same_outputs(tmp_path, capsys, monkeypatch, ctrl_c_at):
    """Ctrl-C in the rollout keeps every finished knockout cell, the probes and the first batch's rollout;
    --resume loads them, runs the rest, and ends with the files of an uninterrupted run."""
    import vlmheads.flow.run as flow_run

    argv = ["--n", "16", "--batch-size", "8", "--window", "4", "--edges", "image->answer,question->answer"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    ctrl_c_at(flow_run, "rollout_batch", 2)
    run = tmp_path / "cut"
    capsys.readouterr()
    assert main([*argv, "--out", str(run)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    stages = sorted(p.name for p in (run / "stages").glob("*.pt"))
    assert stages == ["knockout-image-to-answer-L0-3.pt", "knockout-question-to-answer-L0-3.pt", "probes.pt",
                      "rollout-batch0.pt"], stages
    assert last.startswith("interrupted: 4 finished stage(s) kept") and f"heads.flow --resume {run}" in last
    monkeypatch.undo()
    assert main(["--resume", str(run)]) == 0
    for name in ("knockout.csv", "probes.csv", "rollout.csv"):
        assert (run / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"] == "finished" and meta["resumed_stages"] == [s.removesuffix(".pt") for s in stages]
    assert meta["rollout_agreement"] == json.loads((tmp_path / "whole" / "metadata.json").read_text())["rollout_agreement"]
    assert not (run / "stages").exists()
    assert main(["--resume", str(run)]) == 2  # finished: nothing to resume


def test_a_smoke_run_of_one_example_finishes(tmp_path):
    """--n 1: knockout, rollout and the page on one example (the probes need more and say so)."""
    out = tmp_path / "smoke"
    assert main(["--n", "1", "--edges", "image->answer", "--out", str(out)]) == 0
    assert (out / "knockout.csv").is_file() and (out / "rollout.csv").is_file() and (out / "flow.html").is_file()
    assert "probes" in json.loads((out / "metadata.json").read_text())["notes"]
