"""The report package's layers, as its ``__init__`` states them: each module imports only
modules listed before it, so no import circle can come back."""

from __future__ import annotations

import ast
from pathlib import Path

import nipype_batch

PACKAGE = Path(nipype_batch.__file__).parent
REPORT_LAYERS = ["model", "gantt", "cost", "collect", "colours", "html", "png", "write"]


def _imported(path: Path, package: str) -> set[str]:
    """Modules of the package ``path`` imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            found.add(".".join([*base, *([node.module] if node.module else [])]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("nipype_batch")}


def test_report_modules_import_only_lower_layers() -> None:
    modules = sorted(p.stem for p in (PACKAGE / "report").glob("*.py") if p.stem != "__init__")
    assert modules == sorted(REPORT_LAYERS)  # a new module takes its place in the list
    for index, name in enumerate(REPORT_LAYERS):
        imported = _imported(PACKAGE / "report" / f"{name}.py", "nipype_batch.report")
        inside = {m.removeprefix("nipype_batch.report.") for m in imported
                  if m.startswith("nipype_batch.report.")}
        assert inside <= set(REPORT_LAYERS[:index]), (name, inside)
        assert "nipype_batch.report" not in imported, name  # not even through the package


def test_platforms_sit_below_everything() -> None:
    assert _imported(PACKAGE / "platforms.py", "nipype_batch") == set()
