"""The bad-input catalogue: every command and the public library calls, fed what a new user gets wrong.

Every case must end in ONE clear line on stderr that names the problem (the expected words below) and
exit status 2, with no traceback, and must lose no finished work: a directory passed as --out that
already holds files keeps them, and a refused run leaves no empty run directory behind. Library calls
must raise an exception whose message names the problem. Cases are rows of tables: a new bad input
found is one more row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from heads.flow import main as flow_main
from heads.intervene import main as intervene_main
from heads.locate import main as locate_main
from heads.organism import main as organism_main
from heads.tiny import main as tiny_main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = ["--n", "8", "--random-draws", "1", "--batch-size", "8", "--methods", "ablation"]
COMMANDS = {"locate": locate_main, "intervene": intervene_main, "organism": organism_main, "flow": flow_main, "tiny": tiny_main}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the cases point at: a locate run, damaged runs and models, a tiny model, data files."""
    root = tmp_path_factory.mktemp("world")
    run = root / "locate-run"
    assert locate_main(["--function", "spatial", "--out", str(run), *FAST]) == 0
    from vlmheads.models import organism_path

    truncated = root / "truncated-model"
    shutil.copytree(organism_path(), truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _damaged_models(root)
    (root / "no-config").mkdir()
    (root / "a-file.txt").write_text("not a directory")
    (root / "full").mkdir()
    (root / "full" / "finished.txt").write_text("finished work")
    corrupt = root / "corrupt-run"
    shutil.copytree(run, corrupt)
    (corrupt / "heads.json").write_text('{"model": "organism", "function": ')
    bad_row = root / "bad-row-run"
    shutil.copytree(run, bad_row)
    lines = (bad_row / "scores.csv").read_text().splitlines()
    lines[5] = "3,x,ablation,spatial_perception,1,0,2,4"
    (bad_row / "scores.csv").write_text("\n".join(lines) + "\n")
    _damaged_runs(root, run)
    missing_scores = root / "missing-scores-run"
    shutil.copytree(run, missing_scores)
    (missing_scores / "scores.csv").unlink()
    from vlmheads.scores import HeadScores

    other = root / "other-geometry-run"  # a run made on a 2 x 4-head model
    other.mkdir()
    score = torch.arange(8.0).view(2, 4)
    HeadScores(model="organism", function="spatial_perception", select_by="ablation",
               geometry={"n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "head_dim": 4},
               scores={("ablation", "spatial_perception"): {"score": score, "ci_low": score, "ci_high": score}},
               selected=[(1, 3)]).save(other)
    # a CogVSR file whose first image is truncated, and one with a malformed line
    from vlmheads.data.cogvsr import write_organism_cogvsr

    cog = write_organism_cogvsr(root / "cog", n=8, seed=1)
    first_image = cog.parent / json.loads(cog.read_text().splitlines()[0])["image"]
    first_image.write_bytes(first_image.read_bytes()[:40])
    malformed = root / "malformed.jsonl"
    malformed.write_text('{"id": "a"}\nnot json\n')
    good = json.loads(cog.read_text().splitlines()[0])
    (root / "typed-meta.jsonl").write_text(json.dumps({**good, "meta": "violating"}) + "\n")
    (root / "typed-image.jsonl").write_text(json.dumps({**good, "image": 17}) + "\n")
    (root / "latin1.jsonl").write_bytes(cog.read_bytes().replace(b"circle", b"cercl\xe9"))
    plain = write_organism_cogvsr(root / "unmarked", n=8, seed=2)
    unmarked = [json.loads(line) for line in plain.read_text().splitlines()]
    (plain.parent / "no-prior.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "meta"}) + "\n"
                                                 for r in unmarked))  # no example says what the prior would answer
    # configs of refused and non-VLM models (no weights: they must be refused before any are read)
    import transformers as tf

    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=99)
    tf.PaliGemmaConfig(text_config=dict(model_type="gemma", **text), image_token_index=98).save_pretrained(
        root / "paligemma")
    tf.MllamaConfig(text_config=dict(**text, cross_attention_layers=[1])).save_pretrained(root / "mllama")
    tf.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10).save_pretrained(root / "gpt2")
    return {"root": root, "run": run, "truncated": truncated, "cogvsr": cog, "malformed": malformed}


def _damaged_models(root: Path) -> None:
    """Copies of the organism whose weights do not cover the model: one o_proj weight gone, one weight too
    many, config.json saying 2 or 6 decoder layers beside weights for 4, and config.json alone."""
    from safetensors.torch import load_file, save_file

    from vlmheads.models import organism_path

    def copy(name, edit_weights=None, layers=None):
        target = root / name
        shutil.copytree(organism_path(), target)
        if edit_weights is not None:
            weights = load_file(target / "model.safetensors")
            edit_weights(weights)
            save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
        if layers is not None:
            config = json.loads((target / "config.json").read_text())
            config["text_config"]["num_hidden_layers"] = layers
            (target / "config.json").write_text(json.dumps(config))
        return target

    copy("missing-weight", lambda w: w.pop("language_model.model.layers.1.self_attn.o_proj.weight"))  # saved names
    copy("extra-weight", lambda w: w.__setitem__("stray.weight", torch.zeros(3)))
    copy("two-layer-config", layers=2)
    copy("six-layer-config", layers=6)
    (copy("config-only") / "model.safetensors").unlink()


