"""python -m heads.locate end to end: the organism, a saved tiny model, and bad input."""

from __future__ import annotations

import csv
import json
import re

import pytest

from heads.locate import main as locate_main
from vlmheads.testing import TINY_BUILDERS

FAST = ["--n", "8", "--random-draws", "2", "--batch-size", "8"]

pytestmark = pytest.mark.e2e  # end-to-end runs of the command

# checked against the competent organism's heads (the default organism is the prior-biased one, run by
# the bad-input catalogue and the README's first command); a later --model in argv still wins
COMPETENT = ["--model", "organism-competent"]


def main(argv):
    return locate_main([*COMPETENT, *argv])


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("locate") / "run"
    assert main(["--function", "spatial", "--out", str(out), *FAST]) == 0
    return out


def test_run_directory_holds_every_output(organism_run):
    for name in ("config.json", "metadata.json", "scores.csv", "heads.json", "headmap.html", "samples.jsonl"):
        assert (organism_run / name).is_file(), name
    meta = json.loads((organism_run / "metadata.json").read_text())
    assert meta["status"] == "finished" and meta["model"]["family"] == "llava"
    assert meta["dataset"]["name"] == "organism:decomposed" and "ablation" in meta["timings"]
    assert json.loads((organism_run / "config.json").read_text())["function"] == "spatial_perception"


def test_scores_cover_every_head_method_and_function(organism_run):
    rows = list(csv.DictReader((organism_run / "scores.csv").open()))
    methods = {r["method"] for r in rows}
    assert methods == {"ablation", "noising", "denoising", "attribution", "probe", "image_share", "image_entropy"}
    functions = {r["function"] for r in rows}
    assert len(functions) == 4
    assert len(rows) == len(methods) * len(functions) * 32  # organism: 4 layers x 8 heads
    one = [r for r in rows if r["method"] == "ablation" and r["function"] == "spatial_perception"]
    assert sorted(int(r["rank"]) for r in one) == list(range(1, 33))
    assert all(float(r["ci_low"]) <= float(r["score"]) + 1e-9 <= float(r["ci_high"]) + 2e-9 for r in one)
    assert {r["method"]: r["kind"] for r in rows} == {
        "ablation": "causal", "noising": "causal", "denoising": "causal", "attribution": "estimate",
        "probe": "descriptive", "image_share": "descriptive", "image_entropy": "descriptive"}
    assert all(r["ci_low"] == r["ci_high"] == "" for r in rows if r["kind"] == "descriptive")  # no made-up interval
    assert all(r["ci_low"] != "" and r["ci_high"] != "" for r in rows if r["kind"] != "descriptive")


def test_selected_heads_and_check(organism_run):
    heads = json.loads((organism_run / "heads.json").read_text())
    rows = [r for r in csv.DictReader((organism_run / "scores.csv").open())
            if r["method"] == "ablation" and r["function"] == "spatial_perception"]
    best = sorted(rows, key=lambda r: int(r["rank"]))[:heads["k"]]
    assert [[h["layer"], h["head"]] for h in heads["heads"]] == [[int(r["layer"]), int(r["head"])] for r in best]
    check = heads["check"]["functions"]["spatial_perception"]
    assert set(check) >= {"unablated", "selected_ablated", "random_ablated"}
    assert set(heads["summary"]["attribution_vs_exact_noising"]) == set(heads["summary"]["top_heads_by_function"])


def test_samples_list_what_the_located_heads_carry_item_by_item(organism_run):
    """samples.jsonl: every example once, the unmodified answer and the answer with the selected heads
    ablated, adding up to the check's accuracies function by function."""
    samples = [json.loads(line) for line in (organism_run / "samples.jsonl").read_text().splitlines()]
    check = json.loads((organism_run / "heads.json").read_text())["check"]["functions"]
    assert len({(s["function"], s["id"]) for s in samples}) == len(samples)  # a scene asks each function once
    assert {s["function"] for s in samples} == set(check)
    for function, c in check.items():
        mine = [s for s in samples if s["function"] == function]
        assert len(mine) == c["unablated"]["n"]
        for name, key in (("none", "unablated"), ("ablate", "selected_ablated")):
            assert sum(s["methods"][name]["correct"] for s in mine) / len(mine) == pytest.approx(
                c[key]["accuracy"], abs=1e-4)
        assert all(s["methods"]["none"]["correct"] == (s["methods"]["none"]["prediction"] == s["answer"])
                   and set(s["methods"]) == {"none", "ablate"} for s in mine)


