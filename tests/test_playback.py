"""Playing a plan through Batch's delays in virtual time (nipype_batch.forecasting)."""

from __future__ import annotations

import pytest
from nipype import Function, IdentityInterface, MapNode, Merge, Node, Workflow

from nipype_batch.forecasting.playback import MapShape, play
from nipype_batch.forecasting.workflow import plan_run
from nipype_batch.history import NodeHistory
from nipype_batch.latency import Delay, LatencyProfile
from nipype_batch.packing import PackingModel, PlanNode, plan_packs
from nipype_batch.settings import BatchSettings

# every job: 1 s to RUNNABLE, 2 s to STARTING, 3 s to RUNNING; 4 s from exit to SUCCEEDED
FIXED = LatencyProfile("fixed", submitted_to_runnable=Delay.fixed(1.0),
                       runnable_to_starting=Delay.fixed(2.0),
                       starting_to_running=Delay.fixed(3.0), running_to_done=Delay.fixed(4.0))


def node(key: str, *after: str, runtime: float = 10.0, vcpus: int = 1,
         **flags) -> PlanNode:
    return PlanNode(key, after, "img", "q", vcpus, 1024, runtime, **flags)


CHAIN = [node("a"), node("b", "a"), node("c", "b")]


def test_a_job_per_node_pays_every_delay_at_every_level():
    played = play(CHAIN, None, FIXED)
    # each level: 6 s to run, 10 s of node, 4 s until SUCCEEDED, seen at that poll
    assert played.makespan_s == pytest.approx(60.0)
    assert played.submit_calls == len(played.jobs) == 3
    assert [j.running for j in played.jobs] == pytest.approx([6.0, 26.0, 46.0])
    assert played.vcpu_s == pytest.approx(30.0)


def test_a_pack_pays_the_delays_once_and_its_members_are_seen_by_their_markers():
    plan = plan_packs(CHAIN, PackingModel(job_overhead_s=20.0))
    assert plan.jobs == 1
    played = play(CHAIN, plan, FIXED)
    [job] = played.jobs
    assert played.finished == pytest.approx({"a": 16.0, "b": 26.0, "c": 36.0})
    assert played.finished["b"] < job.exited  # seen before the job ends: its marker
    assert played.makespan_s == pytest.approx(36.0)


def test_the_driver_sees_a_node_done_at_its_next_poll():
    played = play([node("a", runtime=10.2)], None, FIXED, poll_s=1.0)
    assert played.makespan_s == pytest.approx(21.0)  # SUCCEEDED at 20.2, seen at 21


def test_nodes_on_the_driver_take_no_time_and_release_what_waits_on_them():
    nodes = [node("a"), node("gate", "a", runtime=0.0, on_driver=True), node("b", "gate")]
    played = play(nodes, None, FIXED)
    assert played.finished["gate"] == played.finished["a"] == pytest.approx(20.0)
    assert played.makespan_s == pytest.approx(40.0)


def test_the_queue_size_makes_jobs_wait_for_room_and_hosts_launch_on_demand():
    profile = LatencyProfile("small", host_launch=Delay.fixed(30.0), host_vcpus=2,
                             max_vcpus=2, image_mb=60.0, pull_mb_per_s=6.0)
    nodes = [node(f"n{i}") for i in range(4)]
    played = play(nodes, None, profile)
    assert len(played.hosts) == 1
    # the host is ready at 30 and pulls the image for 10 s; two jobs at a time of 10 s
    assert sorted(j.running for j in played.jobs) == pytest.approx([40.0, 40.0, 50.0, 50.0])
    assert played.makespan_s == pytest.approx(60.0)
    assert played.host_vcpu_s == pytest.approx(2 * 60.0)


def test_a_mapnode_runs_as_array_children_of_chunks():
    nodes = [node("map", packable=False), node("after", "map")]
    played = play(nodes, None, FIXED, maps={"map": MapShape(10, 1.0, chunk=4)})
    children = [j for j in played.jobs if j.name == "map"]
    assert [j.index for j in children] == [0, 1, 2]
    assert [j.nodes for j in children] == [4, 4, 2]
    assert played.submit_calls == 2  # the array once, then the node after it
    assert played.finished["map"] == pytest.approx(6 + 4 + 4)  # its longest child, seen


def test_a_job_no_host_can_hold_is_an_error_naming_it():
    profile = LatencyProfile("small", host_vcpus=2, max_vcpus=2)
    with pytest.raises(ValueError, match="'big' asks 4 vCPUs"):
        play([node("big", vcpus=4)], None, profile)


def _square(x):
    return x * x


def _workflow(base_dir: str) -> Workflow:
    wf = Workflow("study", base_dir=base_dir)
    subjects = Node(IdentityInterface(fields=["subject"]), name="subjects")
    subjects.iterables = ("subject", [1, 2, 3])
    first = Node(Function(input_names=["x"], output_names=["y"], function=_square),
                 name="first")
    volumes = MapNode(Function(input_names=["x"], output_names=["y"], function=_square),
                      iterfield=["x"], name="volumes")
    volumes.inputs.x = list(range(12))
    gather = Node(Merge(1), name="gather")  # runs on the driver
    last = Node(Function(input_names=["x"], output_names=["y"], function=_square), name="last")
    wf.connect(subjects, "subject", first, "x")
    wf.connect(first, "y", gather, "in1")
    wf.connect(gather, ("out", _first_item), last, "x")
    wf.add_nodes([volumes])
    return wf


def _first_item(values):
    return values[0]


def test_a_workflow_is_planned_as_the_plugin_plans_it(tmp_path):
    history = [NodeHistory("study.first", "x", 2, 3.0, 3.0, 200.0, 0.0)]
    planned = plan_run(_workflow(str(tmp_path)), BatchSettings(), history, 30.0)
    keys = {r.key: r for r in planned.records}
    firsts = [r for k, r in keys.items() if k.endswith("/first")]
    assert len(firsts) == 3 and all(r.runtime_s == 3.0 for r in firsts)
    assert sum(r.on_driver for r in planned.records) == 3  # the Merge nodes
    [shape] = planned.maps.values()
    assert shape.count == 12 and shape.subnode_s == 10.0  # no history: assumed short
    assert "study.volumes" in planned.assumed and "study.first" not in planned.assumed
    played = play(planned.records, planned.plan, FIXED, maps=planned.maps)
    assert set(played.finished) == set(keys)


def test_a_job_after_a_first_node_on_the_driver_is_submitted_once():
    nodes = [node("select", runtime=0.0, on_driver=True), node("a", "select"), node("b")]
    played = play(nodes, None, FIXED)
    assert sorted(j.name for j in played.jobs) == ["a", "b"]