def _damaged_runs(root: Path, run: Path) -> None:
    """Copies of a good locate run, each wrong in one way (heads.json edited, scores.csv re-encoded)."""
    def copy(name, edit=None):
        target = root / name
        shutil.copytree(run, target)
        if edit is not None:
            info = json.loads((target / "heads.json").read_text())
            edit(info)
            (target / "heads.json").write_text(json.dumps(info, indent=2))
        return target

    def legacy_other_model(info):  # a run from before heads.json carried model files, made on another model
        info.update(model="llava-hf/llava-1.5-7b-hf")
        info.pop("model_files"), info.pop("format")

    copy("other-model-run", legacy_other_model)
    copy("outside-head-run", lambda info: info["heads"].append({"layer": 9, "head": 0}))
    copy("future-run", lambda info: info.update(format=99))
    copy("typed-run", lambda info: info.update(function=17))
    nan = copy("nan-run")
    lines = (nan / "scores.csv").read_text().splitlines()
    at = lines[0].split(",").index("score")
    (nan / "scores.csv").write_text("\n".join(
        [lines[0]] + [",".join(c if i != at or r.split(",")[2] != "ablation" else "nan" for i, c in
                               enumerate(r.split(","))) for r in lines[1:]]) + "\n")
    for name, edit in (("edited-config-run", lambda c: {**c, "n": "abc"}),
                       ("typed-methods-run", lambda c: {**c, "methods": "ablation"}),
                       ("list-config-run", lambda c: list(c))):
        target = copy(name)  # an interrupted run whose config.json was edited by hand
        meta = json.loads((target / "metadata.json").read_text())
        (target / "metadata.json").write_text(json.dumps({**meta, "status": "interrupted"}))
        (target / "config.json").write_text(json.dumps(edit(json.loads((target / "config.json").read_text())),
                                                       indent=2))
    latin = copy("latin1-run")
    (latin / "scores.csv").write_bytes((latin / "scores.csv").read_bytes().replace(b"ablation", b"abl\xe9tion", 1))


def _ours(stderr: str) -> list[str]:
    """stderr without transformers' own weight-loading progress bar."""
    return [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith("Loading weights")]


def _fill(argv, world):
    return [a.format(**{k: str(v) for k, v in world.items()}) for a in argv]