def test_headmap_is_self_contained_with_menus(organism_run):
    html = (organism_run / "headmap.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing loaded from the network
    assert 'id="hm-method"' in html and 'id="hm-function"' in html
    assert "image attention share" in html and "95% CI" in html
    assert len(html) > 1_000_000  # plotly.js is inlined: works offline


@pytest.mark.parametrize("family", list(TINY_BUILDERS))
def test_locate_and_intervene_on_every_family_tiny_model(tmp_path, family):
    """A tiny random model of each family, saved with its real processor class, through both commands."""
    from heads.intervene import main as intervene_main
    from heads.tiny import main as tiny_main

    assert tiny_main([family, str(tmp_path / "tiny")]) == 0  # the user's way to make one
    out = tmp_path / "run"
    assert main(["--model", str(tmp_path / "tiny"), "--top-k", "2", "--methods", "ablation,patching,attention,dla",
                 "--out", str(out), *FAST]) == 0
    heads = json.loads((out / "heads.json").read_text())
    meta = json.loads((out / "metadata.json").read_text())
    assert heads["k"] == 2 and heads["skipped"] == {} and meta["model"]["family"] == family
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert {r["method"] for r in rows} == {"ablation", "noising", "denoising", "image_share", "image_entropy", "dla"}
    assert set(heads["summary"]["head_roles"]["heads"]) == {f"L{h['layer']}H{h['head']}" for h in heads["heads"]}
    shares = [float(r["score"]) for r in rows if r["method"] == "image_share"]
    assert all(0 <= s <= 1 for s in shares) and max(shares) > 0
    # the prior locator too: a random model errs on violating scenes, so every head gets its flip / break / net
    prior = tmp_path / "prior"
    assert main(["--model", str(tmp_path / "tiny"), "--target", "prior", "--n", "24", "--random-draws", "1",
                 "--batch-size", "24", "--out", str(prior)]) == 0
    rows = list(csv.DictReader((prior / "scores.csv").open()))
    g = meta["model"]["geometry"]
    for method in ("prior_flip", "prior_break", "prior_net", "prior_flip_all", "prior_break_all", "prior_net_all"):
        scores = [float(r["score"]) for r in rows if r["method"] == method and r["function"] == "relational_reasoning"]
        assert len(scores) == g["n_layers"] * g["n_heads"] and all(-1 <= s <= 1 for s in scores), method
    assert json.loads((prior / "heads.json").read_text())["summary"]["prior"]["relational_reasoning"][
        "prior_driven_errors"] > 0
    methods = ["none", "scalingvis", "adaptvis", "head_adaptvis", "emphasize", "ablate"]
    iv = tmp_path / "iv"
    assert intervene_main(["--model", str(tmp_path / "tiny"), "--heads-from", str(out), "--batch-size", "32",
                           "--dataset", "organism:controlled", *[a for m in methods for a in ("--method", m)],
                           "--out", str(iv)]) == 0
    results = [r for r in csv.DictReader((iv / "results.csv").open()) if r["group"] == "all"]
    assert [r["method"] for r in results] == methods
    assert json.loads((iv / "metadata.json").read_text())["model"]["family"] == family


@pytest.mark.parametrize("argv,message", [
    (["--top-k", "33"], "larger than the number of heads"),
    (["--function", "telepathy"], "unknown cognitive function"),
    (["--methods", "ablation,magic"], "unknown locate method"),
    (["--function", "math"], "has no 'math_reasoning' questions"),
    (["--model", "/nonexistent/model"], "no model directory"),
])
def test_bad_input_is_refused_with_a_reason(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "r"), *FAST]) == 2
    assert message in capsys.readouterr().err
    meta = tmp_path / "r" / "metadata.json"
    if meta.exists():  # refused after the run started: the directory says so
        assert json.loads(meta.read_text())["status"].startswith("failed")


