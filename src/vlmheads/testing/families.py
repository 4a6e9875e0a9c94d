"""The README's family table, generated from the registries and each family's tiny copy (so it cannot drift):

    .venv/bin/python -m vlmheads.testing.families            # print it
    .venv/bin/python -m vlmheads.testing.families README.md  # rewrite the README's table in place

Rows: every family with a tiny copy (declared adapter or generic), with the module paths its adapter
resolves on that copy, the processor class, and the path the per-head sweep takes there; then every
refusal with its reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

START, END = "<!-- family-table:start -->", "<!-- family-table:end -->"


def _row(family: str) -> str:
    from ..methods.sweep import LayerSweep
    from ..models import GENERIC_FAMILIES, wrap_model
    from ..models.processors import IMAGE_ONLY_PREFIX
    from . import TINY_BUILDERS, tiny_processor

    model, inputs, processor = TINY_BUILDERS[family](gqa=True)
    loaded = wrap_model(model, processor)
    a = loaded.adapter
    name = type(processor or tiny_processor(family)).__name__
    kind = f"`{name.removeprefix(IMAGE_ONLY_PREFIX)}`" + (" (image-only)" if name.startswith(IMAGE_ONLY_PREFIX) else "")
    notes = {f.model_type: f.notes for f in GENERIC_FAMILIES}.get(family, a.notes)
    cells = [family, f"`{type(model).__name__}`", "generic" if a.derived else "declared", f"`{a.layers}`",
             f"`{a.vision_tower}`", f"`{a.projector}`", kind, LayerSweep(loaded, inputs).path, notes.replace("|", "/")]
    return "| " + " | ".join(cells) + " |"


def family_table() -> str:
    from ..models import REFUSALS
    from . import TINY_BUILDERS

    lines = ["| family | HF class | adapter | decoder layers | vision tower | projector | processor | per-head sweep | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(family) for family in TINY_BUILDERS]
    lines += ["", "Refused, with the reason (checked from the config, before any weights are read):", "",
              "| refusal | recognised by | e.g. |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.recognised_by} | {r.examples} |" for r in REFUSALS]
    return "\n".join(lines)


def rewrite(readme: Path) -> bool:
    """Put the current table between the README's markers; True if that changed the file."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{family_table()}\n{END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print("rewrote" if rewrite(Path(sys.argv[1])) else "unchanged", sys.argv[1])
    else:
        print(family_table())