# (command, argv, words the one line must contain)
CLI_CASES = [
    # heads.locate: arguments checked before any model is loaded
    ("locate", ["--function", "telepathy"], "unknown cognitive function"),
    ("locate", ["--function", "math"], "has no 'math_reasoning' questions"),
    ("locate", ["--methods", "ablation,magic"], "unknown locate method 'magic'"),
    ("locate", ["--methods", ","], "--methods is empty"),
    ("locate", ["--methods", "ablation", "--select-by", "noising"], "add it to --methods"),
    ("locate", ["--select-by", "vibes"], "invalid choice"),
    ("locate", ["--random-draws", "0"], "argument --random-draws: must be at least 1"),
    ("locate", ["--n", "0"], "argument --n: must be at least 1"),
    ("locate", ["--n", "many"], "argument --n: takes a whole number"),
    ("locate", ["--top-k", "0"], "argument --top-k: must be at least 1"),
    ("locate", ["--top-k", "33"], "larger than the number of heads"),
    ("locate", ["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    ("locate", ["--ablation", "median"], "invalid choice"),
    ("locate", ["--metric", "f1"], "invalid choice"),
    ("locate", ["--wat"], "unrecognized arguments"),
    ("locate", ["--model", "/nonexistent/model"], "no model directory"),
    ("locate", ["--model", "results/organism/never/model"], "no model directory"),
    ("locate", ["--model", "my_model_dir"], "no such directory 'my_model_dir'"),  # a typo: never sent to the hub
    ("intervene", ["--model", "organsim", "--method", "none"], "no such directory 'organsim'"),
    ("locate", ["--model", "{root}/no-config"], "has no config.json"),
    ("locate", ["--model", "{root}/a-file.txt"], "is a file, not a model directory"),
    ("locate", ["--model", "{truncated}"], "cannot read the weights"),
    ("locate", ["--model", ""], "--model is empty"),
    # damaged models: refused by name, never run with random weights unasked
    ("locate", ["--model", "{root}/missing-weight"], "1 weight(s) the model needs are not in model.safetensors "
               "(model.language_model.layers.1.self_attn.o_proj.weight): they would be randomly initialised"),
    ("locate", ["--model", "{root}/extra-weight"], "1 weight(s) in model.safetensors fit nowhere in the model "
               "(stray.weight)"),
    ("locate", ["--model", "{root}/two-layer-config"], "config.json declares 2 layers in "
               "model.language_model.layers, but the weights hold 4"),
    ("intervene", ["--model", "{root}/six-layer-config", "--method", "none"], "config.json declares 6 layers in "
                  "model.language_model.layers, but the weights hold 4"),
    ("flow", ["--model", "{root}/config-only"], "has no weight files beside its config.json"),
    ("organism", ["eval", "--model", "{root}/missing-weight"], "pass --allow-random-init"),
    ("locate", ["--device", "cuda"], "no CUDA device is usable here"),
    ("locate", ["--device", "banana"], "unknown device"),
    ("locate", ["--dtype", "float8"], "unknown dtype"),
    ("locate", ["--threads", "0"], "argument --threads: must be at least 1"),
    ("flow", ["--threads", "two"], "argument --threads: takes a whole number"),
    ("locate", ["--attn-implementation", "magic"], "unknown --attn-implementation 'magic'"),
    ("locate", ["--device-map", "everywhere"], "unknown device map 'everywhere'"),
    ("locate", ["--max-memory", "0=70GiB"], "add --device-map auto"),
    ("locate", ["--device-map", "auto", "--max-memory", "0=70"], "has no unit"),
    ("flow", ["--device-map", "auto", "--max-memory", "gpu0=70GiB"], "is not DEVICE=SIZE"),
    ("intervene", ["--device-map", "auto", "--max-memory", "0=1GiB,0=2GiB"], "names 0 twice"),
    # empty values, and options the chosen methods would ignore
    ("locate", ["--resume", ""], "--resume is empty: give it a value or leave it out"),
    ("intervene", ["--resume", ""], "--resume is empty"),
    ("flow", ["--resume", ""], "--resume is empty"),
    ("organism", ["train", "--resume", ""], "--resume is empty"),
    ("intervene", ["--heads-from", ""], "--heads-from is empty"),
    ("flow", ["--heads-from", ""], "--heads-from is empty"),
    ("locate", ["--out", ""], "--out is empty"),
    ("locate", ["--data-root", ""], "--data-root is empty"),
    ("intervene", ["--dataset", ""], "--dataset is empty"),
    ("locate", ["--model", ""], "--model is empty"),
    ("locate", ["--methods", "patching,attribution", "--select-by", "attribution", "--verify", "3"],
     "--verify has no effect here: it sets how many heads ablation verifies after its screen, and --methods has no "
     "ablation"),
    ("locate", ["--methods", "ablation", "--screen", "off", "--verify", "3"], "--verify has no effect here"),
    ("locate", ["--methods", "patching", "--select-by", "noising", "--screen", "attribution"],
     "--screen has no effect here: the screen is the ablation method's"),
    ("locate", ["--data-root", "{root}"], "--data-root has no effect here: organism:decomposed reads no data root"),
    ("flow", ["--data-root", "{root}"], "--data-root has no effect here"),
    ("intervene", ["--data-root", "{root}", "--method", "none"], "--data-root has no effect here"),
    ("intervene", ["--method", "none", "--emphasize", "top-3"],
     "--emphasize has no effect here: emphasize is not among the methods (the methods run are none)"),
    ("intervene", ["--method", "adaptvis", "--ablate", "top-1"], "--ablate has no effect here"),
    ("intervene", ["--method", "none", "--heads-from", "{run}"],
     "--heads-from has no effect here: no method run acts on located heads"),
    ("intervene", ["--method", "scalingvis", "--function", "spatial"], "--function has no effect here"),
    ("intervene", ["--method", "none", "--random-heads", "3"], "--random-heads has no effect here"),
    ("intervene", ["--random-heads", "-1"], "argument --random-heads: must be at least 0"),
    ("intervene", ["--method", "emphasize", "--emphasize", "top-2", "--heads", "top-3"],
     "--heads has no effect here: every head method run has its own head count (--emphasize)"),
    ("intervene", ["--resume", "{root}/full"], "not a run directory"),
    ("intervene", ["--resume", "{run}"], "a 'locate' run, not an intervene run"),
    ("locate", ["--out", "{root}/a-file.txt"], "is a file"),
    ("locate", ["--out", "{root}/full"], "never overwritten"),
    ("locate", ["--dataset", "nope:x"], "unknown dataset"),
    ("locate", ["--dataset", "organism"], "needs the form family:name"),
    ("locate", ["--dataset", "organism:zzz"], "unknown organism dataset"),
    ("locate", ["--dataset", "whatsup:controlled_a"], "no data root given"),
    ("locate", ["--dataset", "whatsup:controlled_z", "--data-root", "{root}"], "controlled_z"),
    ("locate", ["--dataset", "cogvsr:{root}/nowhere.jsonl"], "nowhere.jsonl"),
    ("locate", ["--dataset", "cogvsr:{malformed}"], "malformed.jsonl:"),
    ("locate", ["--dataset", "cogvsr:{cogvsr}", "--function", "relational"], "cannot read image"),
    ("locate", ["--dataset", "cogvsr:{root}/typed-meta.jsonl"], "typed-meta.jsonl:1: field 'meta' must be an object, "
                                                               "got \"violating\""),
    ("locate", ["--dataset", "cogvsr:{root}/typed-image.jsonl"], "typed-image.jsonl:1: field 'image' must be a string"),
    ("locate", ["--dataset", "cogvsr:{root}/latin1.jsonl"], "latin1.jsonl:1: not UTF-8 text (byte 0xe9"),
    ("locate", ["--target", "prior", "--dataset", "cogvsr:{root}/unmarked/no-prior.jsonl", "--function", "spatial"],
     "--select-by prior_net needs spatial_perception examples the prior and the image disagree on"),
    ("locate", ["--target", "oracle"], "argument --target: invalid choice"),
    ("locate", ["--resume", "{root}/full"], "not a run directory"),
    ("locate", ["--screen", "magic"], "invalid choice"),
    ("locate", ["--verify", "0"], "argument --verify: must be at least 1"),
    ("locate", ["--screen", "attribution", "--verify", "2", "--top-k", "3"], "raise --verify to at least 3"),
    ("locate", ["--resume", "{run}"], "already finished; nothing to resume"),
    ("locate", ["--resume", "{root}/edited-config-run"], ": n must be a whole number, got 'abc' (edited by hand?"),
    ("locate", ["--resume", "{root}/typed-methods-run"], "methods must be a list of strings, got 'ablation'"),
    ("locate", ["--resume", "{root}/list-config-run"], "config.json must be a JSON object of options, got list"),
    ("locate", ["--dataset", "organism:controlled", "--function", "relational", "--methods", "ablation,probe",
                "--select-by", "probe"], "cannot select by probe"),
    # heads.intervene
    ("intervene", ["--heads-from", "{run}", "--emphasize", "three"], "expects top-k"),
    ("intervene", ["--heads-from", "{run}", "--emphasize", "top-0"], "expects top-k"),
    ("intervene", ["--heads-from", "{run}", "--emphasize", "top-99"], "more heads than the model has"),
    ("intervene", ["--heads-from", "{run}", "--heads", "top-99"], "more heads than the model has"),
    ("intervene", ["--heads-from", "{run}", "--method", "magic"], "unknown intervene method 'magic'"),
    ("intervene", ["--heads-from", "{root}/full"], "not a locate run"),
    ("intervene", ["--heads-from", "{root}/nowhere"], "is not a directory"),
    ("intervene", ["--heads-from", "{root}/corrupt-run"], "corrupt-run/heads.json: not valid JSON"),
    ("intervene", ["--heads-from", "{root}/bad-row-run"], "bad-row-run/scores.csv:6: malformed row"),
    ("intervene", ["--heads-from", "{root}/missing-scores-run"], "no scores.csv"),
    ("intervene", ["--heads-from", "{root}/other-geometry-run"], "locate heads on this model first"),
    ("intervene", ["--heads-from", "{run}", "--function", "telepathy"], "unknown cognitive function"),
    ("intervene", ["--heads-from", "{run}", "--device", "cuda"], "no CUDA device is usable here"),
    ("intervene", ["--heads-from", "{run}", "--dtype", "int3"], "unknown dtype"),
    ("intervene", ["--heads-from", "{run}", "--batch-size", "-1"], "argument --batch-size: must be at least 1"),
    ("intervene", ["--method", "none", "--n", "0"], "argument --n: must be at least 1"),
    ("intervene", ["--heads-from", "{run}", "--out", "{root}/full"], "never overwritten"),
    ("intervene", ["--heads-from", "{run}", "--dataset", "organism:nope"], "unknown organism dataset"),
    ("intervene", ["--heads-from", "{run}", "--model", "{truncated}", "--allow-foreign-heads"],
     "cannot read the weights"),
    # heads from another model, function or geometry, or a damaged record: refused before the model loads
    ("intervene", ["--heads-from", "{run}", "--model", "{truncated}"], "weights cb8e7fa3b935ceb5), not on"),
    ("intervene", ["--heads-from", "{run}", "--model", "organism-competent"], "not on organism-competent"),
    ("intervene", ["--heads-from", "{run}", "--function", "relational"],
     "holds heads for spatial_perception, not relational_reasoning: locate heads on this model and function first"),
    ("flow", ["--heads-from", "{root}/other-model-run"], "was made on a model named llava-hf/llava-1.5-7b-hf"),
    ("intervene", ["--heads-from", "{root}/other-model-run"], "was made on a model named llava-hf/llava-1.5-7b-hf"),
    ("intervene", ["--heads-from", "{root}/outside-head-run"], "selected head L9H0 is outside the run's own 4 x 8"),
    ("intervene", ["--heads-from", "{root}/nan-run"], "every ablation score for spatial_perception is NaN"),
    ("flow", ["--heads-from", "{root}/future-run"], "format 99 was written by a newer vlmheads"),
    ("intervene", ["--heads-from", "{root}/typed-run"], "function must be a string, got 17"),
    ("intervene", ["--heads-from", "{root}/latin1-run"], "scores.csv: not UTF-8 text"),
    ("locate", ["--model", "{root}/paligemma"], "not supported (prefix-LM attention)"),
    ("intervene", ["--heads-from", "{run}", "--model", "{root}/mllama"], "not supported (cross-attention layers)"),
    # heads.flow
    ("flow", ["--edges", "image->answer,telepathy"], "unknown edge class 'telepathy'"),
    ("flow", ["--window", "9"], "--window 9 is more than the model's 4 layers"),
    ("flow", ["--window", "0"], "argument --window: must be at least 1"),
    ("flow", ["--n", "0"], "argument --n: must be at least 1"),
    ("flow", ["--function", "math"], "math_reasoning"),
    ("flow", ["--device", "cuda"], "no CUDA device is usable here"),
    ("flow", ["--out", "{root}/full"], "never overwritten"),
    ("flow", ["--heads-from", "{root}/corrupt-run"], "not valid JSON"),
    ("flow", ["--heads-from", "{root}/other-geometry-run"], "locate heads on this model first"),
    ("flow", ["--model", "{root}/gpt2"], "is not a vision-language model"),
    ("flow", ["--resume", "{root}/full"], "not a run directory"),
    ("flow", ["--resume", "{run}"], "a 'locate' run, not a flow run"),
    # heads.tiny
    ("tiny", ["gemma9", "{root}/new-tiny"], "invalid choice: 'gemma9'"),
    ("tiny", ["llava", "{root}/full"], "already holds files"),
    ("tiny", ["llava"], "the following arguments are required: dir"),
    # heads.organism
    ("organism", [], "required: {train,eval,twin}"),
    ("organism", ["train", "--steps", "0"], "argument --steps: must be at least 1"),
    ("organism", ["train", "--steps", "-5"], "argument --steps: must be at least 1"),
    ("organism", ["train", "--micro", "--install"], "would replace the shipped organism"),
    ("organism", ["train", "--micro", "--out", "{root}/a-file.txt"], "is a file"),
    ("organism", ["train", "--micro", "--out", "{root}/full"], "never overwritten"),
    ("organism", ["train", "--resume", "{root}/full"], "not a run directory"),
    ("organism", ["train", "--resume", "{run}"], "a 'locate' run, not an organism train run"),
    ("organism", ["train", "--micro", "--init", "{root}/nowhere"], "no model directory"),
    ("organism", ["train", "--recipe", "magic"], "invalid choice: 'magic'"),
    ("organism", ["train", "--recipe", "setting"], "fine-tunes the model of a setting-base run: pass --init"),
    ("organism", ["train", "--recipe", "prior", "--install"], "the prior recipe makes no shipped organism"),
    ("organism", ["eval", "--n", "0"], "argument --n: must be at least 1"),
    ("organism", ["eval", "--generate", "-1"], "argument --generate: must be at least 0"),
    ("organism", ["eval", "--model", "{root}/nowhere"], "no model directory"),
    ("organism", ["eval", "--device", "cuda"], "no CUDA device is usable here"),
    ("organism", ["twin", "--models", "organism"], "--models takes two models"),
    ("organism", ["twin", "--models", "organism,{root}/nowhere"], "no model directory"),
    ("organism", ["twin", "--seed", "1"], "--locate-seed and --seed draw the same scenes"),
    ("organism", ["twin", "--k", "64"], "leaves no random heads"),
    ("organism", ["twin", "--device", "cuda"], "no CUDA device is usable here"),
]


@pytest.mark.parametrize("command,argv,words", CLI_CASES, ids=[f"{c}:{' '.join(a)[:60]}" for c, a, _ in CLI_CASES])
def test_command_refuses_with_one_clear_line(world, tmp_path, capsys, command, argv, words):
    argv = _fill(argv, world)
    if "--out" not in argv and command not in ("organism", "tiny") or argv[:1] == ["train"] and "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "run")]
    before = sorted(p.name for p in (world["root"] / "full").iterdir())
    assert COMMANDS[command](argv) == 2
    err = capsys.readouterr().err.strip()
    lines = _ours(err)
    assert lines and lines[-1].startswith("error: "), err
    assert words in lines[-1], err
    assert "Traceback" not in err
    assert all(line.startswith("warning: ") for line in lines[:-1]), err
    assert sorted(p.name for p in (world["root"] / "full").iterdir()) == before  # finished work untouched
    assert (world["root"] / "full" / "finished.txt").read_text() == "finished work"
    assert not (tmp_path / "run").exists() or any((tmp_path / "run").iterdir())  # no empty run directory


def test_unreadable_runs_are_passed_over_when_picking_the_newest(world, tmp_path, capsys, monkeypatch):
    """One corrupt heads.json among the runs no longer breaks the default heads.intervene."""
    import vlmheads.runs

    results = tmp_path / "results"
    (results / "locate").mkdir(parents=True)
    shutil.copytree(world["run"], results / "locate" / "20200101-000000_good")
    shutil.copytree(world["root"] / "corrupt-run", results / "locate" / "20990101-000000_corrupt")
    monkeypatch.setattr(vlmheads.runs, "DEFAULT_RESULTS", results)
    from heads.intervene import newest_locate_run

    assert newest_locate_run("organism", "spatial").name == "20200101-000000_good"
    err = capsys.readouterr().err
    assert err.startswith("warning: passing over") and "20990101-000000_corrupt/heads.json" in err


def test_ctrl_c_prints_one_line_and_marks_the_run(world, tmp_path, capsys, monkeypatch):
    import vlmheads.locate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vlmheads.locate, "run_locate", interrupted)
    out = tmp_path / "run"
    assert locate_main(["--out", str(out), *FAST]) == 130
    lines = _ours(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and str(out) in lines[0]
    assert json.loads((out / "metadata.json").read_text())["status"] == "interrupted"


def test_a_hub_id_offline_and_not_cached_is_refused_before_any_network(tmp_path, capsys, monkeypatch):
    import transformers

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert locate_main(["--model", "llava-hf/llava-1.5-7b-hf", "--out", str(tmp_path / "run"), *FAST]) == 2
    err = _ours(capsys.readouterr().err)
    assert len(err) == 1 and "llava-hf/llava-1.5-7b-hf: offline (HF_HUB_OFFLINE is set), and not in the local cache" \
        in err[0], err


def test_a_hub_id_the_network_cannot_bring_says_so(tmp_path, capsys, monkeypatch):
    import transformers

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert locate_main(["--model", "llava-hf/llava-1.5-7b-hf", "--out", str(tmp_path / "run"), *FAST]) == 2
    err = _ours(capsys.readouterr().err)
    assert len(err) == 1 and "cannot reach the Hugging Face hub for llava-hf/llava-1.5-7b-hf (offline?), and it " \
        "is not in the local cache" in err[0], err


def test_ctrl_c_while_the_command_is_still_importing_is_one_line(tmp_path, capsys, monkeypatch):
    import heads.locate

    def importing():
        raise KeyboardInterrupt  # as if Ctrl-C came while the parser's imports (torch, transformers) ran

    monkeypatch.setattr(heads.locate, "_parser", importing)
    assert heads.locate.main(["--out", str(tmp_path / "run")]) == 130
    lines = _ours(capsys.readouterr().err)
    assert lines == ["interrupted: stopped before a run directory was made; nothing to keep"]


@pytest.mark.e2e
def test_ctrl_c_at_a_real_commands_start_is_one_line(tmp_path):
    """SIGINT 0.4 s after `python -m heads.locate` starts: Python is importing torch then (1.5 s here)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "heads.locate", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # 130, or killed by SIGINT after the line (CPython re-raises the signal at exit when an interrupt passed
    # through C-level code during the imports, even though the command caught it): a shell shows 130 for both
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    assert "Traceback" not in err and len(_ours(err)) == 1 and _ours(err)[0].startswith("interrupted:"), err
    assert not (tmp_path / "run").exists()


def test_unknown_subset_or_root_of_real_data(tmp_path):
    from vlmheads.data import load

    with pytest.raises(FileNotFoundError, match="no data root given"):
        load("vsr:random/test")


def test_whatsup_on_the_organism_says_its_tokenizer_cannot_spell_the_options(tmp_path, capsys):
    """The default organism's tokenizer maps on/under/front/behind to <unk>: the run says so."""
    prompts = SHARED / "whatsup" / "adaptvis_prompts"
    if not prompts.is_dir():
        pytest.skip("../shared/data/whatsup/adaptvis_prompts not present")
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "data"))
    import whatsup_release as release

    release.build_release(tmp_path / "whatsup", "controlled_a", n=8, images=True)
    assert locate_main(["--dataset", "whatsup:controlled_a", "--data-root", str(tmp_path / "whatsup"),
                        "--function", "relational", "--out", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "cannot spell the answer option" in err and "<unk>" in err


# -- the public library calls ---------------------------------------------------------------------------

def _library_cases():
    from vlmheads import load_model, site
    from vlmheads.data import as_pil, load
    from vlmheads.interventions import (Ablate, AdaptVis, Emphasize, ScalingVis, Steer, VisionBoost, apply,
                                        from_json)
    from vlmheads.scores import HeadScores

    return [
        ("load organism:vsr for another function", lambda w, o: load("organism:vsr", function="spatial"),
         "has no 'spatial_perception' questions"),
        ("load an unknown split", lambda w, o: load("organism:controlled", split="train"), "unknown split"),
        ("load limit 0", lambda w, o: load("organism:controlled", limit=0), "limit must be positive"),
        ("load a name that is not a string", lambda w, o: load(None), "must be a string"),
        ("negative head index", lambda w, o: Ablate(heads=[(-1, 0)]), "negative indices are not allowed"),
        ("fractional head index", lambda w, o: Ablate(heads=[(0.5, 1)]), "head indices are integers"),
        ("head that is not a pair", lambda w, o: Emphasize(heads=[3]), "(layer, head) pairs"),
        ("negative alpha", lambda w, o: ScalingVis(alpha=-1.0), "alpha must be >= 0"),
        ("alpha that is not a number", lambda w, o: ScalingVis(alpha="big"), "alpha must be a number"),
        ("infinite alpha", lambda w, o: AdaptVis(alpha_high=float("inf")), "must be finite"),
        ("threshold outside [0, 1]", lambda w, o: AdaptVis(threshold=2), "threshold is a probability"),
        ("negative gamma", lambda w, o: Emphasize(heads=[(0, 0)], gamma=-1), "gamma must be >= 0"),
        ("unknown ablation mode", lambda w, o: Ablate(heads=[(0, 0)], mode="median"), "Ablate mode must be one of"),
        ("ablation value, unknown mode", lambda w, o: site.ablation_value("median", torch.zeros(1, 1, 1), 0, 0),
         "unknown ablation mode"),
        ("mean ablation without means", lambda w, o: site.ablation_value("mean", torch.zeros(1, 1, 1), 0, 0),
         "needs the heads' mean outputs"),
        ("steer without directions", lambda w, o: Steer(alpha=1.0, directions={}), "Steer needs directions"),
        ("vision boost with a vector", lambda w, o: VisionBoost(alpha=1.0, directions=torch.zeros(3)),
         "must be [r, hidden_size]"),
        ("vision boost of the wrong width", lambda w, o: _enter(apply(o, [VisionBoost(1.0, torch.zeros(2, 7))])),
         "hidden_size=128"),
        ("layer out of range", lambda w, o: _enter(apply(o, [Ablate(heads=[(9, 0)])])), "layer 9 out of range"),
        ("head out of range", lambda w, o: _enter(apply(o, [Emphasize(heads=[(0, 8)])])), "head 8 out of range"),
        ("two attention-logit interventions", lambda w, o: _enter(apply(o, [ScalingVis(1.0), AdaptVis()])),
         "only one attention-logit intervention"),
        ("mean ablation without means in apply", lambda w, o: _enter(apply(o, [Ablate([(0, 0)], mode="mean")])),
         "needs the heads' mean outputs"),
        ("not an intervention", lambda w, o: _enter(apply(o, ["ablate"])), "unknown intervention"),
        ("unknown JSON record", lambda w, o: from_json({"type": "Nope"}), "not an intervention record"),
        ("model on a device this build lacks", lambda w, o: load_model("organism", device="cuda"), "no CUDA device"),
        ("truncated weights", lambda w, o: load_model(w["truncated"]), "truncated-model: SafetensorError"),
        ("corrupt locate run", lambda w, o: HeadScores.load(w["root"] / "corrupt-run"), "not valid JSON"),
        ("truncated image", lambda w, o: as_pil(w["cogvsr"].parent / json.loads(
            w["cogvsr"].read_text().splitlines()[0])["image"]), "cannot read image"),
        ("missing image", lambda w, o: as_pil(w["root"] / "nowhere.png"), "nowhere.png does not exist"),
    ]


def _enter(cm):
    with cm:
        pass


LIBRARY_NAMES = [name for name, _, _ in _library_cases()]


@pytest.mark.parametrize("index", range(len(LIBRARY_NAMES)), ids=LIBRARY_NAMES)
def test_library_call_refuses_with_a_clear_message(world, organism, index):
    name, call, words = _library_cases()[index]
    with pytest.raises((ValueError, OSError, IndexError, TypeError)) as info:
        call(world, organism)
    assert words in str(info.value), f"{name}: {info.value}"
    assert "\n" not in str(info.value).strip() or name == "missing images", f"{name}: not one line"


def test_random_init_runs_only_when_asked_and_is_recorded(world, tmp_path, capsys):
    """--allow-random-init loads the model with the weight it lacks randomly initialised, says so, and the
    run's config and metadata record it."""
    out = tmp_path / "run"
    assert locate_main(["--model", str(world["root"] / "missing-weight"), "--allow-random-init", "--out", str(out),
                        *FAST]) == 0
    assert "note: --allow-random-init:" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["allow_random_init"] is True
    model = json.loads((out / "metadata.json").read_text())["model"]
    assert "layers.1.self_attn.o_proj.weight" in model["random_init"]
    from vlmheads import load_model

    whole = load_model("organism")
    assert whole.random_init is None and whole.source["weight_files"] == ["model.safetensors"]
    random = load_model(world["root"] / "config-only", allow_random_init=True)
    assert random.random_init.startswith("there are no weight files: all")


def test_foreign_heads_run_only_when_asked_and_are_recorded(world, tmp_path, capsys):
    """Heads located on the default organism, used on organism-competent (same config, other weights) with
    --allow-foreign-heads: one warning line saying whose heads they are; config and metadata record it."""
    out = tmp_path / "run"
    assert intervene_main(["--model", "organism-competent", "--heads-from", str(world["run"]), "--allow-foreign-heads",
                           "--method", "emphasize", "--dataset", "organism:controlled", "--n", "16",
                           "--batch-size", "16", "--out", str(out)]) == 0
    warnings = [line for line in _ours(capsys.readouterr().err) if line.startswith("warning: --allow-foreign-heads")]
    assert len(warnings) == 1 and "was made on organism (config" in warnings[0], warnings
    assert json.loads((out / "config.json").read_text())["allow_foreign_heads"] is True
    locate_run = json.loads((out / "metadata.json").read_text())["locate_run"]
    assert set(locate_run["foreign"]) == {"model"} and locate_run["format"] == 3
    assert locate_run["model_files"]["weights_digest"] != \
        json.loads((out / "metadata.json").read_text())["model"]["files"]["weights_digest"]


def test_the_newest_run_is_one_made_on_the_models_own_files(world, tmp_path, monkeypatch):
    """A newer run made on organism-competent (another name, other weights) and one named like the model
    but recording other files are passed over; a run with the model's files counts whatever its name."""
    import vlmheads.runs
    from heads.intervene import newest_locate_run
    from vlmheads.scores import find_locate_runs

    locate = tmp_path / "results" / "locate"
    locate.mkdir(parents=True)
    shutil.copytree(world["run"], locate / "20200101-000000_own")
    for name, edit in (("20300101-000000_competent", {"model": "organism-competent"}),
                       ("20400101-000000_same-name-other-files", {"model_files": {"config_sha256": "0" * 16,
                                                                                   "weights_digest": "1" * 16}})):
        shutil.copytree(world["run"], locate / name)
        info = json.loads((locate / name / "heads.json").read_text())
        if "model" in edit:  # a run made on organism-competent records its files too
            from vlmheads.models import organism_path
            from vlmheads.models.identity import source_identity

            edit = {**edit, "model_files": source_identity(organism_path("organism-competent"))}
        (locate / name / "heads.json").write_text(json.dumps({**info, **edit}))
    monkeypatch.setattr(vlmheads.runs, "DEFAULT_RESULTS", tmp_path / "results")
    assert newest_locate_run("organism", "spatial").name == "20200101-000000_own"
    assert newest_locate_run("organism-competent", "spatial").name == "20300101-000000_competent"
    from vlmheads.models import organism_path
    from vlmheads.models.identity import source_identity

    by_path = find_locate_runs(locate, model="elsewhere/weights", function="spatial_perception",
                               files=source_identity(organism_path()))
    assert [p.name for p in by_path] == ["20200101-000000_own"]


def test_a_name_given_twice_runs_once_with_a_warning(tmp_path, capsys):
    """--method/--dataset repeated, --methods/--edges with a name twice: one warning line, the name used once;
    the results are those of the command given each name once."""
    common = ["--method", "none", "--n", "4", "--dataset", "organism:vsr"]
    assert intervene_main([*common, "--out", str(tmp_path / "once")]) == 0
    assert intervene_main([*common, "--method", "none", "--dataset", "organism:vsr", "--out", str(tmp_path / "twice")]) == 0
    err = capsys.readouterr().err
    assert "warning: --method none given 2 times: used once" in err
    assert "warning: --dataset organism:vsr given 2 times: used once" in err
    assert (tmp_path / "once" / "results.csv").read_text() == (tmp_path / "twice" / "results.csv").read_text()
    config = json.loads((tmp_path / "twice" / "config.json").read_text())
    assert config["methods"] == ["none"] and config["datasets"] == ["organism:vsr"]

    import heads.flow
    import heads.locate

    args = heads.locate._parser().parse_args(["--methods", "ablation, probe,ablation"])
    assert heads.locate._config(args).methods == ("ablation", "probe")
    args = heads.flow._parser().parse_args(["--edges", "image->answer,image->answer"])
    assert args.edges == ("image->answer",)
    assert capsys.readouterr().err.splitlines() == ["warning: --methods ablation given 2 times: used once",
                                                    "warning: --edges image->answer given 2 times: used once"]


def test_the_options_a_command_line_set_are_known_apart_from_defaults():
    import heads.intervene

    args = heads.intervene._parser().parse_args(["--method", "none", "--sweep", "--heads", "top-k"])
    assert {"method", "sweep", "heads"} <= args.given and not {"emphasize", "dataset", "n", "function"} & args.given


def test_ctrl_c_that_a_library_turns_into_another_error_is_still_ctrl_c(tmp_path, capsys, monkeypatch):
    """transformers' lazy import re-raises a KeyboardInterrupt as ModuleNotFoundError (seen when Ctrl-C lands
    while AutoConfig imports a model class): still one line and exit status 130, no traceback."""
    import os
    import signal

    import heads.locate

    def import_interrupted(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would
        except KeyboardInterrupt as err:
            raise ModuleNotFoundError("Could not import module 'LlamaConfig'") from err
        raise AssertionError("SIGINT was not raised")

    monkeypatch.setattr(heads.locate, "_run", import_interrupted)
    assert heads.locate.main(["--out", str(tmp_path / "run")]) == 130
    assert _ours(capsys.readouterr().err) == ["interrupted: stopped before a run directory was made; nothing to keep"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the command's handler is gone again


@pytest.mark.parametrize("command,argv,words", [
    ("locate", ["--top-k", "33"], "--top-k 33 is larger than the number of heads: organism has 32"),
    ("flow", ["--window", "9"], "--window 9 is more than the model's 4 layers"),
    ("intervene", ["--heads-from", "{root}/other-model-run"], "was made on a model named"),
    ("intervene", ["--heads-from", "{root}/other-geometry-run"], "locate heads on this model first"),
    ("intervene", ["--method", "none", "--emphasize", "top-3"], "--emphasize has no effect here"),
    ("locate", ["--resume", "{root}/edited-config-run"], "n must be a whole number"),
    ("locate", ["--dataset", "cogvsr:{root}/typed-meta.jsonl"], "field 'meta' must be an object"),
    ("locate", ["--target", "prior", "--dataset", "cogvsr:{root}/unmarked/no-prior.jsonl"], "the prior and the image disagree"),
])
def test_what_the_config_and_files_can_tell_is_refused_before_the_model_loads(world, tmp_path, capsys, monkeypatch,
                                                                               command, argv, words):
    import heads._cli

    def no_loading(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(heads._cli, "load", no_loading)
    assert COMMANDS[command]([*_fill(argv, world), "--out", str(tmp_path / "run")]) == 2
    assert words in _ours(capsys.readouterr().err)[-1]


@pytest.mark.parametrize("bug", [KeyError("stage"), IndexError("list index out of range"), ValueError("shapes"),
                                 FileNotFoundError("/tmp/cache.bin")])
def test_a_bug_inside_a_method_keeps_its_traceback(tmp_path, monkeypatch, bug):
    """The commands turn only the library's user errors (vlmheads.errors.UserError) into one line: a KeyError,
    IndexError, bare ValueError or FileNotFoundError raised by a method's own code is a bug, and propagates
    with its traceback (once every one became a tidy 'error: ...' line); the run is marked failed."""
    from dataclasses import replace

    import vlmheads.locate as locate

    def buggy(state, function):
        raise bug

    monkeypatch.setitem(locate.LOCATE_METHODS._items, "ablation", replace(locate.LOCATE_METHODS["ablation"], run=buggy))
    out = tmp_path / "run"
    with pytest.raises(type(bug)):
        locate_main(["--out", str(out), *FAST, "--methods", "ablation"])
    assert json.loads((out / "metadata.json").read_text())["status"].startswith("failed")


def test_every_user_error_of_the_library_is_one_base():
    from vlmheads.data import DataError, MissingImagesError
    from vlmheads.errors import InputError, MissingInput, UserError
    from vlmheads.models.adapter import AdapterError
    from vlmheads.models.loading import ModelLoadError
    from vlmheads.registry import UnknownName
    from vlmheads.runs import RunDirTaken, RunIncomplete, RunInUse
    from vlmheads.scores import LocateRunError

    for kind in (DataError, MissingImagesError, AdapterError, ModelLoadError, UnknownName, RunDirTaken, RunInUse,
                 RunIncomplete, LocateRunError, InputError, MissingInput):
        assert issubclass(kind, UserError), kind
    assert issubclass(InputError, ValueError) and issubclass(MissingInput, FileNotFoundError)  # callers' builtins