def test_existing_run_is_never_overwritten(organism_run, capsys):
    before = (organism_run / "scores.csv").read_text()
    assert main(["--out", str(organism_run), *FAST]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (organism_run / "scores.csv").read_text() == before


def test_real_dataset_format_with_text_counterfactuals(tmp_path):
    """A CogVSR decomposition file (the format real decompositions come in): no re-rendered images, so
    patching uses text pairs (the two objects swapped), which exist for relational questions only."""
    from heads._cli import model_rendering
    from vlmheads.data.cogvsr import write_organism_cogvsr
    from vlmheads.world.scenes import Rendering

    path = write_organism_cogvsr(tmp_path / "data", n=12, seed=2,  # as the model these runs use sees them
                                 rendering=Rendering.from_dict(model_rendering(COMPETENT[1])))
    out = tmp_path / "run"
    assert main(["--dataset", f"cogvsr:{path}", "--out", str(out), *FAST]) == 0
    heads = json.loads((out / "heads.json").read_text())
    assert heads["skipped"] == {}
    pairs = heads["summary"]["counterfactual_pairs"]
    assert pairs["kind"] == "text: swap the two objects" and set(pairs["pairs"]) == {"relational_reasoning"}
    assert pairs["pairs"]["relational_reasoning"] == 8
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert {r["function"] for r in rows if r["method"] == "noising"} == {"relational_reasoning"}
    assert {r["method"] for r in rows} == {"ablation", "noising", "denoising", "attribution", "probe",
                                           "image_share", "image_entropy"}


def _ctrl_c_at_the_third_stage(monkeypatch, method: str) -> list:
    """Make ``method``'s third stage raise KeyboardInterrupt (as Ctrl-C would); returns the functions called."""
    from dataclasses import replace

    import vlmheads.locate as locate

    real, calls = locate.LOCATE_METHODS[method].run, []

    def then_ctrl_c(state, function):
        calls.append(function)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(state, function)

    monkeypatch.setitem(locate.LOCATE_METHODS._items, method, replace(locate.LOCATE_METHODS[method], run=then_ctrl_c))
    return calls


def test_interrupted_run_resumes_to_the_same_scores(tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle keeps every finished stage; --resume loads them, runs the rest, and ends with the
    scores of an uninterrupted run."""
    argv = ["--function", "spatial", *FAST, "--methods", "ablation,patching,probe"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    run = tmp_path / "cut"
    _ctrl_c_at_the_third_stage(monkeypatch, "patching")
    capsys.readouterr()
    assert main([*argv, "--out", str(run)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted: 6 finished stage(s) kept") and f"--resume {run}" in last
    assert json.loads((run / "metadata.json").read_text())["status"] == "interrupted"
    assert len(list((run / "stages").glob("*.pt"))) == 6 and not (run / "scores.csv").exists()
    monkeypatch.undo()
    assert main(["--resume", str(run)]) == 0
    assert (run / "scores.csv").read_text() == (tmp_path / "whole" / "scores.csv").read_text()
    resumed, whole = (json.loads((d / "heads.json").read_text()) for d in (run, tmp_path / "whole"))
    assert resumed["summary"].pop("resumed_stages") == [f"ablation/{f}" for f in sorted(resumed["summary"]["base_metric"])] + \
        ["patching/decision_making", "patching/low_level_visual_perception"]
    assert resumed == whole
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"] == "finished" and meta["resumed"]["previous_status"] == "interrupted"
    assert not (run / "stages").exists()
    assert main(["--resume", str(run)]) == 2  # finished: nothing to resume
    assert "already finished" in capsys.readouterr().err


def test_resume_recomputes_a_corrupted_stage_and_ends_with_the_uninterrupted_scores(tmp_path, capsys, monkeypatch):
    """One flipped byte in a saved stage loads fine with torch and used to change the final scores.csv: the
    checksum catches it, the stage is recomputed with a warning naming it, the scores are the whole run's."""
    argv = ["--function", "spatial", *FAST, "--methods", "ablation"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    calls = _ctrl_c_at_the_third_stage(monkeypatch, "ablation")
    run = tmp_path / "cut"
    assert main([*argv, "--out", str(run)]) == 130
    monkeypatch.undo()
    stage = sorted((run / "stages").glob("*.pt"))[0]
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the saved score tensors
    stage.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"warning: stage stages/{stage.name} not used: {stage.name} does not match its checksum" in out
    assert (run / "scores.csv").read_text() == (tmp_path / "whole" / "scores.csv").read_text()
    assert json.loads((run / "heads.json").read_text())["summary"]["resumed_stages"] == \
        [f"ablation/{calls[1]}"]  # the one intact stage


@pytest.mark.parametrize("change", ["config", "code"])
def test_resume_after_the_config_or_the_code_changed_recomputes_every_stage(tmp_path, capsys, monkeypatch, change):
    """config.json edited (random draws 2 -> 3) or the library's source changed since the stages were saved:
    no old stage is mixed in; each is recomputed with a warning naming why, and the scores are those of a
    whole run under the config as it now reads."""
    import vlmheads.runs

    argv = ["--function", "spatial", *FAST, "--methods", "ablation"]
    whole_argv = [*argv, "--random-draws", "3"] if change == "config" else argv
    assert main([*whole_argv, "--out", str(tmp_path / "whole")]) == 0
    _ctrl_c_at_the_third_stage(monkeypatch, "ablation")
    run = tmp_path / "cut"
    assert main([*argv, "--out", str(run)]) == 130
    monkeypatch.undo()
    if change == "config":
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "random_draws": 3}, indent=2))
    else:
        monkeypatch.setitem(vlmheads.runs._CODE, "digest", "0123456789abcdef")
    capsys.readouterr()
    assert main(["--resume", str(run)]) == 0
    why = "was saved by a run with another config" if change == "config" else \
        "was computed by another version of the code (vlmheads source"
    warned = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: stage")]
    assert len(warned) == 2 and all(why in line for line in warned), warned
    assert "resumed_stages" not in json.loads((run / "heads.json").read_text())["summary"]
    assert (run / "scores.csv").read_text() == (tmp_path / "whole" / "scores.csv").read_text()


