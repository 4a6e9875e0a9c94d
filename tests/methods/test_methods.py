"""Per-head methods on cases with a known answer, and equality with plain one-trace-per-head loops."""

from __future__ import annotations

import pytest
import torch

from vlmheads.data import organism_examples, organism_pairs
from vlmheads.locate import _agreement
from vlmheads.methods.attribution import attribution_effects
from vlmheads.methods.batches import metric, option_batches
from vlmheads.methods.checks import ablation_check, correct_under
from vlmheads.methods.effects import ablation_effects, head_means, pair_batches, patching_effects
from vlmheads.methods.sweep import LayerSweep
from vlmheads.models import wrap_model
from vlmheads.testing import TINY_BUILDERS
from vlmheads.tracing import edit_heads
from vlmheads.world.scenes import CLEAN

SIGNAL = (1, 2)  # the only head allowed to write into the residual stream


@pytest.fixture(scope="module")
def planted():
    """Tiny LLaVA whose attention output is zero for every head except SIGNAL (o_proj columns zeroed)."""
    model, _, processor = TINY_BUILDERS["llava"](gqa=True, seed=3)
    loaded = wrap_model(model, processor)
    g = loaded.geometry
    with torch.no_grad():
        for layer in range(g.n_layers):
            w = loaded.adapter.o_proj_module(model, layer).weight  # [hidden, H * D]
            for h in range(g.n_heads):
                if (layer, h) != SIGNAL:
                    w[:, h * g.head_dim:(h + 1) * g.head_dim] = 0
            w[:, SIGNAL[1] * g.head_dim:(SIGNAL[1] + 1) * g.head_dim] *= 40 if layer == SIGNAL[0] else 1
    return loaded


def _batches(loaded, n=8, function="relational"):
    return option_batches(loaded, loaded.examples(n, seed=1, function=function, split="controlled"), 4)


def test_metric_by_hand():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 0.0]])
    ids = torch.tensor([[1, 2, 3], [0, 1, 2]])
    answer = torch.tensor([2, 0])
    assert metric(logits, ids, answer, "logit_diff").tolist() == [2.0 - 3.0, 5.0 - 1.0]
    assert metric(logits, ids, answer, "accuracy").tolist() == [0.0, 1.0]
    assert metric(logits, ids, answer, "prob")[1] == pytest.approx(torch.softmax(logits[1], 0)[0].item())
    tiled = metric(torch.cat([logits, logits]), ids, answer, "logit_diff")
    assert tiled.tolist() == [-1.0, 4.0, -1.0, 4.0]


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_ablation_finds_the_planted_head_and_nothing_else(planted, mode):
    r = ablation_effects(planted, _batches(planted), mode)
    scores = r.effects.mean(0)
    others = scores.clone()
    others[SIGNAL] = 0
    # heads that write nothing have no effect (up to rounding: the sweep's last layer computes one query)
    assert others.abs().max() < 1e-6
    assert scores[SIGNAL].abs() > 1e-3
    assert r.path == "fast"


@pytest.mark.parametrize("family", list(TINY_BUILDERS))
def test_sweep_equals_one_nnsight_trace_per_head(tiny_models, family):
    """The batched restart-at-layer sweep gives the same logits as the plain nnsight loop, every family,
    on every path (whole-layer calls and full passes too: Qwen's flattened pixel patches are copied whole)."""
    loaded, inputs = tiny_models(family, gqa=True)
    sweep = LayerSweep(loaded, inputs)
    # the fast path redoes Llama-shaped layers only; Gemma3's sandwich norms and Llama-4's MoE feed-forward
    # are run as whole layers
    assert sweep.path == ("layers" if family in ("gemma3", "llama4") else "fast")
    for path in ("fast", "layers", "full") if sweep.path == "fast" else ("layers", "full"):
        sweep.path = path
        _assert_sweep_matches_traces(loaded, inputs, sweep)


