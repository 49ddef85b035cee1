"""The image package keeps its layers: a module imports only lower ones (no Docker, no AWS)."""

from __future__ import annotations

import ast
from pathlib import Path

import nipype_batch.images

PACKAGE = Path(nipype_batch.images.__file__).parent

# Lowest first. A new module of the package must be placed here.
LAYERS = {
    "docker": 1, "registries": 1, "wheels": 1, "dependencies": 1,
    "build": 2,
    "plan": 3, "publish": 3, "load_check": 3,
}
# What the package may use of nipype_batch outside it: modules below the image layer.
BELOW = {"cache", "errors", "resources", "settings"}


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules that the module at ``path`` (in ``package``) imports."""
    found = set()
    for item in ast.walk(ast.parse(path.read_text())):
        if isinstance(item, ast.Import):
            found.update(alias.name for alias in item.names)
        elif isinstance(item, ast.ImportFrom):
            base = item.module or ""
            if item.level:
                parent = package.rsplit(".", item.level - 1)[0] if item.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in item.names)
    return found


def _ours(imported: set[str]) -> set[tuple[str, ...]]:
    """The nipype_batch modules among ``imported``: ``('images', name)`` or ``(name,)``."""
    found = set()
    for name in imported:
        parts = name.split(".")
        if parts[0] != "nipype_batch" or len(parts) < 2:
            continue
        if parts[1] == "images":
            if len(parts) > 2 and parts[2] in LAYERS:
                found.add(("images", parts[2]))
        else:
            found.add((parts[1],))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS)


def test_modules_import_only_lower_layers():
    upward = []
    for name, layer in LAYERS.items():
        for target in _ours(_imports(PACKAGE / f"{name}.py", "nipype_batch.images")):
            if target[0] == "images" and LAYERS[target[1]] >= layer:
                upward.append(f"{name} -> {target[1]}")
            elif target[0] != "images" and target[0] not in BELOW:
                upward.append(f"{name} -> nipype_batch.{target[0]}")
    assert upward == []


def test_what_lies_below_never_imports_the_package():
    for name in BELOW:
        imported = _imports(PACKAGE.parent / f"{name}.py", "nipype_batch")
        assert not [module for module in imported if module.startswith("nipype_batch.images")]
