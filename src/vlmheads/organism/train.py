"""Train the model organism on freshly rendered scenes (seeded; about 26 minutes on 2 CPU cores).

Each step draws a new batch of scenes and sub-questions (the "train" split with its textual priors),
builds LLaVA chat sequences ``USER: <image>\\n{question} ASSISTANT: {answer}</s>`` with the real
processor, and minimises cross-entropy on the answer token and the end-of-sequence token. The
tokenizer pads on the left, so every sequence ends at the same position:

    logits[:, -3] -> answer token (ids[:, -2])      logits[:, -2] -> "</s>" (ids[:, -1])

Two auxiliary losses stand in for what every real LLaVA starts from (CLIP pre-training and LLaVA's
stage-1 feature alignment):

* identity: a linear probe on each projected image token names the object in that patch (background
  or one of the colour x shape pairs). Without it the image features collapsed while the decoder
  learned the textual priors (measured: chance accuracy, shrinking feature spread after 500 steps).
* alignment: read through the decoder's own input-embedding matrix, each object patch's projected
  feature must score its colour word and its shape word highest among the colour / shape words.
  Without it the decoder never learned to match a word of the question with a patch: object
  questions stayed at chance for 5,500 steps (and 800 steps of object questions alone) while the
  position questions were learned.
* decomposition: on decision questions ("is X left of Y?") the answer position must also rank the
  true relation first among the four relation words, the relational sub-answer the decision rests
  on. The yes/no label is an equality test between that relation and the claimed one, so neither
  alone predicts it: without this loss decision stayed at chance in every run (8,000 steps) while
  relational accuracy rose to 78%.

Curriculum: the first ``object_only_steps`` steps ask object questions only, then the mix blends
linearly into ``function_weights`` by ``blend_until``. Object questions name an object by one
attribute and ask for the other, so the answer position must find one patch by its colour (or
shape) and read its shape (or colour). Learned first, alone, this lookup takes about 800 steps
(measured: 0.98 object accuracy at step 800); mixed from the start, it was never found in 8,000
steps (object perception at chance while the other three functions were learned), and adding it
afterwards destroyed the others. Learned first, it survives the mix and the later functions build
on it.

The probe is dropped after training; the saved model is a plain LLaVA.

Recipes (``RECIPES``): ``competent`` is the recipe above from scratch (the shipped competent organism,
the clean case for locating heads). ``prior`` starts from a competent organism and fine-tunes it on
a strong textual prior (``prior_strength`` 0.99) and a weakened rendering (lower contrast, pixel noise),
which is what made it fail for the prior's sake in the feasibility study
(``../shared/research/organism-prior-study.md``); the saved model records its rendering in its config
(``vlmheads_rendering``) so every loader draws the organism's scenes that way for it.

``setting-base`` and ``setting`` do the same on LLaVA's image-token share: the scenes drawn on a 144-px
canvas of 9x9 16-px patches (81 image tokens, most of them background; ``SETTING_GEOMETRY``).
``setting-base`` warm-starts from organism-competent (``transplant``: every weight copied, the vision
tower's position grid resampled from 4x4 to 9x9) and relearns on clean wide scenes; ``setting``
fine-tunes that run's model (``--init``) on the prior (0.95) and the weakened wide rendering, with more
spatial questions in the mix. Its object and spatial questions are asked about scenes drawn without the
prior (``prior_free_functions``): the prior is a regularity of relational language (captions say "a cup
on a table"), and drawn into every scene it let the quadrant of an object be guessed from its shape
(spatial 0.99 on prior-consistent, 0.92 on prior-violating scenes). ``text_only_batch`` adds questions
without an image, answered by the prior (LLaVA's instruction mix holds text-only conversations); tried
for text dominance, it left the answer position's image attention where it was, and no recipe uses it.
Warm-starting
into 8-px patches instead (72-px images) was tried and dropped: an object then spans 2x2 patches and
after 1,000 steps the vision tower still told colours apart (alignment accuracy 1.00) but not shapes
(0.34, chance 0.25); trained alone on patch identity it reached 0.57 in 600 steps.

Checkpoints: every ``checkpoint_every`` steps the whole training state (weights, probe, optimiser,
random generators, history) goes to ``<run>/checkpoint/state.pt`` (written atomically); ``train(...,
resume=True)`` continues from it and ends with the same weights as an uninterrupted run.

Held-out controlled scenes are scored every ``eval_every`` steps (accuracy per function, argmax over
the options' tokens), together with the spread of image features across images, the collapse
signal found in the feasibility run.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .build import MICRO_ARCH, OrganismArch, build_model, build_processor
from ..runs import load_torch_checked, save_torch_atomic
from ..world.questions import DECISION_FN, OBJECT_FN, ORGANISM_FUNCTIONS, RELATIONAL_FN, SPATIAL_FN, sample_question
from ..world.scenes import (CELL, CLEAN, COLOURS, PRIOR_STRENGTH, RELATIONS, SHAPES, Rendering, Scene, object_masks,
                            render, sample_scene)
from ..errors import InputError, MissingInput

N_PATCH_CLASSES = 1 + len(COLOURS) * len(SHAPES)  # background + every colour x shape


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 9000
    batch_size: int = 32
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    eval_examples: int = 128  # per function
    threads: int = 2
    patch_loss_weight: float = 0.5  # auxiliary per-patch object-identity loss (see module docstring)
    align_loss_weight: float = 0.5  # auxiliary patch-to-word-embedding alignment loss
    decompose_loss_weight: float = 0.5  # decision questions also rank the true relation
    arch: OrganismArch = field(default_factory=OrganismArch)
    function_weights: tuple[tuple[str, float], ...] = (
        (OBJECT_FN, 0.15), (SPATIAL_FN, 0.1), (RELATIONAL_FN, 0.3), (DECISION_FN, 0.45))
    # curriculum: object questions only for the first ``object_only_steps``, then a linear blend
    # into ``function_weights`` that ends at ``blend_until`` (see module docstring)
    object_only_steps: int = 600
    blend_until: int = 1200
    prior_strength: float = PRIOR_STRENGTH  # share of a prior pair's training scenes in its usual relation
    # functions whose training scenes ignore the prior (every relation equally likely): the prior is a
    # regularity of relational language, so perception questions need not carry it
    prior_free_functions: tuple[str, ...] = ()
    # per step, this many text-only questions (no image) about prior pairs, answered by the prior: the
    # decoder learns the prior from language alone, as LLaVA's instruction mix holds text-only conversations
    text_only_batch: int = 0
    rendering: dict | None = None  # ``Rendering`` settings of every training and held-out image (None: clean)
    init_from: str | None = None  # a saved organism to start from (a directory, or "organism-competent")
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        drawn = Rendering.from_dict(self.rendering).image_size
        if drawn != self.arch.image_size:
            raise InputError(f"the rendering draws {drawn}-px images but the model takes {self.arch.image_size} px "
                             f"(arch.image_size must be the rendering's margin + 4 x its cell)")
        unknown = sorted(set(self.prior_free_functions) - set(ORGANISM_FUNCTIONS))
        if unknown:
            raise InputError(f"prior_free_functions: unknown function(s) {unknown}; "
                             f"expected some of {ORGANISM_FUNCTIONS}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["function_weights"] = dict(self.function_weights)
        return d


MICRO_CONFIG = TrainConfig(steps=3, batch_size=4, eval_every=3, eval_examples=4, warmup=1, arch=MICRO_ARCH,
                           object_only_steps=1, blend_until=2)

# the weakened rendering of the prior recipe: see the module docstring
PRIOR_RENDERING = {"contrast": 0.4, "noise": 8.0}
# LLaVA's image-token share: the scenes on a 144-px canvas of 9x9 16-px patches (81 image tokens, objects on
# every other patch, background between; see ``vlmheads.world.scenes``)
SETTING_GEOMETRY = {"cell": 32, "margin": 16}
SETTING_ARCH = OrganismArch(image_size=Rendering.from_dict(SETTING_GEOMETRY).image_size, patch_size=CELL)
SETTING_RENDERING = {**PRIOR_RENDERING, **SETTING_GEOMETRY}
RECIPES: dict[str, TrainConfig] = {
    "competent": TrainConfig(),
    "prior": TrainConfig(steps=800, lr=5e-4, warmup=30, eval_every=200, object_only_steps=0, blend_until=0,
                         prior_strength=0.99, rendering=PRIOR_RENDERING, init_from="organism-competent"),
    "setting-base": TrainConfig(steps=7000, batch_size=16, eval_every=500, arch=SETTING_ARCH,
                                rendering=SETTING_GEOMETRY, init_from="organism-competent"),
    "setting": TrainConfig(steps=1200, lr=5e-4, warmup=30, eval_every=200, object_only_steps=0, blend_until=0,
                           prior_strength=0.95, rendering=SETTING_RENDERING, arch=SETTING_ARCH, init_from=None,
                           function_weights=((OBJECT_FN, 0.15), (SPATIAL_FN, 0.3), (RELATIONAL_FN, 0.2),
                                             (DECISION_FN, 0.35)),
                           prior_free_functions=(OBJECT_FN, SPATIAL_FN)),
}
# recipes that fine-tune a model only a run of another recipe makes (no default to start from)
NEEDS_INIT = {"setting": "setting-base"}
# the shipped organism each recipe's --install replaces (the others make intermediate or retired models)
INSTALLS = {"competent": "organism-competent", "setting": "organism"}


def chat_text(processor, question: str, answer: str | None = None, image: bool = True) -> str:
    content = [{"type": "image"}] * image + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if answer is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return processor.apply_chat_template(messages, tokenize=False)


def function_weights_at(step: int, config: TrainConfig) -> dict[str, float]:
    """The share of each function's questions in the batch at ``step`` (the curriculum)."""
    final = dict(config.function_weights)
    if step >= config.blend_until:
        return final
    if step < config.object_only_steps:
        t = 0.0
    else:
        t = (step - config.object_only_steps) / max(1, config.blend_until - config.object_only_steps)
    start = {f: (1.0 if f == OBJECT_FN else 0.0) for f in final}
    return {f: (1 - t) * start[f] + t * final[f] for f in final}


