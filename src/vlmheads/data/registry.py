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

``split`` is the evaluation protocol's split: None (everything), "val" (AdaptVis's 20% validation
sample) or "test" (the other 80%). Real datasets find their files under ``root``, else under
``$VLMHEADS_DATA/<whatsup|vsr>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .cogvsr import load_cogvsr
from .dataset import Dataset
from .organism import organism_examples, organism_vsr_examples
from .protocols import adaptvis_split
from .vsr import load_vsr
from .whatsup import SUBSETS, load_whatsup

ORGANISM_SETS = ("controlled", "vsr", "decomposed", "train")
ORGANISM_DEFAULT_N = 400
KNOWN = ([f"whatsup:{s}" for s in SUBSETS] + [f"vsr:{s}/{p}" for s in ("random", "zeroshot")
                                              for p in ("train", "dev", "test")]
         + ["cogvsr:<file.jsonl>"] + [f"organism:{s}" for s in ORGANISM_SETS])


def _root(family: str, root) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("VLMHEADS_DATA")
    if env:
        return Path(env) / family
    raise FileNotFoundError(f"{family}: no data root given; pass root=... (--data-root DIR) or set "
                            f"VLMHEADS_DATA to a folder holding {family}/")


def load(name: str, root: str | Path | None = None, split: str | None = None, limit: int | None = None,
         *, function: str | None = None, seed: int = 0, images: bool = True, **options) -> Dataset:
    """Load a dataset by name (see the module docstring). Extra ``options`` go to the family's loader
    (``prompts=`` for WhatsUp, ``style=`` for VSR, ``include_main=`` for CogVSR)."""
    family, sep, rest = name.partition(":")
    family = family.strip().lower()
    if not sep or not rest:
        raise ValueError(f"dataset name {name!r} needs the form family:name; known: {', '.join(KNOWN)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    if family == "whatsup":
        data = load_whatsup(rest, _root("whatsup", root), split=split, limit=limit, images=images, **options)
    elif family == "vsr":
        data = load_vsr(rest, _root("vsr", root), split=split, limit=limit, images=images, **options)
    elif family == "cogvsr":
        data = load_cogvsr(rest, split=split, limit=limit, function=function, images=images, **options)
    elif family == "organism":
        data = _organism(rest.strip().lower(), split, limit, function, seed)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(KNOWN)}")
    if not len(data):
        note = data.skipped_note()
        raise ValueError(f"dataset {name!r} (split={split}) has no examples" + (f"; {note}" if note else ""))
    return data


def _organism(which: str, split, limit, function, seed) -> Dataset:
    if which not in ORGANISM_SETS:
        raise ValueError(f"unknown organism dataset {which!r}; known: {', '.join('organism:' + s for s in ORGANISM_SETS)}")
    n_total = ORGANISM_DEFAULT_N
    if which == "vsr":
        examples = organism_vsr_examples(n_total, seed=seed)
    elif which == "controlled":
        examples = organism_examples(n_total, seed=seed, function=function or "relational", split="controlled")
    elif which == "decomposed":
        examples = organism_examples(n_total, seed=seed, function=function, split="controlled")
    else:
        examples = organism_examples(n_total, seed=seed, function=function, split="train")
    indices = list(range(n_total)) if split is None else adaptvis_split(n_total, split)
    if limit is not None:
        indices = indices[:limit]
    return Dataset(name=f"organism:{which}", examples=tuple(examples[i] for i in indices),
                   scorer="exact", split=split, n_records=n_total)
