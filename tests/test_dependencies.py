"""What nodes import, traced to what provides it (no Docker)."""

from __future__ import annotations

import importlib.metadata

import pytest
from nipype import Function, Node
from nipype.interfaces.utility import Rename

from nipype_batch.dependencies import imported_modules, node_dependencies
from nipype_batch.errors import ConfigurationError


def _uses_preamble(x):
    return np.asarray(x).sum()  # noqa: F821 - np comes from Function's imports


def _optional_import(x):
    try:
        import surely_not_installed_anywhere as fast
    except ImportError:
        fast = None
    import pluggy

    return x, fast, pluggy


def _local_import(x):
    import tests.helpers

    return tests.helpers


def test_function_imports_and_preamble_are_pinned_to_the_driver():
    node = Node(Function(input_names=["x"], output_names=["out"], function=_uses_preamble,
                         imports=["import numpy as np"]), name="n")
    needs = node_dependencies(node)
    assert f"numpy=={importlib.metadata.version('numpy')}" in needs.requirements
    assert f"nipype=={importlib.metadata.version('nipype')}" in needs.requirements
    assert needs.local_code == set()


def test_optional_imports_may_be_missing():
    node = Node(Function(input_names=["x"], output_names=["out"], function=_optional_import),
                name="n")
    assert f"pluggy=={importlib.metadata.version('pluggy')}" in node_dependencies(node).requirements


def test_local_code_is_found_by_path():
    node = Node(Function(input_names=["x"], output_names=["out"], function=_local_import),
                name="n")
    local = node_dependencies(node).local_code
    assert any(path.endswith("/tests") for path in local)
    assert any(path.endswith("/examples") for path in local)  # tests' own local imports


def test_interface_module_is_a_dependency():
    needs = node_dependencies(Node(Rename(format_string="x"), name="rename"))
    assert needs.requirements == {f"nipype=={importlib.metadata.version('nipype')}"}


def test_missing_module_names_the_node_and_the_fix():
    def needs_it(x):
        import surely_not_installed_anywhere  # noqa: F401

    node = Node(Function(input_names=["x"], output_names=["out"], function=needs_it),
                name="needy")
    with pytest.raises(ConfigurationError,
                       match=r"node 'needy' imports 'surely_not_installed_anywhere'.*pip install"):
        node_dependencies(node)


def test_imported_modules_sorts_required_and_optional():
    required, optional = imported_modules(
        "import os, numpy.linalg\nfrom scipy import ndimage\nfrom . import sibling\n"
        "try:\n    import matplotlib\nexcept ImportError:\n    pass\n"
    )
    assert required == {"os", "numpy", "scipy"} and optional == {"matplotlib"}


def test_local_modules_bring_their_own_imports(tmp_path, monkeypatch):
    lab = tmp_path / "labcode"
    lab.mkdir()
    (lab / "__init__.py").write_text("import pluggy\nfrom labcode import io\n")
    (lab / "io.py").write_text("import labcode\ntry:\n    import not_here_xyz\n"
                               "except ImportError:\n    pass\n")
    (tmp_path / "cycle_a.py").write_text("import cycle_b\n")
    (tmp_path / "cycle_b.py").write_text("import cycle_a\nimport labcode\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def uses_lab(x):
        import cycle_a

        return cycle_a

    node = Node(Function(input_names=["x"], output_names=["out"], function=uses_lab), name="n")
    needs = node_dependencies(node)
    assert f"pluggy=={importlib.metadata.version('pluggy')}" in needs.requirements
    assert {p.rsplit("/", 1)[-1] for p in needs.local_code} == {"cycle_a.py", "cycle_b.py",
                                                               "labcode"}