def _assert_sweep_matches_traces(loaded, inputs, sweep):
    g = loaded.geometry
    B = inputs["input_ids"].shape[0]
    for layer in range(g.n_layers):
        def edit(z):
            for h in range(g.n_heads):
                z[h * B:(h + 1) * B, :, h] = 0
        batched = sweep.run_from(layer, edit, g.n_heads).view(g.n_heads, B, -1)
        for h in range(g.n_heads):
            def zero(z, h=h):
                z[:, :, h] = 0
            plain = edit_heads(loaded, inputs, {layer: zero}).logits[:, -1].float()
            torch.testing.assert_close(batched[h], plain, atol=1e-5, rtol=1e-5)


def test_sweep_restarts_add_what_deepstack_adds_between_layers(tiny_models):
    """Qwen3-VL adds visual features to the image positions after its first layers, outside the layer
    modules: the sweep records that difference and adds it back after the same layer on every restart."""
    loaded, inputs = tiny_models("qwen3_vl")
    sweep = LayerSweep(loaded, inputs)
    assert sorted(sweep.injections) == [0]  # deepstack_visual_indexes=[0]: after layer 0 only
    touched = sweep.injections[0].abs().amax(-1) > 0  # [B, S]
    assert torch.equal(touched, loaded.image_token_mask(inputs))  # at the image tokens, nowhere else
    assert sweep.path == "fast"
    sweep.injections = {}  # what the restarts computed before: the check would have refused both paths
    for path in ("fast", "layers"):
        sweep.path = path
        assert not torch.allclose(sweep.run_from(0, None, copies=1), sweep.logits, atol=1e-4)


def test_sweep_on_layers_with_different_masks():
    """A global layer then a sliding-window layer (window 4 < prompt): each restarted layer gets its own
    recorded mask, so the fast path holds (it once reused layer L's mask for every later layer and fell
    back to full passes, which then crashed on Qwen's flattened pixel patches)."""
    from vlmheads.testing.tiny import tiny_qwen2_vl

    model, inputs, _ = tiny_qwen2_vl(gqa=True, sliding_window=4)
    unwindowed, _, _ = tiny_qwen2_vl(gqa=True)  # the same weights without the window
    assert model.config.text_config.layer_types == ["full_attention", "sliding_attention"]
    with torch.no_grad():  # the window matters on this prompt
        assert not torch.allclose(model(**inputs).logits[:, -1], unwindowed(**inputs).logits[:, -1], atol=1e-3)
    loaded = wrap_model(model)
    sweep = LayerSweep(loaded, inputs)
    masks = [sweep.layer_inputs[i][1]["attention_mask"] for i in range(2)]
    assert not torch.equal(masks[0], masks[1])
    assert sweep.path == "fast"
    _assert_sweep_matches_traces(loaded, inputs, sweep)


def test_mean_ablation_uses_the_reference_mean(organism):
    batches = _batches(organism, n=8)
    means = head_means(organism, batches)  # [L, H, D]
    r = ablation_effects(organism, batches, "mean")
    layer, head = 2, 5

    def put(z):
        z[:, :, head] = means[layer, head]
    by_hand = []
    for b in batches:
        base = metric(organism.model(**b.inputs).logits[:, -1], b.option_ids, b.answer)
        edited = metric(edit_heads(organism, b.inputs, {layer: put}).logits[:, -1], b.option_ids, b.answer)
        by_hand.append(base - edited)
    torch.testing.assert_close(r.effects[:, layer, head], torch.cat(by_hand).detach(), atol=1e-4, rtol=1e-4)


def test_patching_on_the_planted_model(planted):
    pairs = organism_pairs(8, seed=2, function="spatial", rendering=CLEAN)
    clean = option_batches(planted, [a for a, _ in pairs], 4)
    corrupt = option_batches(planted, [b for _, b in pairs], 4)
    pc, pk = pair_batches(clean, corrupt)
    for direction in ("noising", "denoising"):
        effects = patching_effects(planted, pc, pk, direction).effects.mean(0)
        others = effects.clone()
        others[SIGNAL] = 0
        assert others.abs().max() < 1e-6
    estimate = attribution_effects(planted, pc, pk).mean(0)
    others = estimate.clone()
    others[SIGNAL] = 0
    assert torch.count_nonzero(others) == 0 and estimate[SIGNAL] != 0


