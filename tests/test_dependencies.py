"""What nodes import, traced to what provides it (no Docker)."""

from __future__ import annotations

import importlib.metadata

import pytest
from nipype import Function, Node
from nipype.interfaces.utility import Rename

from nipype_batch.errors import ConfigurationError
from nipype_batch.images.dependencies import imported_modules, node_dependencies, pickled_references


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


def _pin(name: str) -> str:
    return f"{name}=={importlib.metadata.version(name)}"


def test_interface_module_and_its_imports_are_dependencies():
    needs = node_dependencies(Node(Rename(format_string="x"), name="rename"))
    # nipype.interfaces.utility.base imports numpy and nibabel; the node pickles traits
    assert needs.requirements == {_pin("nipype"), _pin("numpy"), _pin("nibabel"), _pin("traits")}
    assert needs.reasons[_pin("numpy")] == "numpy imported by module nipype.interfaces.utility.base"


def test_packages_imported_lazily_by_nipype_interfaces_are_traced():
    """Nipype's DIPY interfaces import dipy inside _run_interface, not at their top."""
    from nipype.interfaces.dipy import Denoise

    needs = node_dependencies(Node(Denoise(), name="denoise"))
    assert {_pin("dipy"), _pin("scipy"), _pin("nipype")} <= needs.requirements
    assert "module nipype.interfaces.dipy.preprocess" in needs.reasons[_pin("dipy")]


def test_modules_named_by_the_pickle_bring_their_top_level_imports():
    """An interface defined in a test module that imports pytest at its top (Nipype's own)."""
    from nipype.pipeline.engine.tests.test_base import EngineTestInterface

    node = Node(EngineTestInterface(), name="engine")
    assert ("nipype.pipeline.engine.tests.test_base", "EngineTestInterface") in \
        pickled_references(node)
    assert _pin("pytest") in node_dependencies(node).requirements


def test_imports_the_driver_lacks_are_skipped_for_installed_modules():
    """nipype.interfaces.io imports pyxnat, paramiko... in functions: only what is here."""
    from nipype.interfaces.io import JSONFileSink

    needs = node_dependencies(Node(JSONFileSink(), name="sink"))
    assert _pin("boto3") in needs.requirements
    assert not any(r.lower().startswith(("pyxnat", "mysqlclient")) for r in needs.requirements)


class _LocalValue:
    pass


def test_values_of_classes_from_main_are_refused(monkeypatch):
    """As if the script being run defined the class of an input value."""
    import sys

    monkeypatch.setattr(_LocalValue, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "_LocalValue", _LocalValue, raising=False)
    node = Node(Function(input_names=["x"], output_names=["out"], function=_local_import),
                name="holder")
    node.inputs.x = _LocalValue()
    with pytest.raises(ConfigurationError, match=r"node 'holder' holds _LocalValue, "
                       r"defined in the script being run \(__main__\)"):
        node_dependencies(node)


def test_unpicklable_inputs_are_left_to_the_preflight():
    """It reports every unpicklable node together (tests/test_bad_inputs.py)."""
    node = Node(Function(input_names=["x"], output_names=["out"], function=_local_import),
                name="holder")
    node.inputs.x = (lambda: 1)
    assert ("nipype.pipeline.engine.nodes", "Node") in pickled_references(node)
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
