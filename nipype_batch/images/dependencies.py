"""What a node needs inside its job's image, found from the node itself.

A node travels pickled, and a pickle names every class and function it holds by module: the
job must import each of those modules. Those modules may import more later, inside functions
(Nipype's DIPY interfaces import ``dipy`` in ``_run_interface``), so every import anywhere in
their source counts too, when the driver has it (what the driver lacks, its code did without).
A Function node also travels as source text, whose imports it needs. Each module is traced to
what provides it on the driver: the standard library, an installed distribution (pinned to the
driver's version, so pickles load alike), or local code that is on no index (the user's own
module or project), which is copied into the image.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import pickle
import sys
import sysconfig
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError

# Provided by the image itself (the runner) or by the Python in it.
_ALWAYS_THERE = {"nipype_batch", "__future__", "builtins"}


@dataclass
class Dependencies:
    """Requirements (pinned) and local code paths for the nodes sharing one image."""

    requirements: set[str] = field(default_factory=set)
    local_code: set[str] = field(default_factory=set)  # module files or package directories
    reasons: dict[str, str] = field(default_factory=dict)  # requirement -> who imports it

    def update(self, other: Dependencies) -> None:
        """Add another node's needs to these (the first reason for each is kept)."""
        self.requirements |= other.requirements
        self.local_code |= other.local_code
        for requirement, reason in other.reasons.items():
            self.reasons.setdefault(requirement, reason)


def imported_modules(source: str) -> tuple[set[str], set[str]]:
    """Top-level names of the absolute imports in Python source: ``(required, optional)``.

    Imports inside ``try:`` blocks that catch ImportError are optional: the code copes
    without them, so they are added when the driver has them and skipped otherwise.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    optional_ids = set()
    for item in ast.walk(tree):
        if isinstance(item, ast.Try) and any(_catches_import_error(h) for h in item.handlers):
            for stmt in item.body:
                optional_ids.update(id(sub) for sub in ast.walk(stmt))
    required, optional = set(), set()
    for item in ast.walk(tree):
        names: list[str] = []
        if isinstance(item, ast.Import):
            names = [alias.name.split(".")[0] for alias in item.names]
        elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            names = [item.module.split(".")[0]]
        (optional if id(item) in optional_ids else required).update(names)
    return required, optional - required


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    if caught is None:
        return True
    names = [caught] if not isinstance(caught, ast.Tuple) else list(caught.elts)
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError",
                                                     "Exception", "BaseException")
               for n in names)


def node_modules(node: Any) -> tuple[set[str], set[str]]:
    """Top-level modules a Function node's source imports: ``(required, optional)``."""
    interface = node.interface
    cls = type(interface)
    if cls.__module__ == "__main__":
        raise ConfigurationError(
            f"node {node.fullname!r}: interface {cls.__name__} is defined in the script being "
            "run (__main__), which a job cannot import. Move the class into a module of its "
            "own (e.g. my_interfaces.py next to the script) and import it from there."
        )
    required: set[str] = set()
    optional: set[str] = set()
    source = getattr(getattr(interface, "inputs", None), "function_str", None)
    if isinstance(source, str):
        # Function(..., imports=["import numpy as np"]) runs these before the function
        preamble = "\n".join(getattr(interface, "imports", None) or [])
        in_source, optional = imported_modules(f"{preamble}\n{source}")
        required |= in_source
    return required, optional - required


def _is_stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name in sys.builtin_module_names


def _site_dirs() -> list[str]:
    paths = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    return [os.path.realpath(p) for p in paths]


def _editable_or_local(dist: importlib.metadata.Distribution) -> bool:
    """A distribution installed from a local directory (editable or not): on no index."""
    try:
        direct = dist.read_text("direct_url.json")
    except Exception:
        return False
    if not direct:
        return False
    info = json.loads(direct)
    return str(info.get("url", "")).startswith("file://") and "archive_info" not in info