def test_noising_with_identical_pairs_is_zero_and_attribution_tracks_exact(organism):
    pairs = organism_pairs(8, seed=0, function="relational", rendering=CLEAN)
    clean = option_batches(organism, [a for a, _ in pairs], 8)
    corrupt = option_batches(organism, [b for _, b in pairs], 8)
    pc, pk = pair_batches(clean, corrupt)
    same = patching_effects(organism, pc, pc, "noising").effects
    assert same.abs().max() < 1e-4  # patching a head with its own output changes nothing
    exact = patching_effects(organism, pc, pk, "noising").effects.mean(0)
    estimate = attribution_effects(organism, pc, pk).mean(0)
    assert _agreement(estimate, exact)["spearman"] > 0.5  # first-order estimate ranks heads like exact patching


def test_pairs_must_line_up_token_for_token(organism):
    a = option_batches(organism, organism.examples(4, seed=0, function="spatial", split="controlled"), 4)
    b = option_batches(organism, organism.examples(4, seed=0, function="relational", split="controlled"), 4)
    with pytest.raises(ValueError, match="line up token for token"):
        pair_batches(a, b)


def test_ablation_check_counts_and_no_op(organism):
    batches = {"relational_reasoning": _batches(organism, n=8)}
    assert correct_under(organism, batches["relational_reasoning"], []).tolist() == \
        [float(s) for s in correct_under(organism, batches["relational_reasoning"], [])]
    report = ablation_check(organism, batches, [(0, 1), (1, 2)], draws=3, seed=0)
    r = report["functions"]["relational_reasoning"]
    assert len(report["random_sets"]) == 3 and all(len(s) == 2 for s in report["random_sets"])
    assert all((0, 1) not in map(tuple, s) for s in report["random_sets"])
    assert 0 <= r["selected_ablated"]["accuracy"] <= 1 and r["unablated"]["n"] == 8
    with pytest.raises(IndexError, match="layer 9 out of range"):
        correct_under(organism, batches["relational_reasoning"], [(9, 0)])


def test_screen_then_verify_finds_the_planted_head(planted):
    """The attribution screen ranks the one head that writes anything first; the exact ablation verifies the
    top few only (NaN elsewhere) and agrees with the all-head exact run where both ran."""
    from vlmheads.methods.screen import screen_score, screened_ablation
    from vlmheads.methods.selection import ranked

    batches = _batches(planted)
    estimate, verified, heads = screened_ablation(planted, batches, verify=3)
    assert ranked(screen_score(estimate))[0] == SIGNAL and SIGNAL in heads[:2] and len(set(heads)) == 3
    exact = ablation_effects(planted, batches).effects
    done = ~verified.effects[0].isnan()
    assert int(done.sum()) == 3 and bool(done[SIGNAL])
    torch.testing.assert_close(verified.effects[:, done], exact[:, done], atol=1e-5, rtol=1e-5)
    assert ranked(verified.effects.mean(0).abs())[0] == SIGNAL  # the only head whose removal changes anything


