"""python -m heads.intervene end to end on the organism, with a locate run made here, and bad input."""

from __future__ import annotations

import csv
import json

import pytest

from heads.intervene import main as intervene_main
from heads.locate import main as _locate_main

# these runs are checked against the competent organism's located heads and accuracies (the default
# organism is the prior-biased one); a later --model in argv still wins
COMPETENT = ["--model", "organism-competent"]


def main(argv):
    return intervene_main([*COMPETENT, *argv])


def locate_main(argv):
    return _locate_main([*COMPETENT, *argv])

pytestmark = pytest.mark.e2e  # end-to-end runs of the command


@pytest.fixture(scope="module")
def locate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("loc") / "run"
    assert locate_main(["--function", "spatial", "--n", "8", "--methods", "ablation", "--random-draws", "1",
                        "--out", str(out)]) == 0
    return out


def test_compares_methods_on_test_split_with_intervals(tmp_path, locate_run):
    out = tmp_path / "iv"
    argv = ["--heads-from", str(locate_run), "--emphasize", "top-2", "--dataset", "organism:controlled",
            "--method", "none", "--method", "scalingvis", "--method", "head_adaptvis", "--method", "emphasize",
            "--method", "ablate", "--out", str(out)]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    overall = {r["method"]: r for r in rows if r["group"] == "all"}
    assert list(overall) == ["none", "scalingvis", "head_adaptvis", "emphasize", "ablate"]
    assert all(int(r["n"]) == 320 for r in overall.values())  # the 80% test split of 400
    assert all(float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"]) for r in overall.values())
    assert json.loads(overall["scalingvis"]["params"]) == {"alpha": 0.8}  # published default without --sweep
    assert json.loads(overall["emphasize"]["params"]) == {"gamma": 2.0, "k": 2}
    assert float(overall["ablate"]["accuracy"]) < float(overall["none"]["accuracy"]) - 0.2
    assert {r["group"] for r in rows} >= {"prior=consistent", "prior=violating", "relation=left"}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["locate_run"]["path"] == str(locate_run)
    assert len(meta["locate_run"]["heads"]) == 3 and meta["locate_run"]["k_by_method"] == {"emphasize": 2}
    applied = json.loads((out / "interventions.json").read_text())["organism:controlled"]
    assert applied["emphasize"] == [{"type": "Emphasize", "heads": [[0, 4], [2, 1]], "gamma": 2.0}]
    assert applied["head_adaptvis"][0]["heads"] == meta["locate_run"]["heads"]  # top-k: the run's selection
    assert meta["dataset"]["identity"]["organism:controlled"]["test"]["n_examples"] == 320
    assert (out / "comparison.html").stat().st_size > 1_000_000
    # samples.jsonl: one line per test example; its correctness per method adds up to results.csv's accuracy
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 320 and len({s["digest"] for s in samples}) == len({s["id"] for s in samples}) == 320
    for method, row in overall.items():
        assert sum(s["methods"][method]["correct"] for s in samples) / 320 == pytest.approx(float(row["accuracy"]),
                                                                                        abs=1e-4)
        assert all((s["methods"][method]["prediction"] == s["answer"]) == s["methods"][method]["correct"]
                   and 0 <= s["methods"][method]["p_correct"] <= 1 for s in samples)
    violating = [s for s in samples if s["prior"] == "violating"]
    fixed = [s["id"] for s in violating if s["methods"]["emphasize"]["correct"] and not s["methods"]["none"]["correct"]]
    broken = [s["id"] for s in violating if s["methods"]["none"]["correct"] and not s["methods"]["emphasize"]["correct"]]
    row = next(r for r in rows if r["method"] == "emphasize" and r["group"] == "prior=violating")
    base = next(r for r in rows if r["method"] == "none" and r["group"] == "prior=violating")
    assert (len(fixed) - len(broken)) / len(violating) == pytest.approx(float(row["accuracy"]) - float(base["accuracy"]),
                                                                        abs=1e-3)  # which items a method fixed


def test_controls_stand_beside_the_methods_they_control(tmp_path, locate_run, organism):
    """--random-heads, --random-attention, --blind and --option-orders: each control's rows appear beside the
    methods it controls and no others, its samples add up to its rows, the blind row is the unmodified model on
    grey images (recomputed here by hand), and an answer that survives every option order was right in the
    given one."""
    import math

    import torch

    from vlmheads.controls import blank
    from vlmheads.intervene import InterveneConfig, load_datasets
    from vlmheads.methods.batches import option_batches

    out = tmp_path / "iv"
    assert main(["--heads-from", str(locate_run), "--dataset", "organism:controlled", "--n", "40",
                 "--method", "none", "--method", "scalingvis", "--method", "head_adaptvis", "--method", "emphasize",
                 "--random-heads", "2", "--random-attention", "2", "--blind", "--option-orders", "circular",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    overall = {r["method"]: r for r in rows if r["group"] == "all"}
    assert list(overall) == [
        "none", "none (blind)", "none (option orders)",
        "scalingvis", "scalingvis (random attention)", "scalingvis (option orders)",
        "head_adaptvis", "head_adaptvis (random heads)", "head_adaptvis (random attention)",
        "head_adaptvis (option orders)",
        "emphasize", "emphasize (random heads)", "emphasize (option orders)"]
    assert {r["group"] for r in rows if r["method"] == "none (blind)"} >= {"prior=violating", "relation=left"}
    params = json.loads(overall["scalingvis (random attention)"]["params"])
    assert params["draws"] == 2 and params["spread"] == pytest.approx(abs(math.log(0.8)), abs=1e-6)
    assert json.loads(overall["emphasize (option orders)"]["params"])["orders"] == 4
    controls = json.loads((out / "metadata.json").read_text())["controls"]["organism:controlled"]
    assert len(controls["head_adaptvis (random attention)"]["seeds"]) == 2
    assert controls["head_adaptvis (random attention)"]["heads"] == json.loads(
        (out / "interventions.json").read_text())["organism:controlled"]["head_adaptvis"][0]["heads"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for method, row in overall.items():
        assert sum(s["methods"][method]["correct"] for s in samples) / len(samples) == pytest.approx(
            float(row["accuracy"]), abs=1e-4), method
    for method in ("none", "scalingvis", "head_adaptvis", "emphasize"):
        for s in samples:
            survived = s["methods"][f"{method} (option orders)"]
            assert survived["correct"] == (survived["orders_right"] == 4)
            assert survived["orders_right"] >= s["methods"][method]["correct"] and (
                not survived["correct"] or s["methods"][method]["correct"])
    # the blind row, by hand: the unmodified model on grey images of the same test examples
    _, test = load_datasets(InterveneConfig(datasets=("organism:controlled",), n=40))["organism:controlled"]
    right = []
    for b in option_batches(organism, [blank(e) for e in test], 16):
        with torch.no_grad():
            logits = organism.last_logits(b.inputs).float().gather(1, b.option_ids)
        right += (logits.argmax(1) == b.answer).tolist()
    assert sum(right) / len(right) == pytest.approx(float(overall["none (blind)"]["accuracy"]), abs=1e-6)
    assert [s["methods"]["none (blind)"]["correct"] for s in samples] == right


@pytest.mark.parametrize("argv,message", [
    (["--method", "emphasize", "--random-attention", "2"], "--random-attention has no effect here"),
    (["--method", "emphasize", "--blind"], "add --method none"),
    (["--option-orders", "shuffled"], "invalid choice"),
])
def test_controls_that_control_nothing_are_refused(tmp_path, locate_run, capsys, argv, message):
    assert main(["--heads-from", str(locate_run), "--dataset", "organism:controlled", *argv,
                 "--out", str(tmp_path / "iv")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "iv").exists()


def test_each_head_method_keeps_its_own_k(tmp_path, locate_run):
    """--emphasize top-2 --ablate top-5 emphasises 2 heads and ablates 5 (it once ablated 2)."""
    out = tmp_path / "iv"
    assert main(["--heads-from", str(locate_run), "--emphasize", "top-2", "--ablate", "top-5", "--dataset",
                 "organism:controlled", "--method", "emphasize", "--method", "ablate", "--out", str(out)]) == 0
    applied = json.loads((out / "interventions.json").read_text())["organism:controlled"]
    assert len(applied["emphasize"][0]["heads"]) == 2 and len(applied["ablate"][0]["heads"]) == 5


def test_the_mission_command_top_k_means_the_located_selection(tmp_path, locate_run):
    out = tmp_path / "iv"
    assert main(["--heads-from", str(locate_run), "--emphasize", "top-k", "--dataset", "organism:controlled",
                 "--method", "emphasize", "--out", str(out)]) == 0
    applied = json.loads((out / "interventions.json").read_text())["organism:controlled"]
    selected = json.loads((locate_run / "heads.json").read_text())["heads"]
    assert applied["emphasize"][0]["heads"] == [[h["layer"], h["head"]] for h in selected]


def test_sweep_tunes_on_validation(tmp_path, locate_run):
    out = tmp_path / "iv"
    assert main(["--dataset", "organism:vsr", "--method", "scalingvis", "--sweep", "--out", str(out)]) == 0
    row = next(r for r in csv.DictReader((out / "results.csv").open()) if r["group"] == "all")
    assert json.loads(row["params"])["alpha"] in (0.8, 0.5, 1.2, 1.5, 2.0) and row["val_accuracy"] != ""


def test_sweep_tunes_k_for_head_methods(tmp_path, locate_run):
    out = tmp_path / "iv"
    assert main(["--heads-from", str(locate_run), "--dataset", "organism:controlled", "--method", "emphasize",
                 "--method", "ablate", "--emphasize", "top-2", "--sweep", "--out", str(out)]) == 0
    rows = {r["method"]: json.loads(r["params"]) for r in csv.DictReader((out / "results.csv").open())
            if r["group"] == "all"}
    assert rows["emphasize"]["k"] in (1, 2, 3, 5, 8) and rows["emphasize"]["gamma"] in (2.0, 1.5, 3.0)
    assert rows["ablate"] == {"k": 3}  # the diagnostic keeps its k: the locate run's selection (top-k)


def test_attenuating_and_head_selective_scalingvis_are_swept_like_the_others(tmp_path, locate_run):
    """The variants a researcher tries next: located heads turned down (gamma < 1), and ScalingVis on the
    located heads only, with alpha below and above 1 in the grid."""
    from vlmheads.intervene import GRIDS

    assert all(p["gamma"] < 1 for p in GRIDS["attenuate"])
    alphas = [p["alpha"] for p in GRIDS["head_scalingvis"]]
    assert min(alphas) < 1 < max(alphas)
    out = tmp_path / "iv"
    assert main(["--heads-from", str(locate_run), "--dataset", "organism:controlled", "--method", "attenuate",
                 "--method", "head_scalingvis", "--sweep", "--out", str(out)]) == 0
    rows = {r["method"]: json.loads(r["params"]) for r in csv.DictReader((out / "results.csv").open())
            if r["group"] == "all"}
    assert rows["attenuate"]["gamma"] in (0.5, 0.25, 0.75) and rows["head_scalingvis"]["alpha"] in alphas
    assert rows["head_scalingvis"]["k"] in (1, 2, 3, 5, 8)


@pytest.mark.parametrize("argv,message", [
    (["--emphasize", "top-99"], "more heads than the model has"),
    (["--emphasize", "three"], "expects top-k"),
    (["--method", "magic"], "unknown intervene method"),
])
def test_bad_input(tmp_path, locate_run, capsys, argv, message):
    assert main(["--heads-from", str(locate_run), *argv, "--out", str(tmp_path / "iv")]) == 2
    assert message in capsys.readouterr().err


def test_missing_locate_run(tmp_path, capsys):
    assert main(["--heads-from", str(tmp_path), "--out", str(tmp_path / "iv")]) == 2
    assert "not a locate run" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_same_results(tmp_path, locate_run, capsys, monkeypatch, ctrl_c_at):
    """Ctrl-C in the middle keeps the fitted directions and every finished method; --resume loads them,
    runs the rest, and writes what an uninterrupted run writes."""
    import vlmheads.intervene as intervene

    argv = ["--heads-from", str(locate_run), "--dataset", "organism:controlled", "--method", "none",
            "--method", "visionboost", "--method", "emphasize", "--method", "scalingvis"]
    whole = tmp_path / "whole"
    assert main([*argv, "--out", str(whole)]) == 0
    calls = ctrl_c_at(intervene, "_score_method", 3)
    run = tmp_path / "cut"
    capsys.readouterr()
    assert main([*argv, "--out", str(run)]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted: 3 finished stage(s) kept") and f"--resume {run}" in last  # fit + 2 methods
    assert json.loads((run / "metadata.json").read_text())["status"] == "interrupted"
    assert not (run / "results.csv").exists() and [c[3] for c in calls] == ["none", "visionboost", "emphasize"]
    monkeypatch.undo()
    assert intervene_main(["--resume", str(run)]) == 0  # the run's own model and options
    for name in ("results.csv", "interventions.json"):
        assert (run / name).read_text() == (whole / name).read_text(), name
    meta, whole_meta = (json.loads((d / "metadata.json").read_text()) for d in (run, whole))
    assert meta["status"] == "finished" and meta["resumed"]["previous_status"] == "interrupted"
    assert meta["resumed_stages"] == ["organism:controlled/fit", "organism:controlled/none",
                                      "organism:controlled/visionboost"]
    assert meta["layout_probe_accuracy"] == whole_meta["layout_probe_accuracy"]
    assert meta["locate_run"] == whole_meta["locate_run"] and not (run / "stages").exists()
    assert intervene_main(["--resume", str(run)]) == 2
    assert "already finished" in capsys.readouterr().err
    assert intervene_main(["--resume", str(locate_run)]) == 2
    assert "not an intervene run" in capsys.readouterr().err
    assert intervene_main(["--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_tiny_qwen2_vl_end_to_end_in_bfloat16(tmp_path):
    """The first real-size failure, in small: AdaptVis on Qwen2-VL (M-RoPE) through the whole command, bf16."""
    from vlmheads.testing import TINY_BUILDERS, tiny_processor

    model, _, _ = TINY_BUILDERS["qwen2_vl"](gqa=True)
    model.save_pretrained(tmp_path / "tiny")
    tiny_processor("qwen2_vl").save_pretrained(tmp_path / "tiny")
    common = ["--model", str(tmp_path / "tiny"), "--dtype", "bfloat16", "--batch-size", "16"]
    assert locate_main([*common, "--n", "8", "--methods", "ablation", "--random-draws", "1",
                        "--out", str(tmp_path / "loc")]) == 0
    out = tmp_path / "iv"
    assert main([*common, "--heads-from", str(tmp_path / "loc"), "--dataset", "organism:controlled",
                 "--method", "none", "--method", "adaptvis", "--method", "head_adaptvis", "--method", "emphasize",
                 "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["group"] == "all"]
    assert [r["method"] for r in rows] == ["none", "adaptvis", "head_adaptvis", "emphasize"]
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Qwen2-VL saved as a new user's model: no locate run exists for it anywhere."""
    from vlmheads.testing import TINY_BUILDERS, tiny_processor

    where = tmp_path_factory.mktemp("fresh") / "tiny-qwen2-vl"
    model, _, _ = TINY_BUILDERS["qwen2_vl"](gqa=True)
    model.save_pretrained(where)
    tiny_processor("qwen2_vl").save_pretrained(where)
    return where


def test_the_papers_own_methods_need_no_locate_run(tmp_path, tiny_dir, capsys):
    """Reproducing AdaptVis on a new model is the first thing its users do: no `heads.locate` first."""
    out = tmp_path / "iv"
    assert intervene_main(["--model", str(tiny_dir), "--method", "none", "--method", "adaptvis",
                           "--dataset", "organism:controlled", "--batch-size", "32", "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["group"] == "all"]
    assert [r["method"] for r in rows] == ["none", "adaptvis"] and all(int(r["n"]) == 320 for r in rows)
    config, meta = (json.loads((out / name).read_text()) for name in ("config.json", "metadata.json"))
    assert config["heads"] == [] and config["heads_from"] is None and meta["locate_run"] is None
    assert "no locate run" not in capsys.readouterr().err


def test_without_a_locate_run_head_methods_are_skipped_in_one_line_or_refused_by_name(tmp_path, tiny_dir, capsys,
                                                                                    monkeypatch):
    import vlmheads.intervene as intervene

    monkeypatch.setattr(intervene, "METHODS", ("none", "emphasize", "ablate", "scalingvis"))  # "all", kept short
    out = tmp_path / "iv"
    assert intervene_main(["--model", str(tiny_dir), "--dataset", "organism:controlled", "--batch-size", "32",
                           "--out", str(out)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "skipping" in line]
    assert warning == [f"warning: skipping the head methods emphasize, ablate: no locate run for model "
                       f"'{tiny_dir}' and function 'spatial' (run `python -m heads.locate` or pass --heads-from RUN)"]
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["group"] == "all"]
    assert [r["method"] for r in rows] == ["none", "scalingvis"]
    assert set(json.loads((out / "metadata.json").read_text())["skipped"]) == {"emphasize", "ablate"}
    for argv in (["--method", "none", "--method", "emphasize"], ["--emphasize", "top-2"]):
        assert intervene_main(["--model", str(tiny_dir), *argv, "--out", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: emphasize acts on located heads, but there is no locate run for model"), err
        assert not (tmp_path / "refused").exists()


def test_a_full_disk_while_writing_leaves_an_incomplete_run_that_resumes(tmp_path, tiny_dir, capsys, monkeypatch):
    """The disk fills while the outputs are written: the outputs already written are removed (no file that
    looks finished), metadata.json says incomplete, the stages are kept, and --resume ends as a whole run."""
    import errno

    import vlmheads.intervene as intervene

    argv = ["--model", str(tiny_dir), "--method", "none", "--method", "scalingvis", "--dataset", "organism:controlled",
            "--batch-size", "32"]
    assert intervene_main([*argv, "--out", str(tmp_path / "whole")]) == 0
    real = intervene.write_text_atomic

    def disk_full_at_the_chart(path, text):
        if path.name == "comparison.html":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(intervene, "write_text_atomic", disk_full_at_the_chart)
    run = tmp_path / "full"
    capsys.readouterr()
    assert intervene_main([*argv, "--out", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith("error: could not write the outputs (OSError: No space left on device)")
    assert f"then continue with: python -m heads.intervene --resume {run}" in err[0]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metadata.json", "stages"]  # results.csv removed
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["status"].startswith("incomplete: could not write the outputs")
    monkeypatch.undo()
    assert intervene_main(["--resume", str(run)]) == 0
    for name in ("results.csv", "interventions.json"):
        assert (run / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert json.loads((run / "metadata.json").read_text())["resumed"]["previous_status"].startswith("incomplete")


def _hold_lock(run_dir, command="heads intervene"):
    """Another process that holds ``run_dir``'s lock until it is killed; returns it once it holds it."""
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", f"from vlmheads.runs import RunLock; import time\n"
                               f"with RunLock({str(run_dir)!r}, {command!r}): time.sleep(120)"])
    for _ in range(200):
        if (run_dir / ".lock").is_file() and (run_dir / ".lock").read_text():
            return holder
        time.sleep(0.05)
    holder.kill()
    raise AssertionError("the holder never took the lock")


def test_two_runs_cannot_share_one_directory(tmp_path, tiny_dir, capsys):
    """A live process's lock refuses a second run on the same --out and a second --resume, naming the holder;
    the lock ends with its process (SIGKILL too), so the run resumes after; a finished run leaves no lock."""
    import socket

    argv = ["--model", str(tiny_dir), "--method", "none", "--dataset", "organism:controlled", "--batch-size", "32"]
    busy = tmp_path / "busy"
    busy.mkdir()
    holder = _hold_lock(busy)
    try:
        assert intervene_main([*argv, "--out", str(busy)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        started = json.loads((busy / ".lock").read_text())["started"]
        assert err == (f"error: {busy} is in use by pid {holder.pid} on {socket.gethostname()} (heads intervene, "
                       f"started {started}): wait for it to finish or use another --out")
    finally:
        holder.kill()
        holder.wait()
    run = tmp_path / "run"
    assert intervene_main([*argv, "--out", str(run)]) == 0 and not (run / ".lock").exists()
    meta = json.loads((run / "metadata.json").read_text())
    meta["status"] = "interrupted"  # as if it had been stopped, and is being resumed by another process now
    (run / "metadata.json").write_text(json.dumps(meta))
    holder = _hold_lock(run, "heads intervene --resume")
    try:
        assert intervene_main(["--resume", str(run)]) == 2
        assert f"is in use by pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, the lock itself is gone with the process
        holder.wait()
    assert (run / ".lock").exists()
    assert intervene_main(["--resume", str(run)]) == 0
    assert not (run / ".lock").exists()


def test_n_caps_each_split_for_smoke_runs(tmp_path, tiny_dir):
    out = tmp_path / "iv"
    assert intervene_main(["--model", str(tiny_dir), "--method", "none", "--n", "5", "--batch-size", "8",
                           "--out", str(out)]) == 0
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["group"] == "all"]
    assert [(r["dataset"], r["n"]) for r in rows] == [("organism:controlled", "5"), ("organism:vsr", "5")]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["dataset"]["identity"]["organism:vsr"]["val"]["n_examples"] == 5
    assert json.loads((out / "config.json").read_text())["n"] == 5
