"""The README's family table is the generated one (so it cannot drift from the registries)."""

from pathlib import Path

from vlmheads.testing.families import END, START, family_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_family_table_is_current():
    text = README.read_text()
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == family_table(), "run: .venv/bin/python -m vlmheads.testing.families README.md"
    assert table.count("| generic |") == 6 and table.count("| declared |") == 6