def _sample_batch(rng: random.Random, config: TrainConfig, step: int):
    weights_now = function_weights_at(step, config)
    names = list(weights_now)
    weights = [weights_now[f] for f in names]
    scenes, questions = [], []
    for _ in range(config.batch_size):
        if config.prior_free_functions:  # the function first: it says whether the scene follows the prior
            function = rng.choices(names, weights)[0]
            strength = 0.0 if function in config.prior_free_functions else config.prior_strength
            scene = sample_scene(rng, split="train", prior_strength=strength)
        else:  # (the order every earlier recipe was trained with)
            scene = sample_scene(rng, split="train", prior_strength=config.prior_strength)
            function = rng.choices(names, weights)[0]
        scenes.append(scene)
        questions.append(sample_question(scene, function, rng))
    return scenes, questions


def _sample_text_only(rng: random.Random, n: int):
    """``n`` relational and decision questions (half each) about scenes of prior pairs in their usual
    relation: asked without the image, the prior's answer is the only one language supports."""
    questions = []
    while len(questions) < n:
        scene = sample_scene(rng, split="train", prior_strength=1.0)
        if scene.prior == "consistent":
            questions.append(sample_question(scene, (RELATIONAL_FN, DECISION_FN)[len(questions) % 2], rng))
    return questions


