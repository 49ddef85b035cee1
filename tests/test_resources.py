"""resources_for: node knobs (n_procs, mem_gb, plugin_args) on top of plugin-level settings."""

from __future__ import annotations

import nipype
import pytest
from nipype.interfaces.utility import Function, IdentityInterface

from nipype_batch.errors import ConfigurationError
from nipype_batch.resources import (
    NODE_OPTIONS,
    JobResources,
    describe_node_options,
    node_plugin_args,
    resources_for,
)
from nipype_batch.settings import BatchSettings


def _add(a: int, b: int) -> int:
    return a + b


def identity_node(name: str = "ident", **kwargs) -> nipype.Node:
    return nipype.Node(IdentityInterface(fields=["x"]), name=name, **kwargs)


def function_node(name: str = "adder", **kwargs) -> nipype.Node:
    interface = Function(input_names=["a", "b"], output_names=["out"], function=_add)
    return nipype.Node(interface, name=name, **kwargs)


@pytest.fixture
def settings() -> BatchSettings:
    return BatchSettings.from_plugin_args(
        {"backend": "local", "vcpus": 2, "memory_mb": 4096, "gpus": 0, "timeout_s": 600,
         "job_queue": "default-queue", "image": "repo/job:1"}
    )


def test_plain_node_gets_the_plugin_floors(settings: BatchSettings) -> None:
    # Nipype's default mem_gb (0.2) and n_procs (1) are below the floors.
    assert resources_for(identity_node(), settings) == JobResources(
        vcpus=2, memory_mb=4096, gpus=0, timeout_s=600, job_queue="default-queue",
        image="repo/job:1", base_image=None, run_on_driver=False, attempts=3,
    )


def test_n_procs_and_mem_gb_raise_the_floors(settings: BatchSettings) -> None:
    node = function_node(n_procs=6, mem_gb=8.5)
    resources = resources_for(node, settings)
    assert resources.vcpus == 6
    assert resources.memory_mb == 8704  # 8.5 * 1024


def test_fractional_mem_gb_rounds_up_to_whole_mib(settings: BatchSettings) -> None:
    node = identity_node(mem_gb=5.0001)
    assert resources_for(node, settings).memory_mb == 5121


def test_n_procs_set_after_construction_is_seen(settings: BatchSettings) -> None:
    node = identity_node()
    node.n_procs = 4  # a property with a setter in Nipype (mem_gb has none)
    resources = resources_for(node, settings)
    assert (resources.vcpus, resources.memory_mb) == (4, 4096)


def test_node_plugin_args_override_everything(settings: BatchSettings) -> None:
    node = function_node(n_procs=8, mem_gb=16)
    node.plugin_args = {
        "vcpus": 3, "memory_mb": 1000, "gpus": 1, "timeout_s": 120, "job_queue": "gpu-queue",
        "image": "repo/gpu:2", "base_image": "repo/cuda-python:3.11", "run_on_driver": True,
        "attempts": 5,
    }
    assert resources_for(node, settings) == JobResources(
        vcpus=3, memory_mb=1000, gpus=1, timeout_s=120, job_queue="gpu-queue",
        image="repo/gpu:2", base_image="repo/cuda-python:3.11", run_on_driver=True, attempts=5,
    )


@pytest.mark.parametrize("overwrite", [True, False])
def test_overwrite_flag_is_accepted_and_node_value_wins(
    settings: BatchSettings, overwrite: bool
) -> None:
    node = identity_node()
    node.plugin_args = {"vcpus": 5, "overwrite": overwrite}
    resources = resources_for(node, settings)
    assert resources.vcpus == 5
    assert resources.memory_mb == 4096


def test_other_plugins_keys_are_ignored(settings: BatchSettings) -> None:
    node = identity_node(n_procs=4)
    node.plugin_args = {"sbatch_args": "--mem=8G", "qsub_args": "-l h_vmem=8G", "overwrite": True}
    assert node_plugin_args(node) == {"overwrite": True}
    assert resources_for(node, settings).vcpus == 4


@pytest.mark.parametrize(
    ("key", "meant"),
    [("vcpu", "vcpus"), ("memory", "memory_mb"), ("memory_gb", "memory_mb"),
     ("timeout", "timeout_s"), ("job_queu", "job_queue")],
)
def test_near_miss_node_key_is_an_error_with_suggestion(
    settings: BatchSettings, key: str, meant: str
) -> None:
    node = identity_node(name="bet")
    node.plugin_args = {key: 4}
    with pytest.raises(
        ConfigurationError,
        match=rf"node 'bet': plugin_args key '{key}' is not known\. Did you mean '{meant}'\?",
    ):
        resources_for(node, settings)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("vcpus", 0, r"vcpus=0 must be a whole number >= 1"),
        ("vcpus", "4", r"vcpus='4' must be a whole number >= 1"),
        ("memory_mb", 2, r"memory_mb=2 must be a whole number >= 4"),
        ("gpus", True, r"gpus=True must be a whole number >= 0"),
        ("timeout_s", 30, r"timeout_s=30 must be a whole number of seconds >= 60"),
    ],
)
def test_invalid_node_values_name_the_node(
    settings: BatchSettings, key: str, value, problem: str
) -> None:
    node = function_node(name="fit_tensor")
    node.plugin_args = {key: value}
    with pytest.raises(ConfigurationError, match=rf"node 'fit_tensor' plugin_args {problem}"):
        resources_for(node, settings)


@pytest.mark.parametrize("plugin_args", [["vcpus", 4], "vcpus=4", ("vcpus", 4)])
def test_non_dict_plugin_args_are_rejected(settings: BatchSettings, plugin_args) -> None:
    node = identity_node(name="smooth")
    node.plugin_args = plugin_args
    with pytest.raises(
        ConfigurationError,
        match=rf"node 'smooth': plugin_args must be a dict, e\.g\. \{{'vcpus': 4\}}; "
        rf"got {type(plugin_args).__name__}\.",
    ):
        resources_for(node, settings)


def test_node_name_in_workflow_is_the_full_name(settings: BatchSettings) -> None:
    workflow = nipype.Workflow(name="preproc")
    node = identity_node(name="inner")
    workflow.add_nodes([node])
    node._hierarchy = "preproc"  # what Nipype sets when it flattens the graph for a run
    node.plugin_args = {"vcpus": -2}
    with pytest.raises(ConfigurationError, match=r"node 'preproc\.inner' plugin_args vcpus=-2"):
        resources_for(node, settings)


def test_node_options_and_job_resources_name_the_same_fields() -> None:
    # a new per-node option becomes a JobResources field (or says job_field=False)
    job_options = {option.name for option in NODE_OPTIONS if option.job_field}
    assert job_options == set(JobResources.__dataclass_fields__)


def test_node_options_without_own_default_have_a_setting_of_their_name() -> None:
    settings_fields = set(BatchSettings.__dataclass_fields__)
    for option in NODE_OPTIONS:
        if option.job_field and option.default is None:
            assert option.name in settings_fields, option.name


def test_readme_names_every_node_option() -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    paragraph = readme[readme.index("Per node, `node.plugin_args` may set"):]
    paragraph = paragraph[: paragraph.index("\n\n")]
    for option in NODE_OPTIONS:
        assert f"`{option.name}`" in paragraph, option.name


def test_describe_node_options_covers_every_key_with_help() -> None:
    rows = describe_node_options()
    assert [name for name, _ in rows] == [option.name for option in NODE_OPTIONS]
    assert all(text for _, text in rows)