def test_out_of_memory_halves_the_pass_and_gives_the_same_effects(organism, monkeypatch):
    """A pass that runs out of memory is retried with half the rows (and fewer heads per pass), down to what
    fits; the effects are the ones an unconstrained run gives."""
    batches = _batches(organism, n=8)
    free = ablation_effects(organism, batches).effects
    real = LayerSweep._fast
    sizes = []

    def small_memory(self, layer, edit, copies, rows=None):
        n = self.batch if rows is None else len(rows)
        sizes.append(copies * n)
        if copies * n > 6:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, layer, edit, copies, rows)

    monkeypatch.setattr(LayerSweep, "_fast", small_memory)
    tight = ablation_effects(organism, batches, rows_per_pass=64).effects
    torch.testing.assert_close(tight, free, atol=1e-5, rtol=1e-5)
    assert sizes[0] > 6 and max(sizes[-10:]) <= 6
    monkeypatch.setattr(LayerSweep, "_fast", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError, match="one row per pass does not fit"):
        ablation_effects(organism, batches, rows_per_pass=4)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_the_screen_runs_in_sub_batches_halved_on_out_of_memory(organism, mode, monkeypatch):
    """The attribution screen's forward + backward runs in sub-batches (rows kept with the batch's padding):
    each row's estimate is what the whole batch gives it; a sub-batch that runs out of memory is halved
    and retried, down to one row, then the error names the fix."""
    from vlmheads.methods import screen

    batches = _batches(organism, n=8)
    means = head_means(organism, batches) if mode == "mean" else None
    whole = screen.ablation_attribution(organism, batches, mode, means=means, rows=8)
    sizes, real = [], screen._estimate

    def small_memory(loaded, batch, rows, *args):
        sizes.append(len(rows))
        if len(rows) > 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB (simulated)")
        return real(loaded, batch, rows, *args)

    monkeypatch.setattr(screen, "_estimate", small_memory)
    tight = screen.ablation_attribution(organism, batches, mode, means=means, rows=8)
    torch.testing.assert_close(tight, whole, atol=1e-5, rtol=1e-5)
    done = [n for n in sizes if n <= 3]  # the sub-batches that ran: every example once
    assert sizes[0] == batches[0].size > 3 and sizes[1] == sizes[0] // 2 and sum(done) == sum(b.size for b in batches)
    monkeypatch.setattr(screen, "_estimate", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError, match="one row per pass does not fit"):
        screen.ablation_attribution(organism, batches, mode, means=means, rows=2)
    monkeypatch.setattr(screen, "_estimate", lambda *a: (_ for _ in ()).throw(RuntimeError("a real bug")))
    with pytest.raises(RuntimeError, match="a real bug"):  # not memory: raised as it is
        screen.ablation_attribution(organism, batches, mode, means=means, rows=2)


@pytest.mark.parametrize("family", ["qwen2_vl", "internvl", "llava_next"])
def test_the_screen_gives_each_row_its_whole_batch_estimate_in_bf16(family):
    """Sub-batches of a bf16 batch (Qwen's flattened patches and InternVL's tiles cut by rows) give the
    whole batch's estimates, and the default sub-batch comes from the free memory."""
    from vlmheads.methods import screen
    from vlmheads.methods.batches import OptionBatch

    model, inputs, processor = TINY_BUILDERS[family](gqa=True)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    loaded = wrap_model(model, processor)
    batch = OptionBatch(inputs=inputs, option_ids=torch.tensor([[3, 5], [3, 5]]), answer=torch.tensor([0, 1]),
                        examples=())
    from vlmheads.methods.effects import backward_rows

    assert backward_rows(loaded, inputs["input_ids"].shape[1]) >= 2  # a tiny model: the batch fits
    whole = screen.ablation_attribution(loaded, [batch], rows=2)
    rows = screen.ablation_attribution(loaded, [batch], rows=1)
    assert whole.shape == (2, loaded.geometry.n_layers, loaded.geometry.n_heads) and float(whole.abs().max()) > 0
    torch.testing.assert_close(rows, whole, atol=0.02 * float(whole.abs().max()), rtol=0)


def test_attribution_patching_runs_in_sub_batches_halved_on_out_of_memory(organism, monkeypatch):
    """Attribution patching (clean + corrupted twin) runs in sub-batches too: the same estimates as whole
    batches, a sub-batch that runs out of memory halved and retried."""
    from vlmheads.methods import attribution

    pairs = organism.pairs(8, seed=0, function="relational")
    clean, corrupt = pair_batches(option_batches(organism, [a for a, _ in pairs], 8),
                                  option_batches(organism, [b for _, b in pairs], 8))
    whole = attribution_effects(organism, clean, corrupt)
    sizes, real = [], attribution._noising_estimate

    def small_memory(loaded, c, k, rows, *args):
        sizes.append(len(rows))
        if len(rows) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(loaded, c, k, rows, *args)

    monkeypatch.setattr(attribution, "_noising_estimate", small_memory)
    tight = attribution_effects(organism, clean, corrupt, rows=8)
    torch.testing.assert_close(tight, whole, atol=1e-5, rtol=1e-5)
    assert sizes[0] > 3 and sum(n for n in sizes if n <= 3) == sum(b.size for b in clean)