MIN_OBJECT_SHARE = 0.2  # an object labels a patch holding at least this share of the object's pixels


def patch_labels(scenes: list[Scene], rendering: Rendering = CLEAN, patch: int = CELL):
    """``[B, n_patches]`` long, raster order over ``patch``-pixel patches of ``render(scene, rendering)``:
    0 for background, else 1 + colour * n_shapes + shape of the object drawing the most pixels in the
    patch, when the patch holds at least ``MIN_OBJECT_SHARE`` of that object's pixels; -100 (ignored by
    the losses) for a patch an object only grazes. With one cell per patch (the default) every object
    labels exactly its cell (a one-pixel spill into the next cell is ignored)."""
    import numpy as np
    import torch

    side = rendering.image_size // patch
    colours, shapes = list(COLOURS), list(SHAPES)
    labels = torch.zeros(len(scenes), side * side, dtype=torch.long)
    for i, scene in enumerate(scenes):
        masks = object_masks(scene, rendering)  # [n_objects, H, W]
        counts = masks.reshape(len(masks), side, patch, side, patch).sum(axis=(2, 4)).reshape(len(masks), -1)
        best = counts.argmax(0)  # [n_patches] the object with most pixels in each patch
        share = counts[best, np.arange(counts.shape[1])] / masks.reshape(len(masks), -1).sum(1)[best]  # [n_patches]
        ids = np.array([1 + colours.index(o.colour) * len(shapes) + shapes.index(o.shape) for o in scene.objects])
        row = np.where(share >= MIN_OBJECT_SHARE, ids[best], np.where(counts.max(0) > 0, -100, 0))
        labels[i] = torch.from_numpy(row)
    return labels


