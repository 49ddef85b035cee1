"""Nodes grouped by how they load, and what a load failure tells the user (no Docker)."""

from __future__ import annotations

import importlib.metadata

from nipype import Function, Node
from nipype.interfaces.utility import Rename

from nipype_batch.images.load_check import _explain, node_kinds


def _double(x):
    return 2 * x


def _triple(x):
    return 3 * x


def _function(function, name):
    return Node(Function(input_names=["x"], output_names=["out"], function=function), name=name)


def test_one_kind_per_interface_class_and_function_source():
    nodes = [Node(Rename(format_string=f"r{i}"), name=f"rename{i}") for i in range(3)]
    nodes += [_function(_double, "double_a"), _function(_double, "double_b"),
              _function(_triple, "triple")]
    kinds = node_kinds(nodes)
    assert len(kinds) == 3
    assert [kind.node.name for kind in kinds] == ["rename0", "double_a", "triple"]
    assert ("nipype.interfaces.utility.base", "Rename") in kinds[0].references


def test_a_missing_module_the_driver_has_names_the_package_to_add():
    node = Node(Rename(format_string="x"), name="rename")
    text = _explain(node, "registry/job@sha256:abc", {
        "module": "lab.interfaces", "error": "ModuleNotFoundError: No module named 'pluggy'",
        "missing": "pluggy", "import_error": True})
    version = importlib.metadata.version("pluggy")
    assert text == (
        "node 'rename' cannot be loaded in its job image registry/job@sha256:abc: "
        "ModuleNotFoundError: No module named 'pluggy' (importing lab.interfaces); add it with "
        f"plugin_args={{'packages': ['pluggy']}} (pinned to this driver's pluggy {version}).")


def test_a_module_the_driver_lacks_too_says_to_install_it_first():
    node = Node(Rename(format_string="x"), name="rename")
    text = _explain(node, "img", {"module": "lab", "error": "ModuleNotFoundError: x",
                                  "missing": "surely_not_here_xyz", "import_error": True})
    assert "install the package that provides 'surely_not_here_xyz' on the driver" in text


def test_a_missing_system_library_points_at_the_base_image():
    node = Node(Rename(format_string="x"), name="rename")
    text = _explain(node, "img", {"module": "cv2", "missing": None, "import_error": True,
                                  "error": "ImportError: libGL.so.1: cannot open shared object"})
    assert "lacks a system library" in text and "'base_image'" in text
