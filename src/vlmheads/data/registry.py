"""Every dataset by name: ``vlmheads.data.load("whatsup:controlled_a", root=..., split="test")``.

Names::

    whatsup:<subset>          controlled_a, controlled_b, coco_qa_one_obj, coco_qa_two_obj,
                              vg_qa_one_obj, vg_qa_two_obj (official release under root)
    vsr:<split>/<part>        random|zeroshot / train|dev|test (released JSONL + images under root)
    cogvsr:<file.jsonl>       decomposed questions (schema in vlmheads.data.cogvsr)
    organism:controlled       WhatsUp Controlled-style relational questions, every pair in every relation
    organism:vsr              VSR-style true/false statements, balanced labels
    organism:decomposed       all four organism sub-question functions on controlled scenes
    organism:train            the training distribution (with its textual priors)

Adding a family = its loader module + one ``DATASETS.register`` line at the bottom of this file.

``split`` is the evaluation protocol's split: None (everything), "val" (AdaptVis's 20% validation
sample) or "test" (the other 80%). Real datasets find their files under ``root``, else under
``$VLMHEADS_DATA/<whatsup|vsr>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..registry import Registry
from .cogvsr import load_cogvsr
from .dataset import Dataset
from .functions import canonical_function
from .organism import organism_examples, organism_vsr_examples
from .protocols import adaptvis_split
from .vsr import load_vsr
from .whatsup import SUBSETS, load_whatsup
from ..errors import InputError, MissingInput

ORGANISM_SETS = ("controlled", "vsr", "decomposed", "train")
ORGANISM_DEFAULT_N = 400
KNOWN = ([f"whatsup:{s}" for s in SUBSETS] + [f"vsr:{s}/{p}" for s in ("random", "zeroshot")
                                              for p in ("train", "dev", "test")]
         + ["cogvsr:<file.jsonl>"] + [f"organism:{s}" for s in ORGANISM_SETS])

# family -> loader(rest, root, split, limit, function, seed, images, **options) -> Dataset. A loader that
# cannot select by function itself gets function=None and ``load`` filters its examples afterwards.
DATASETS: Registry = Registry("dataset family")


def _root(family: str, root) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("VLMHEADS_DATA")
    if env:
        return Path(env) / family
    raise MissingInput(f"{family}: no data root given; pass root=... (--data-root DIR) or set "
                            f"VLMHEADS_DATA to a folder holding {family}/")


@dataclass(frozen=True)
class DatasetFamily:
    loader: Callable[..., Dataset]
    selects_function: bool  # the loader builds examples of the requested function itself
    renders: bool = False  # the loader draws scenes itself (takes a ``rendering``)
    reads_root: bool = False  # the loader finds its files under a data root (--data-root / VLMHEADS_DATA)


def reads_root(name: str) -> bool:
    """Whether dataset ``name`` reads its files from a data root (whatsup, vsr; not cogvsr's own path nor the
    organism's drawn scenes); False for an unknown family (``load`` refuses it with the known ones)."""
    family = name.split(":", 1)[0].strip().lower()
    return family in DATASETS and DATASETS[family].reads_root


def load(name: str, root: str | Path | None = None, split: str | None = None, limit: int | None = None,
         *, function: str | None = None, seed: int = 0, images: bool = True, rendering=None, **options) -> Dataset:
    """Load a dataset by name (see the module docstring). Extra ``options`` go to the family's loader
    (``prompts=`` for WhatsUp, ``style=`` for VSR, ``include_main=`` for CogVSR). ``function`` keeps the
    examples of one cognitive function; a dataset without any is an error naming the ones it has.
    ``rendering`` (a ``vlmheads.world.scenes.Rendering``) draws the organism's scenes (None: as the
    default organism sees them; pass ``loaded.rendering`` for another model); datasets of photographs
    ignore it."""
    if not isinstance(name, str):
        raise InputError(f"dataset name must be a string like 'organism:controlled', got {name!r}")
    family, sep, rest = name.partition(":")
    family = family.strip().lower()
    if not sep or not rest:
        raise InputError(f"dataset name {name!r} needs the form family:name; known: {', '.join(KNOWN)}")
    if family not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be positive, got {limit}")
    if split not in (None, "val", "test"):
        raise InputError(f"unknown split {split!r}; use None (everything), 'val' (AdaptVis's 20%) or 'test' (80%)")
    wanted = canonical_function(function) if function is not None else None
    entry = DATASETS[family]
    if rendering is not None and entry.renders:
        options["rendering"] = rendering
    data = entry.loader(rest, root=root, split=split, limit=None if wanted and not entry.selects_function else limit,
                        function=wanted if entry.selects_function else None, seed=seed, images=images, **options)
    if wanted is not None and not entry.selects_function:
        kept = tuple(e for e in data if e.function == wanted)
        if not kept:
            has = sorted({e.function for e in data})
            raise InputError(f"dataset {name!r} has no {wanted!r} questions; it has {', '.join(has) or 'none'}")
        data = replace(data, examples=kept[:limit] if limit else kept)
    if not len(data):
        note = data.skipped_note()
        raise InputError(f"dataset {name!r} (split={split}) has no examples" + (f"; {note}" if note else ""))
    return data


def _whatsup(rest, root, split, limit, function, seed, images, **options) -> Dataset:
    return load_whatsup(rest, _root("whatsup", root), split=split, limit=limit, images=images, **options)


def _vsr(rest, root, split, limit, function, seed, images, **options) -> Dataset:
    return load_vsr(rest, _root("vsr", root), split=split, limit=limit, images=images, **options)


def _cogvsr(rest, root, split, limit, function, seed, images, **options) -> Dataset:
    return load_cogvsr(rest, split=split, limit=limit, function=function, images=images, **options)


def _organism(rest, root, split, limit, function, seed, images, rendering=None, **options) -> Dataset:
    which = rest.strip().lower()
    if which not in ORGANISM_SETS:
        raise InputError(f"unknown organism dataset {which!r}; known: {', '.join('organism:' + s for s in ORGANISM_SETS)}")
    if options:
        raise InputError(f"organism datasets take no options, got {', '.join(options)}")
    if which == "vsr" and function not in (None, "decision_making"):
        raise InputError(f"dataset 'organism:vsr' has no {function!r} questions; it has decision_making "
                         f"(use organism:decomposed for the other functions)")
    n_total = ORGANISM_DEFAULT_N
    if which == "vsr":
        examples = organism_vsr_examples(n_total, seed=seed, rendering=rendering)
    elif which == "controlled":
        examples = organism_examples(n_total, seed=seed, function=function or "relational", split="controlled",
                                     rendering=rendering)
    elif which == "decomposed":
        examples = organism_examples(n_total, seed=seed, function=function, split="controlled", rendering=rendering)
    else:
        examples = organism_examples(n_total, seed=seed, function=function, split="train", rendering=rendering)
    indices = list(range(n_total)) if split is None else adaptvis_split(n_total, split)
    if limit is not None:
        indices = indices[:limit]
    return Dataset(name=f"organism:{which}", examples=tuple(examples[i] for i in indices),
                   scorer="exact", split=split, n_records=n_total)


DATASETS.register("whatsup", DatasetFamily(_whatsup, selects_function=False, reads_root=True))
DATASETS.register("vsr", DatasetFamily(_vsr, selects_function=False, reads_root=True))
DATASETS.register("cogvsr", DatasetFamily(_cogvsr, selects_function=True))
DATASETS.register("organism", DatasetFamily(_organism, selects_function=True, renders=True))