def test_patching_streams_its_sources(organism):
    """Noising patching computes one batch's corrupted head outputs at a time and still equals the
    one-trace-per-head loop."""
    pairs = organism_pairs(8, seed=2, function="spatial", rendering=CLEAN)
    clean = option_batches(organism, [a for a, _ in pairs], 4)
    corrupt = option_batches(organism, [b for _, b in pairs], 4)
    clean, corrupt = pair_batches(clean, corrupt)
    effects = patching_effects(organism, clean, corrupt, "noising").effects  # [N, L, H]
    for b, (c, k) in enumerate(zip(clean, corrupt)):
        source = LayerSweep(organism, k.inputs, check=False).z
        layer, head = 2, 1

        def patch(z):
            z[:, :, head] = source[layer][:, :, head]
        edited = edit_heads(organism, c.inputs, {layer: patch}).logits[:, -1]
        base = organism.model(**c.inputs).logits[:, -1]
        expect = metric(base, c.option_ids, c.answer) - metric(edited, c.option_ids, c.answer)
        torch.testing.assert_close(effects[b * 4:(b + 1) * 4, layer, head], expect.detach(), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def redundant_pair():
    """Tiny LLaVA where heads L1H2 and L1H3 write the same large signal (same queries, shared key/value head,
    the same o_proj columns x3000), and the answer "left" is read along that signal's direction. The final
    norm restores the residual's scale when either head is removed, so each alone seems to do nothing;
    removing both takes the answer away. Every other head keeps its random weights."""
    model, _, processor = TINY_BUILDERS["llava"](gqa=True, seed=3)
    loaded = wrap_model(model, processor)
    d = loaded.geometry.head_dim
    examples = [e for e in organism_examples(32, seed=1, function="relational", split="controlled", rendering=CLEAN)
                if e.answer == "left"][:8]
    batches = option_batches(loaded, examples, 8)
    with torch.no_grad():
        attn = model.model.language_model.layers[1].self_attn
        attn.q_proj.weight[3 * d:4 * d] = attn.q_proj.weight[2 * d:3 * d]  # heads 2, 3 share kv head 1
        attn.o_proj.weight[:, 2 * d:3 * d] *= 3000
        attn.o_proj.weight[:, 3 * d:4 * d] = attn.o_proj.weight[:, 2 * d:3 * d]
        seen = {}
        hook = model.model.language_model.norm.register_forward_hook(
            lambda module, args, out: seen.__setitem__("h", out[:, -1]))
        model(**batches[0].inputs)
        hook.remove()
        direction = seen["h"].mean(0)
        model.lm_head.weight[processor.tokenizer.convert_tokens_to_ids("left")] += 5 * direction / direction.norm()
    return loaded, batches


def test_redundancy_aware_attribution_finds_heads_single_ablation_misses(redundant_pair):
    from vlmheads.methods.redundancy import redundancy_scores
    from vlmheads.methods.selection import ranked

    loaded, batches = redundant_pair
    pair = [(1, 2), (1, 3)]
    single = ablation_effects(loaded, batches).effects.mean(0)
    assert all(ranked(single).index(h) >= 4 for h in pair)  # bottom half of 8 heads
    assert all(abs(float(single[h])) < 0.01 * float(single.max()) for h in pair)
    score, low, high, summary = redundancy_scores(loaded, batches, n_subsets=96, seed=0, n_boot=50)
    assert all(ranked(score).index(h) < 4 for h in pair)
    assert all(float(low[h]) > 1.0 for h in pair)  # intervals clear of zero
    assert summary["subsets"] == 96 and 0 < summary["r2"] <= 1


def test_ridge_fit_by_hand():
    """drop = 10 if A and B are both ablated, + 4 if C is: the fit gives A and B about density x 10, C about 4."""
    from vlmheads.methods.redundancy import ridge_fit

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4000, 1, 3, generator=g) < 0.25  # heads A, B, C
    drops = 10.0 * (masks[:, 0, 0] & masks[:, 0, 1]) + 4.0 * masks[:, 0, 2]
    beta = ridge_fit(masks, drops.float(), ridge=0.0)
    assert abs(float(beta[0, 0]) - 2.5) < 0.3 and abs(float(beta[0, 1]) - 2.5) < 0.3
    assert abs(float(beta[0, 2]) - 4.0) < 0.3