def _module_location(name: str) -> str | None:
    """File of a module, or directory of a package, as found on the driver's sys.path."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return os.path.realpath(locations[0]) if locations else None
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return os.path.realpath(spec.origin)
    return None


@functools.lru_cache(maxsize=1)
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def _pinned_distribution(name: str) -> str | None:
    """``'dipy==1.12.1'`` for an installed distribution, None if it was installed from a
    local directory (on no index: its code is copied instead). Cached: metadata is slow."""
    dist = importlib.metadata.distribution(name)
    if _editable_or_local(dist):
        return None
    return f"{dist.metadata['Name']}=={dist.version}"


def resolve_modules(modules: Iterable[str], where: str,
                    optional: Iterable[str] = (), why: str = "") -> Dependencies:
    """Trace modules to pinned distributions or local code.

    A required module the driver cannot import is an error; an optional one is skipped.
    """
    providers = _providers()
    needs = Dependencies()
    optional = set(optional)
    for name in sorted(set(modules) | optional):
        if name in _ALWAYS_THERE or _is_stdlib(name):
            continue
        dists = providers.get(name, [])
        if dists:
            requirement = _pinned_distribution(dists[0])
            if requirement:
                needs.requirements.add(requirement)
                needs.reasons.setdefault(requirement, f"{name} imported by {why or where}")
                continue
        location = _module_location(name)
        if location is None and name in optional:
            continue
        if location is None:
            raise ConfigurationError(
                f"{where} imports {name!r}, which this Python cannot import. Install it on "
                f"the driver (`pip install {name}`): the job image gets the driver's version."
            )
        if any(location.startswith(site + os.sep) for site in _site_dirs()) and not dists:
            raise ConfigurationError(
                f"{where} imports {name!r}, installed in site-packages without package "
                "metadata, so its version cannot be pinned. Reinstall it with pip."
            )
        needs.local_code.add(location)
        needs.update(_local_code_needs(location, where))
    return needs


# location -> (stamp of its files, what they import); a placeholder breaks import cycles
_local_needs: dict[str, tuple[tuple, Dependencies]] = {}


def _local_code_needs(location: str, where: str) -> Dependencies:
    """What a local module's own imports need (a lab module importing nibabel at its top).

    Cached by the files' sizes and mtimes, so an edited module is read again.
    """
    files = _python_files(location)
    stamp = tuple((path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in files)
    cached = _local_needs.get(location)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    _local_needs[location] = (stamp, Dependencies())
    # Best effort: a package's files include code that never runs in a job (its tests,
    # scripts), so what the driver cannot import is skipped rather than refused.
    required, optional = _local_code_imports(files, location)
    found = resolve_modules(set(), where=f"{where} (via {location})",
                            optional=required | optional, why=location)
    _local_needs[location] = (stamp, found)
    return found


def _python_files(location: str) -> list[str]:
    if os.path.isfile(location):
        return [location]
    return sorted(
        os.path.join(dirpath, name)
        for dirpath, _dirnames, filenames in os.walk(location)
        if not any(part.startswith(".") for part in dirpath.split(os.sep))
        for name in filenames if name.endswith(".py")
    )


def _local_code_imports(files: list[str], location: str) -> tuple[set[str], set[str]]:
    """Absolute imports of a local module's or package's Python files, less itself."""
    required, optional = set(), set()
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                found, maybe = imported_modules(fh.read())
        except (OSError, UnicodeDecodeError):
            continue
        required |= found
        optional |= maybe
    own = os.path.basename(location.rstrip(os.sep)).removesuffix(".py")
    return required - {own}, (optional - required) - {own}


def node_dependencies(node: Any) -> Dependencies:
    """Everything one node's job must import, traced to what provides it."""
    where = f"node {node.fullname!r}"
    required, optional = node_modules(node)
    needs = resolve_modules(required, where=where, optional=optional,
                            why=f"the function of {where}")
    for module in sorted({module for module, _name in pickled_references(node)}):
        needs.update(_module_needs(module, where))
    return needs


class _Discard:
    """A file that forgets what is written: the references are all we want of the pickle."""

    def write(self, data: bytes) -> int:
        return len(data)


class _ReferenceRecorder(pickle.Pickler):
    """Records every class and function a pickle names, as ``(module, qualified name)``."""

    def __init__(self) -> None:
        super().__init__(_Discard(), protocol=pickle.HIGHEST_PROTOCOL)
        self.references: set[tuple[str, str]] = set()

    def reducer_override(self, obj: Any) -> Any:
        # Called for every object but the plain built-in values, classes and functions too.
        named = obj if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType) \
            else type(obj)
        module = getattr(named, "__module__", None)
        if isinstance(module, str):
            self.references.add((module, getattr(named, "__qualname__", named.__name__)))
        return NotImplemented


@contextlib.contextmanager
def without_plugin(node: Any) -> Iterator[None]:
    """The node as jobs get it: without ``use_plugin`` (the driver's plugin arguments, which
    may hold clients or callbacks), restored afterwards."""
    held = getattr(node, "use_plugin", None)
    if held is not None:
        node.use_plugin = None
    try:
        yield
    finally:
        if held is not None:
            node.use_plugin = held


def pickled_references(node: Any) -> set[tuple[str, str]]:
    """``(module, name)`` of each class and function the node's pickle refers to by name.

    These are what unpickling the node in its job imports. The node is pickled as the plugin
    pickles it (without ``use_plugin``, which holds the driver's plugin arguments). A node that
    cannot be pickled yields what was named before the failure; the preflight refuses it.
    """
    recorder = _ReferenceRecorder()
    try:
        with without_plugin(node):
            recorder.dump(node)
    except Exception:  # the preflight reports every unpicklable node, all together
        pass
    main = sorted(name for module, name in recorder.references if module == "__main__")
    if main:
        raise ConfigurationError(
            f"node {node.fullname!r} holds {', '.join(main)}, defined in the script being run "
            "(__main__), which a job cannot import. Move it into a module of its own (e.g. "
            "my_nodes.py next to the script) and import it from there."
        )
    return recorder.references


# module -> what it needs; only for modules of installed distributions (they do not change
# while the driver runs). Local code is stamped and cached in _local_code_needs.
_installed_module_needs: dict[str, Dependencies] = {}


def _module_needs(module: str, where: str) -> Dependencies:
    """What importing ``module`` in a job needs: its own package, and whatever its source
    imports anywhere (at its top or inside a function) that the driver has installed."""
    cached = _installed_module_needs.get(module)
    if cached is not None:
        return cached
    top = module.split(".")[0]
    needs = resolve_modules({top}, where=where, why=f"module {module}")
    if needs.local_code:
        return needs  # local code: its whole package's imports are traced already
    source = _module_source(module)
    if source is not None:
        required, optional = imported_modules(source)
        needs.update(resolve_modules(set(), where=where, optional=(required | optional) - {top},
                                     why=f"module {module}"))
    _installed_module_needs[module] = needs
    return needs


def _module_source(module: str) -> str | None:
    """Source text of an importable module, or None (built-in, compiled, or not found)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None