def test_screen_and_verify_select_the_exact_run_s_heads(tmp_path, organism_run, capsys):
    """--screen attribution on the organism: every head estimated, 12 verified exactly; the selection and the
    verified heads' scores are the all-head exact run's."""
    out = tmp_path / "screened"
    assert main(["--function", "spatial", "--screen", "attribution", "--verify", "12", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "exact ablation of the top 12 (--screen attribution" in printed
    assert "of the 12 verified heads carry 80% of their ablation effect (the other 20 were screened out" in printed
    screened, exact = (json.loads((d / "heads.json").read_text()) for d in (out, organism_run))
    assert screened["heads"] and [h["layer"] for h in screened["heads"]] == [h["layer"] for h in exact["heads"]]
    assert [h["head"] for h in screened["heads"]] == [h["head"] for h in exact["heads"]]
    assert screened["summary"]["screen"] == {"method": "attribution", "verify": 12, "reason": "--screen attribution"}
    rows = {(r["method"], r["function"], r["layer"], r["head"]): r for r in csv.DictReader((out / "scores.csv").open())}
    base = {(r["method"], r["function"], r["layer"], r["head"]): r
            for r in csv.DictReader((organism_run / "scores.csv").open())}
    verified = screened["summary"]["verified_heads"]["spatial_perception"]
    assert len(verified) == 12
    for layer, head in verified:
        key = ("ablation", "spatial_perception", str(layer), str(head))
        assert abs(float(rows[key]["score"]) - float(base[key]["score"])) < 1e-4
    unverified = [r for k, r in rows.items() if k[0] == "ablation" and k[1] == "spatial_perception"
                  and [int(k[2]), int(k[3])] not in verified]
    assert len(unverified) == 20 and all(r["score"] == "nan" for r in unverified)
    assert {k[0] for k in rows} >= {"ablation_screen"}
    assert screened["summary"]["sparsity_80_of_measured_heads"]["ablation|spatial_perception"] == 12


def test_redundancy_is_an_opt_in_method(tmp_path):
    out = tmp_path / "run"
    assert main(["--function", "spatial", *FAST, "--methods", "ablation,redundancy", "--select-by", "redundancy",
                 "--out", str(out)]) == 0
    heads = json.loads((out / "heads.json").read_text())
    assert heads["select_by"] == "redundancy" and set(heads["summary"]["redundancy_fit"]) == \
        set(heads["summary"]["base_metric"])
    rows = [r for r in csv.DictReader((out / "scores.csv").open()) if r["method"] == "redundancy"]
    assert len(rows) == 4 * 32 and all(float(r["ci_low"]) <= float(r["score"]) <= float(r["ci_high"]) for r in rows)
    best = min(rows, key=lambda r: int(r["rank"]))
    assert (int(best["layer"]), int(best["head"])) in {(0, 4), (2, 1), (2, 3)}  # the exact ablation's heads


def test_a_smoke_run_of_one_example_per_function_finishes(tmp_path, capsys):
    """--n 1 (a smoke run on a new model): every stage that can say something with one example runs; the
    probe, which needs two per function, is skipped with its reason instead of failing the run."""
    out = tmp_path / "smoke"
    assert main(["--function", "spatial", "--n", "1", "--random-draws", "1", "--out", str(out)]) == 0
    assert "skipped: probe: probing needs at least two examples of each function (--n 2 or more)" in \
        capsys.readouterr().out
    located = json.loads((out / "heads.json").read_text())
    assert located["skipped"]["probe"].startswith("probing needs at least two") and (out / "scores.csv").is_file()
    assert main(["--function", "spatial", "--n", "0", "--out", str(tmp_path / "none")]) == 2


def test_direct_logit_attribution_scores_every_head_and_labels_the_located_ones(tmp_path):
    """--methods ablation,dla: DLA rows for every function beside ablation's, and each selected head labelled
    writing or routing (its direct effect against its ablation effect) in heads.json, the printout and the
    head map; --select-by dla selects by it."""
    out = tmp_path / "run"
    assert main(["--function", "spatial", *FAST, "--methods", "ablation,dla", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    functions = {r["function"] for r in rows}
    assert {r["function"] for r in rows if r["method"] == "dla"} == functions and len(functions) == 4
    info = json.loads((out / "heads.json").read_text())
    roles = info["summary"]["head_roles"]
    assert roles["by"] == "dla vs ablation"
    assert set(roles["heads"]) == {f"L{h['layer']}H{h['head']}" for h in info["heads"]}
    dla = {(int(r["layer"]), int(r["head"])): float(r["score"]) for r in rows
           if r["method"] == "dla" and r["function"] == "spatial_perception"}
    for name, role in roles["heads"].items():
        layer, head = map(int, name[1:].split("H"))
        assert role["direct"] == pytest.approx(dla[(layer, head)], abs=1e-4)
        assert role["role"] == ("writing" if role["direct"] / role["total"] >= 0.5 else "routing")
    assert "(W writing, R routing)" in (out / "headmap.html").read_text()
    assert main(["--function", "spatial", *FAST, "--methods", "dla", "--select-by", "dla",
                 "--out", str(tmp_path / "by-dla")]) == 0
    assert json.loads((tmp_path / "by-dla" / "heads.json").read_text())["select_by"] == "dla"


def test_target_prior_scores_flips_and_breaks_on_the_default_organism(tmp_path, capsys):
    """--target prior on the prior-biased organism: the heads whose ablation flips prior-driven answers, net of
    the grounded answers it breaks, at the answer position and at every position; on the competent organism
    (no prior-driven errors) a clear refusal, not a table of NaNs."""
    out = tmp_path / "run"
    assert main(["--model", "organism", "--target", "prior", "--n", "48", "--random-draws", "1", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["methods"], config["select_by"], config["function"]) == \
        (["ablation", "prior", "dla"], "prior_net", "relational_reasoning")
    rows = list(csv.DictReader((out / "scores.csv").open()))
    target = {(r["method"], int(r["layer"]), int(r["head"])): float(r["score"]) for r in rows
              if r["function"] == "relational_reasoning"}
    for suffix in ("", "_all"):
        for (method, l, h), net in [(k, v) for k, v in target.items() if k[0] == f"prior_net{suffix}"]:
            flip, broken = target[(f"prior_flip{suffix}", l, h)], target[(f"prior_break{suffix}", l, h)]
            assert 0 <= flip <= 1 and 0 <= broken <= 1 and net == pytest.approx(flip - broken, abs=1e-4)
    info = json.loads((out / "heads.json").read_text())
    prior = info["summary"]["prior"]["relational_reasoning"]
    assert prior["prior_driven_errors"] > 0 and prior["violating"] + prior["grounded"] == 48
    best = max(((l, h) for m, l, h in target if m == "prior_net"), key=lambda lh: target[("prior_net", *lh)])
    assert [info["heads"][0]["layer"], info["heads"][0]["head"]] == list(best)
    printed = capsys.readouterr().out
    assert "prior-driven errors flipped to the grounded answer" in printed
    # samples.jsonl: the selected heads zeroed at the answer position, item by item; with one head selected,
    # the prior-driven errors it fixes are its flip score
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    driven = [s for s in samples if s["function"] == "relational_reasoning" and s["prior"] == "violating"
              and not s["methods"]["none"]["correct"]]
    assert len(driven) == prior["prior_driven_errors"] and all("suppress" in s["methods"] for s in samples)
    if len(info["heads"]) == 1:
        flipped = sum(s["methods"]["suppress"]["correct"] for s in driven) / len(driven)
        assert flipped == pytest.approx(target[("prior_flip", *best)], abs=1e-4)
    # act on them: suppress the located prior heads at the answer position, reported per prior group
    from heads.intervene import main as intervene_main

    iv = tmp_path / "iv"
    assert intervene_main(["--model", "organism", "--heads-from", str(out), "--dataset", "organism:controlled",
                           "--method", "none", "--method", "suppress", "--n", "24", "--random-heads", "2",
                           "--out", str(iv)]) == 0
    applied = json.loads((iv / "interventions.json").read_text())["organism:controlled"]["suppress"]
    assert applied == [{"type": "Suppress", "heads": sorted([h["layer"], h["head"]] for h in info["heads"]),
                        "factor": 0.0}]
    groups = {(r["method"], r["group"]) for r in csv.DictReader((iv / "results.csv").open())}
    assert ("suppress", "prior=violating") in groups and ("none", "prior=violating") in groups
    # its control: the same suppression on 2 draws of as many heads that were not located
    assert ("suppress (random heads)", "prior=violating") in groups and ("none (random heads)", "all") not in groups
    drawn = json.loads((iv / "metadata.json").read_text())["controls"]["organism:controlled"]["suppress (random heads)"][
        "heads"]
    located = {(h["layer"], h["head"]) for h in info["heads"]}
    assert len(drawn) == 2 and all(len(d) == len(located) and not located & {tuple(h) for h in d} for d in drawn)
    capsys.readouterr()
    assert main(["--target", "prior", "--n", "8", "--random-draws", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "competent")]) == 2
    assert "0 prior-driven errors of" in capsys.readouterr().err
