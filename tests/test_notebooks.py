"""Every notebook runs top to bottom against the committed curated runs, and is committed with its outputs."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    namespace = {"__name__": "__main__"}
    cells = _code(path)
    assert cells, f"{path.name} has no code"
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_pinned_to_committed_runs_and_saved_with_outputs(path):
    """Pinned: it names run directories that are committed, never 'the newest run'. Saved with outputs:
    every code cell shows something and the figures are PNGs a reader sees without running anything."""
    source = "\n".join("".join(c["source"]) for c in _code(path))
    pinned = re.findall(r"'(\d{8}-\d{6}_[^']+)'", source)
    assert pinned, f"{path.name} names no curated run"
    for run in pinned:
        assert list((ROOT / "results").glob(f"*/{run}")), f"{path.name}: results/*/{run} is not committed"
    assert "sorted(" not in source and "[-1]" not in source, f"{path.name} picks the newest run"
    cells = _code(path)
    assert all(c.get("outputs") for c in cells), f"{path.name}: run scripts/run_notebooks.py and commit"
    assert any("image/png" in o.get("data", {}) for c in cells for o in c["outputs"]), f"{path.name}: no figure"