def word_labels(identity):
    """Colour and shape indices ``[B, n_patches]`` from ``patch_labels`` output, -100 on background and
    ignored patches."""
    import torch

    objects = identity - 1  # colour * n_shapes + shape, -1 on background
    colours = torch.where(identity > 0, objects // len(SHAPES), -100)
    shapes = torch.where(identity > 0, objects % len(SHAPES), -100)
    return colours, shapes


def _lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def evaluate_options(model, processor, examples, batch_size: int = 64) -> list[bool]:
    """Correctness per example (option-likelihood argmax, the library's scorer) for a model in training."""
    from ..evaluation.options import score_options
    from ..models.loading import wrap_model

    return [s.correct for s in score_options(wrap_model(model, processor), examples, batch_size=batch_size)]


def image_feature_spread(model, pixel_values) -> float:
    """Std across images of the projected image features, relative to their overall std.

    Near 0 means every image maps to the same features (collapse to position embeddings)."""
    import torch

    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pixel_values)
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
        feats = feats.reshape(pixel_values.shape[0], -1, feats.shape[-1])  # [B, n_image_tokens, hidden]
        across_images = feats.std(dim=0).mean()
        overall = feats.std()
    return float(across_images / (overall + 1e-8))


def _initial_model(config: TrainConfig, processor, log=print):
    """A fresh organism of ``config.arch``, or the saved one ``config.init_from`` names; a saved one of
    another image size is carried over into a fresh ``config.arch`` model by ``transplant``."""
    if config.init_from is None:
        return build_model(config.arch, processor.tokenizer, seed=config.seed)
    from transformers import LlavaForConditionalGeneration

    from ..models.loading import check_model_source

    source = LlavaForConditionalGeneration.from_pretrained(check_model_source(config.init_from), dtype="float32")
    if source.config.vision_config.image_size == config.arch.image_size:
        return source
    model = build_model(config.arch, processor.tokenizer, seed=config.seed)
    changed = transplant(source, model)
    log(f"warm start from {config.init_from}: every tensor of the same shape copied; resized: {', '.join(changed)}")
    return model


