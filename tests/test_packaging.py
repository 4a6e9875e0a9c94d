"""What a wheel ships: every package folder of the library is declared, and every third-party module the
library imports is a declared dependency."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_declared():
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    declared = set(PROJECT["tool"]["setuptools"]["packages"]) - {"heads"}
    assert found == declared, f"declare in pyproject.toml: {sorted(found - declared)}; gone: {sorted(declared - found)}"


def test_every_third_party_import_is_a_dependency():
    names = {"PIL": "pillow"}  # import name -> distribution name, where they differ
    declared = {d.split("=")[0].split(">")[0].split("<")[0].strip().lower()
                for d in PROJECT["project"]["dependencies"]}
    optional = {"matplotlib",  # the notebooks' figures: the [notebooks] and [test] extras
                "huggingface_hub"}  # transformers' own (pinned by it)
    assert "matplotlib" in PROJECT["project"]["optional-dependencies"]["notebooks"]
    imported = set()
    for path in [*(ROOT / "src" / "vlmheads").rglob("*.py"), *(ROOT / "heads").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("vlmheads", "heads")}
    missing = {names.get(m, m).lower() for m in third_party} - declared - optional
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
