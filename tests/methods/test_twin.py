"""The twin test: the prior answer by hand, the ranker's margin shift checked against a plain forward pass with
the head zeroed at the answer position (a hook, not the ``Suppress`` value the method applies), and the test
itself on the shipped pair through ``python -m heads.organism twin``: the prior organism's located head stands
far out and flips prior-driven errors well beyond random heads; on its prior-free twin the same procedure finds
nothing comparable (compared by the margin, since the twin answers violating scenes at ceiling)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from vlmheads import site
from vlmheads.methods.batches import option_batches
from vlmheads.methods.prior import prior_split
from vlmheads.methods.twin import prior_answer, rank_heads


def _example(**kw):
    base = dict(options=("left", "right", "above", "below"), answer="right", subject="red circle",
                object="blue cross", meta={})
    return SimpleNamespace(**{**base, **kw})


def test_prior_answer_from_the_meta_or_the_organisms_prior():
    from vlmheads.world.scenes import prior_relation

    assert prior_answer(_example(meta={"prior_answer": "below"})) == "below"
    assert prior_answer(_example(meta={"prior_answer": "right"})) is None  # the prior agrees: nothing to override
    assert prior_answer(_example(meta={"prior_answer": "inside"})) is None  # not among the options
    expected = prior_relation("circle", "cross")
    assert prior_answer(_example()) == (expected if expected != "right" else None)
    assert prior_answer(_example(subject="", object="")) is None


def test_rank_shift_matches_a_plain_pass_with_the_head_zeroed_at_the_answer(prior_organism):
    loaded = prior_organism
    examples = loaded.examples(160, seed=7, function="relational", split="controlled")
    ranked = rank_heads(loaded, examples, batch_size=64)
    g = loaded.geometry
    assert ranked["shift"].shape == (g.n_layers, g.n_heads) and len(ranked["ranking"]) == g.n_layers * g.n_heads
    layer, head = ranked["ranking"][0]
    assert ranked["shift"][layer, head] == ranked["shift"].max()
    violating = [e for e in prior_split(examples)[0] if prior_answer(e) is not None]
    assert ranked["n_violating"] == len(violating) > 0

    def margins(hook=None):
        out = []
        for b in option_batches(loaded, violating, 64):
            with torch.no_grad():
                if hook is None:
                    logits = loaded.last_logits(b.inputs)
                else:
                    with site.hook(loaded, layer, hook):
                        logits = loaded.last_logits(b.inputs)
            opt = logits.float().gather(1, b.option_ids)  # [B, K]
            prior = torch.tensor([e.options.index(prior_answer(e)) for e in b.examples])
            out.append(opt[torch.arange(len(b.examples)), b.answer] - opt[torch.arange(len(b.examples)), prior])
        return torch.cat(out)

    def zero_answer(z):  # z: [B, T, H, d_head]
        z[:, -1, head] = 0.0

    base = margins()
    assert ranked["base_margin"] == pytest.approx(float(base.mean()), abs=1e-4)
    assert float(ranked["shift"][layer, head]) == pytest.approx(float((margins(zero_answer) - base).mean()), abs=1e-4)


@pytest.mark.e2e
def test_the_twin_test_tells_the_prior_organism_from_its_prior_free_twin(tmp_path):
    from heads.organism import main

    out = tmp_path / "twin"
    assert main(["twin", "--out", str(out)]) == 0
    reports = {r["model"]: r for r in json.loads((out / "twin.json").read_text())["reports"]}
    for name in ("config.json", "metadata.json"):
        assert (out / name).is_file()
    prior, twin = reports["organism"], reports["organism-competent"]

    # the prior organism: one head stands far out, and zeroing it flips prior-driven errors that random heads don't
    a = prior["applied"]
    assert prior["located"]["z"] >= 3.0 and a["prior_driven_errors"] >= 10
    assert a["located"]["flip"] >= 0.25 and a["located"]["flip"] >= a["random"]["flip"] + 0.2
    assert a["located"]["margin_shift"] >= a["random"]["margin_shift"] + 1.0
    assert a["located"]["relative_shift"] >= 0.3

    # its twin: no prior-driven errors, no head that stands out, no margin moved by a share worth the name
    t = twin["applied"]
    assert t["prior_driven_errors"] == 0 and t["located"]["flip"] is None
    assert twin["located"]["z"] < 2.0
    assert abs(t["located"]["relative_shift"]) < 0.05
    assert a["located"]["relative_shift"] >= 5 * abs(t["located"]["relative_shift"]) + 0.2