def transplant(source, target) -> list[str]:
    """Copy ``source``'s weights into ``target``, an organism of the same sizes and patch size but another
    image size (a warm start). Tensors of equal shape are copied; the vision tower's position embeddings
    are resampled bicubically from the old patch grid to the new one (the class token's row kept).
    Returns the names of the resampled tensors; any other mismatch is an error."""
    import torch

    src, out = source.state_dict(), target.state_dict()
    changed = []
    with torch.no_grad():
        for name, tensor in out.items():
            old = src.get(name)
            if old is None:
                raise InputError(f"warm start: {name} has no counterpart in the source model")
            if old.shape == tensor.shape:
                tensor.copy_(old)
            elif name.endswith("position_embedding.weight"):  # [1 + side^2, hidden]: class row, then the grid
                old_side, side = int(round((old.shape[0] - 1) ** 0.5)), int(round((tensor.shape[0] - 1) ** 0.5))
                grid = old[1:].T.reshape(1, -1, old_side, old_side)  # [1, hidden, old_side, old_side]
                grid = torch.nn.functional.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
                tensor.copy_(torch.cat([old[:1], grid.reshape(-1, side * side).T]))  # [1 + side^2, hidden]
                changed.append(name)
            else:
                raise InputError(f"warm start: {name} is {tuple(old.shape)} in the source and "
                                 f"{tuple(tensor.shape)} here; only the image size may differ")
    return changed  # (the state dict's tensors are the target's own: copying into them was the load)


def train(config: TrainConfig, out_dir: str | Path, log=print, checkpoint_dir: str | Path | None = None,
          resume: bool = False, stop_after: int | None = None) -> dict:
    """Train and save the model + processor into ``out_dir``; returns the history. ``checkpoint_dir``
    receives the training state every ``config.checkpoint_every`` steps; ``resume`` continues from it.
    ``stop_after``: leave after that many steps, without saving a model (an interruption, for tests)."""
    import torch

    from ..data import organism_examples

    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    rendering = Rendering.from_dict(config.rendering)
    processor = build_processor(config.arch)
    model = _initial_model(config, processor, log)
    if rendering != CLEAN:  # declared from the start: every loader (and the held-out checks) draws scenes this way
        model.config.vlmheads_rendering = rendering.to_dict()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"organism: {n_params / 1e6:.2f}M parameters; {config.steps} steps of {config.batch_size}"
        + (f", from {config.init_from}" if config.init_from else "") + ("" if rendering == CLEAN else f", {rendering}"))

    if config.init_from is not None:  # (build_model seeded the generator for a fresh model)
        torch.manual_seed(config.seed)
    patch_probe = torch.nn.Linear(model.config.text_config.hidden_size, N_PATCH_CLASSES)
    projected = {}
    hook = model.model.multi_modal_projector.register_forward_hook(
        lambda module, args, output: projected.__setitem__("features", output))  # [B, n_patches, hidden]
    tok = processor.tokenizer
    colour_ids = torch.tensor([tok.convert_tokens_to_ids(c) for c in COLOURS])
    shape_ids = torch.tensor([tok.convert_tokens_to_ids(c) for c in SHAPES])
    relation_ids = torch.tensor([tok.convert_tokens_to_ids(r) for r in RELATIONS])
    params = list(model.named_parameters()) + [("patch_probe." + n, p) for n, p in patch_probe.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.98))
    held_out = {f: organism_examples(config.eval_examples, seed=10_000 + config.seed, function=f,
                                     split="controlled", rendering=rendering) for f in ORGANISM_FUNCTIONS}
    rng = random.Random(config.seed)
    text_rng = random.Random(config.seed + 1)  # text-only questions have their own generator
    history = {"config": config.to_dict(), "n_params": n_params, "log": []}
    started = time.time()
    running = None
    first = 0
    state_path = Path(checkpoint_dir) / "state.pt" if checkpoint_dir is not None else None
    if resume:
        if state_path is None or not state_path.is_file():
            raise MissingInput(f"no checkpoint to resume from at {state_path}")
        state, why = load_torch_checked(state_path)
        if why is not None:
            raise InputError(f"cannot resume from {state_path}: {why}; a damaged checkpoint is never trusted: "
                             f"start a fresh run")
        model.load_state_dict(state["model"])
        patch_probe.load_state_dict(state["probe"])
        optim.load_state_dict(state["optimizer"])
        rng.setstate(state["python_rng"])
        text_rng.setstate(state["text_rng"])
        torch.set_rng_state(state["torch_rng"])
        first, running, history = state["step"], state["running"], state["history"]
        started -= state["seconds"]
        log(f"resumed at step {first} from {state_path}")
    for step in range(first, config.steps):
        if stop_after is not None and step >= stop_after:
            hook.remove()
            return history
        model.train()
        scenes, questions = _sample_batch(rng, config, step)
        enc = processor(text=[chat_text(processor, q.text, q.answer) for q in questions],
                        images=[render(s, rendering) for s in scenes], return_tensors="pt", padding=True)
        ids = enc["input_ids"]  # [B, S], left padded
        logits = model(**enc).logits  # [B, S, vocab]
        answer_loss = torch.nn.functional.cross_entropy(logits[:, -3], ids[:, -2])
        eos_loss = torch.nn.functional.cross_entropy(logits[:, -2], ids[:, -1])
        patch_logits = patch_probe(projected["features"])  # [B, n_patches, classes]
        identity = patch_labels(scenes, rendering, config.arch.patch_size)  # [B, n_patches]
        patch_loss = torch.nn.functional.cross_entropy(patch_logits.flatten(0, 1), identity.flatten())
        words = model.get_input_embeddings().weight  # [vocab, hidden]
        colour_target, shape_target = word_labels(identity)
        feats = projected["features"].flatten(0, 1)  # [B * n_patches, hidden]
        align_loss = (
            torch.nn.functional.cross_entropy(feats @ words[colour_ids].T, colour_target.flatten())
            + torch.nn.functional.cross_entropy(feats @ words[shape_ids].T, shape_target.flatten()))
        decision_rows = torch.tensor([q.function == DECISION_FN for q in questions])
        if decision_rows.any():
            relation_logits = logits[decision_rows, -3][:, relation_ids]  # [n_decision, 4]
            relation_target = torch.tensor([RELATIONS.index(s.relation) for s in scenes])[decision_rows]
            decompose_loss = torch.nn.functional.cross_entropy(relation_logits, relation_target)
        else:
            decompose_loss = logits.new_zeros(())
        loss = answer_loss + 0.2 * eos_loss + config.patch_loss_weight * patch_loss \
            + config.align_loss_weight * align_loss + config.decompose_loss_weight * decompose_loss
        if config.text_only_batch:
            text_only = _sample_text_only(text_rng, config.text_only_batch)
            t_enc = processor(text=[chat_text(processor, q.text, q.answer, image=False) for q in text_only],
                              return_tensors="pt", padding=True)
            t_logits = model(**t_enc).logits  # [B_text, S_text, vocab], left padded like the image batch
            loss = loss + torch.nn.functional.cross_entropy(t_logits[:, -3], t_enc["input_ids"][:, -2])
        for group in optim.param_groups:
            group["lr"] = _lr_at(step, config)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optim.step()
        value = answer_loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            acc = {f: sum(c) / len(c) for f, c in
                   ((f, evaluate_options(model, processor, ex)) for f, ex in held_out.items())}
            spread = image_feature_spread(model, enc["pixel_values"])
            entry = {"step": step + 1, "answer_loss": round(running, 4), "patch_loss": round(patch_loss.item(), 4),
                     "align_loss": round(align_loss.item(), 4), "decompose_loss": round(decompose_loss.item(), 4),
                     "seconds": round(time.time() - started, 1), "feature_spread": round(spread, 4),
                     "accuracy": {k: round(v, 4) for k, v in acc.items()}}
            history["log"].append(entry)
            log(json.dumps(entry))
        if state_path is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            save_torch_atomic(state_path, {
                "step": step + 1, "model": model.state_dict(), "probe": patch_probe.state_dict(),
                "optimizer": optim.state_dict(), "python_rng": rng.getstate(), "text_rng": text_rng.getstate(),
                "torch_rng": torch.get_rng_state(), "running": running, "history": history,
                "seconds": time.time() - started})
    hook.remove()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(history, indent=1) + "\n")
    return history
