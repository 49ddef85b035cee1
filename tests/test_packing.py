"""The packing planner: its invariants on random graphs, and the shapes workflows have."""

from __future__ import annotations

import graphlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nipype_batch.packing import (
    PackingModel,
    PackPlan,
    PlanNode,
    chunk_size,
    plan_packs,
)
from tests.packing_shapes import fmriprep_study, fmriprep_subject

MODEL = PackingModel()  # overhead 60 s, target 180 s, up to 4 vCPUs


def node(key: str, *after: str, runtime: float = 2.0, vcpus: int = 1, memory: int = 1024,
         image: str = "img", queue: str = "q", **flags) -> PlanNode:
    return PlanNode(key, after, image, queue, vcpus, memory, runtime, **flags)


def chain(count: int, runtime: float = 2.0, prefix: str = "n", first_after=()) -> list[PlanNode]:
    return [node(f"{prefix}{i:03d}", *((f"{prefix}{i - 1:03d}",) if i else first_after),
                 runtime=runtime) for i in range(count)]


def check_plan(nodes: list[PlanNode], plan: PackPlan, model: PackingModel) -> None:
    """Every rule a plan must keep, whatever the graph."""
    by_key = {n.key: n for n in nodes}
    packed = [key for pack in plan.packs for key in pack.members]
    assert sorted(packed) == sorted(n.key for n in nodes if not n.on_driver)
    # the quotient: packs and driver nodes as vertices, edges from the nodes' dependencies
    vertex = {}
    for i, pack in enumerate(plan.packs):
        for key in pack.members:
            vertex[key] = i
            assert plan.pack_of(key) is pack
    for n in nodes:
        if n.on_driver:
            vertex[n.key] = n.key
            assert plan.pack_of(n.key) is None
    quotient: dict[object, set] = {v: set() for v in vertex.values()}
    for n in nodes:
        quotient[vertex[n.key]].update(vertex[p] for p in n.after if vertex[p] != vertex[n.key])
    graphlib.TopologicalSorter(quotient).prepare()  # raises CycleError on a cycle
    for i in range(len(plan.packs)):  # the packs come in a topological order
        assert all(j < i for j in _packs_before(quotient, i))
    for i, pack in enumerate(plan.packs):
        members = [by_key[k] for k in pack.members]
        assert {m.image for m in members} == {pack.image}
        assert {m.queue for m in members} == {pack.queue}
        largest = max(m.vcpus for m in members)
        assert largest <= pack.vcpus <= max(model.max_vcpus, largest)
        assert pack.memory_mb >= max(m.memory_mb for m in members)
        if len(members) > 1:
            assert pack.duration_s <= model.target_s
            assert all(m.packable and m.runtime_s < model.target_s for m in members)
        else:
            assert pack.duration_s == members[0].runtime_s
        seen: set[str] = set()
        for m in members:  # members in a dependency order
            assert not any(p in pack.members and p not in seen for p in m.after)
            seen.add(m.key)
        assert {plan.packs.index(p) for p in plan.after(pack)} == {
            v for v in quotient[i] if isinstance(v, int)}
        assert set(plan.needs(pack)) == {
            p for m in members for p in m.after if vertex[p] != i}


def _packs_before(quotient: dict, vertex) -> set[int]:
    """The packs with an edge into ``vertex``, or into a driver node before it."""
    found, todo = set(), list(quotient[vertex])
    while todo:
        v = todo.pop()
        if isinstance(v, int):
            found.add(v)
        else:
            todo.extend(quotient[v])
    return found


@st.composite
def graphs(draw) -> tuple[list[PlanNode], PackingModel]:
    count = draw(st.integers(1, 30))
    names = draw(st.permutations(range(count)))  # key order is not the dependency order
    keys = [f"k{name:02d}" for name in names]
    nodes = []
    for i, key in enumerate(keys):
        after = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True)) if i else []
        nodes.append(PlanNode(
            key, tuple(keys[j] for j in after),
            image=draw(st.sampled_from(["a", "a", "a", "b"])),
            queue=draw(st.sampled_from(["q", "q", "q", "r"])),
            vcpus=draw(st.integers(1, 4)),
            memory_mb=draw(st.sampled_from([512, 1024, 2048, 8192])),
            runtime_s=draw(st.one_of(st.floats(0.5, 10), st.floats(0.5, 400))),
            packable=draw(st.sampled_from([True, True, True, True, False])),
            on_driver=draw(st.sampled_from([False] * 6 + [True]))))
    model = PackingModel(target_s=draw(st.sampled_from([60.0, 180.0, 600.0])),
                         job_overhead_s=draw(st.sampled_from([10.0, 60.0, 300.0])),
                         max_vcpus=draw(st.sampled_from([1, 2, 4, 8])),
                         gb_per_vcpu_price=draw(st.sampled_from([0.0, 0.11, 1.0])))
    return nodes, model


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_every_plan_keeps_the_rules(graph):
    nodes, model = graph
    plan = plan_packs(nodes, model)
    check_plan(nodes, plan, model)
    for n in nodes:
        if n.on_driver or not n.packable:
            assert n.on_driver or plan.pack_of(n.key).members == (n.key,)


@settings(max_examples=60, deadline=None)
@given(graphs(), st.randoms(use_true_random=False))
def test_the_plan_depends_on_the_graph_not_the_input_order(graph, rng):
    nodes, model = graph
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    first = plan_packs(nodes, model)
    assert plan_packs(nodes, model) == first
    again = plan_packs(shuffled, model)
    assert again == first
    assert [again.after(p) for p in again.packs] == [first.after(p) for p in first.packs]


def test_a_chain_of_short_nodes_is_one_job():
    plan = plan_packs(chain(40))
    assert plan.jobs == 1
    assert plan.packs[0].duration_s == 80.0 and plan.packs[0].vcpus == 1


def test_a_long_chain_is_cut_where_the_target_is_reached():
    nodes = chain(200)
    plan = plan_packs(nodes)
    assert plan.jobs == math.ceil(400 / 180)
    assert [len(p.members) for p in plan.packs] == [90, 90, 20]
    assert plan.after(plan.packs[1]) == (plan.packs[0],)
    check_plan(nodes, plan, MODEL)


def test_a_node_longer_than_the_target_runs_alone():
    nodes = [node("a"), node("b", "a", runtime=600.0), node("c", "b")]
    plan = plan_packs(nodes)
    assert [p.members for p in plan.packs] == [("a",), ("b",), ("c",)]


def test_history_cuts_a_chain_around_its_long_node():
    short = chain(10)
    assert plan_packs(short).jobs == 1  # no history: every node the default "short"
    measured = [n if n.key != "n004" else node("n004", "n003", runtime=900.0) for n in short]
    plan = plan_packs(measured)
    assert [len(p.members) for p in plan.packs] == [4, 1, 5]


def _subjects(count: int, template_after_driver: bool = False) -> list[PlanNode]:
    nodes = [node("driver", on_driver=True),
             node("template", *(["driver"] if template_after_driver else []), runtime=30.0)]
    for s in range(count):
        nodes += chain(10, prefix=f"sub{s:03d}.n", first_after=("driver", "template"))
    return nodes


@pytest.mark.parametrize("template_after_driver", [False, True])
def test_a_template_takes_subjects_along_side_by_side(template_after_driver):
    nodes = _subjects(100, template_after_driver)
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.pack_of("driver") is None
    # the driver node is done before any job is submitted, so a subject adds nothing to wait
    # for; 4 subjects at a time idle no vCPU, so the template's job fills up to the target
    template = plan.pack_of("template")
    assert (template.vcpus, template.parallel) == (4, 4)
    assert plan.pack_of("sub000.n000") is template
    assert set(plan.needs(template)) == {"driver"}
    # no subject waits there behind the others longer than a job of its own would: a pack
    # stops taking subjects once its 4 slots are busy for job_overhead_s
    for s in range(100):
        pack = plan.pack_of(f"sub{s:03d}.n000")
        assert pack.duration_s <= MODEL.job_overhead_s + 30.0 + 20.0
    assert plan.jobs <= math.ceil((30 + 100 * 20) / (4 * MODEL.job_overhead_s)) + 1


def _bids_subjects(count: int, runtime: float = 5.0) -> list[PlanNode]:
    """As a BIDS study runs: an infosource on the driver, a SelectFiles per subject on the
    driver, then three short nodes per subject in the image."""
    nodes = [node("infosource", on_driver=True)]
    for s in range(count):
        nodes += [node(f"sub{s:02d}.select", "infosource", on_driver=True),
                  *chain(3, prefix=f"sub{s:02d}.n", runtime=runtime,
                         first_after=(f"sub{s:02d}.select",))]
    return nodes


def test_subjects_after_their_own_driver_nodes_share_jobs():
    # each subject's chain waits on its own SelectFiles, done on the driver before any job is
    # submitted: several subjects go into one job (side by side), not a job per subject
    nodes = _bids_subjects(40)
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.jobs <= 40 * 4 / 10  # at most one job per 10 nodes
    first = plan.pack_of("sub00.n000")
    assert plan.pack_of("sub01.n000") is first and first.parallel > 1
    assert {"sub00.select", "sub01.select"} <= set(plan.needs(first))
    for s in range(40):  # no subject is cut
        assert len({id(plan.pack_of(f"sub{s:02d}.n{i:03d}")) for i in range(3)}) == 1
    for pack in plan.packs:
        # side by side all along: a later subject does not turn the pack back into a line in
        # which the earlier subjects wait, and the last waits no longer than a job's overhead
        assert pack.parallel > 1 or pack.duration_s <= MODEL.job_overhead_s + 3 * 5.0
        assert pack.duration_s <= MODEL.job_overhead_s + 3 * 5.0


def test_long_subjects_keep_jobs_of_their_own():
    # a subject longer than a pack would only put its first nodes in another subject's job,
    # cutting that one: each keeps its own packs
    nodes = _bids_subjects(4, runtime=100.0)
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    firsts = {id(plan.pack_of(f"sub{s:02d}.n000")) for s in range(4)}
    assert len(firsts) == 4


def test_a_driver_node_after_a_job_keeps_its_subject_out_of_earlier_packs():
    # a SelectFiles after a job's output is not done at the start: the chain after it waits
    # for it in a job of its own rather than holding back a pack submitted before
    nodes = [node("prep"), node("select", "prep", on_driver=True),
             *chain(3, prefix="late.n", first_after=("select",)),
             *chain(3, prefix="early.n")]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.pack_of("late.n000") is not plan.pack_of("early.n000")
    assert plan.pack_of("late.n000") is not plan.pack_of("prep")


def test_a_diamond_of_short_nodes_is_one_job():
    nodes = [node("s"), node("a", "s"), node("b", "s"), node("j", "a", "b")]
    plan = plan_packs(nodes)
    assert plan.jobs == 1 and plan.packs[0].members == ("s", "a", "b", "j")
    assert plan.packs[0].vcpus == 1  # short branches run one after the other


@pytest.mark.parametrize("parent_runtime", [2.0, 600.0])
def test_a_fan_out_of_short_siblings_shares_a_few_jobs(parent_runtime):
    # after a long parent (a pack of its own) the siblings cannot join their predecessor's
    # pack, but each can join the pack of the one before, which waits on the same parent
    nodes = [node("parent", runtime=parent_runtime),
             *(node(f"leaf{i:02d}", "parent", runtime=5.0) for i in range(20))]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    leaf_packs = {id(plan.pack_of(f"leaf{i:02d}")) for i in range(20)}
    assert len(leaf_packs) <= 2
    assert plan.jobs <= 2


def test_a_diamond_after_a_long_node_is_one_job():
    nodes = [node("long", runtime=600.0), node("a", "long"), node("b", "long"),
             node("j", "a", "b")]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert [p.members for p in plan.packs] == [("long",), ("a", "b", "j")]
    assert plan.after(plan.packs[1]) == (plan.packs[0],)


def test_a_short_node_does_not_queue_behind_a_long_sibling():
    # in s's pack after the long node, v (and the branch after it) would start 150 s late:
    # longer than a job of its own waits
    nodes = [node("s"), node("long", "s", runtime=150.0), node("v", "s"), node("w", "v")]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.pack_of("long").members == ("s", "long")
    assert plan.pack_of("v").members == ("v", "w")
    # behind a short sibling it does queue: 2 s is less than a job's wait
    short = [node("s"), node("a", "s", runtime=2.0), node("v", "s"), node("w", "v")]
    assert plan_packs(short).jobs == 1


def test_balanced_long_branches_share_a_pack_side_by_side():
    nodes = [node("s", runtime=1.0), node("a", "s", runtime=100.0),
             node("b", "s", runtime=100.0), node("j", "a", "b", runtime=1.0)]
    plan = plan_packs(nodes)
    assert plan.jobs == 1
    pack = plan.packs[0]
    assert (pack.vcpus, pack.parallel, pack.memory_mb) == (2, 2, 2048)
    assert pack.duration_s == 102.0


def test_unbalanced_branches_stay_apart_when_the_idle_vcpu_costs_more_than_a_job():
    nodes = [node("s", runtime=1.0), node("a", "s", runtime=170.0),
             node("b", "s", runtime=100.0)]
    plan = plan_packs(nodes)
    # together: 2 vCPUs for 171 s, 71 vCPU-seconds idle, more than the 60 s a job costs
    assert plan.pack_of("b").members == ("b",)
    assert plan.pack_of("s").vcpus == 1
    cheap_jobs = PackingModel(job_overhead_s=100.0)
    assert plan_packs(nodes, cheap_jobs).jobs == 1


def test_without_parallel_vcpus_long_branches_stay_apart():
    nodes = [node("s", runtime=1.0), node("a", "s", runtime=100.0),
             node("b", "s", runtime=100.0)]
    assert plan_packs(nodes, PackingModel(max_vcpus=1)).jobs == 2


def test_a_short_node_does_not_take_a_large_pack_for_long():
    # a 4-vCPU step, then a long 1-vCPU step: 3 vCPUs would idle for 50 s
    nodes = [node("big", vcpus=4, runtime=10.0), node("long", "big", runtime=50.0),
             node("tiny", "long", runtime=5.0)]
    plan = plan_packs(nodes)
    assert plan.pack_of("long").members == ("long", "tiny")
    assert plan.pack_of("big").vcpus == 4


def test_the_two_pack_counter_example_is_never_cyclic():
    # P={a, d} and Q={b, c} would each be convex but wait on each other
    nodes = [node("a"), node("b", "a", image="other"), node("c"), node("d", "c")]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)  # no cycle between the packs
    assert plan.pack_of("b").members == ("b",)
    assert plan.after(plan.pack_of("b")) == (plan.pack_of("a"),)


@pytest.mark.parametrize("between", [
    {"image": "other"},
    {"packable": False},
    {"on_driver": True},
    {"runtime": 600.0},
])
def test_a_node_does_not_join_a_pack_that_something_outside_waits_on(between):
    # a -> c -> d and a -> d, c kept out of a's pack: d with a would wait on c, which waits on a
    nodes = [node("a"), node("c", "a", **between), node("d", "a", "c")]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)  # this fails if the reachability check is removed
    assert plan.pack_of("d").members == ("d",)


def test_a_node_joins_when_its_outside_inputs_already_come_before_the_pack():
    nodes = [node("x", image="other"), node("a", "x"), node("b", "a", "x")]
    plan = plan_packs(nodes)
    assert plan.pack_of("b").members == ("a", "b")
    assert plan.needs(plan.pack_of("b")) == ("x",)


def test_a_node_that_would_add_a_new_wait_starts_its_own_pack():
    # y is independent of a's pack: with b in it, a would wait for y for nothing
    nodes = [node("a"), node("y", image="other"), node("b", "a", "y")]
    plan = plan_packs(nodes)
    assert plan.pack_of("b").members == ("b",)


def test_a_join_across_subjects_stays_alone():
    nodes = [n for s in range(100) for n in chain(10, prefix=f"sub{s:03d}.n")]
    nodes.append(node("group", *(f"sub{s:03d}.n009" for s in range(100))))
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.pack_of("group").members == ("group",)
    # the subjects (no inputs) go side by side into a few jobs, the group waits on each
    subjects = {id(plan.pack_of(f"sub{s:03d}.n009")): plan.pack_of(f"sub{s:03d}.n009")
                for s in range(100)}
    assert set(map(id, plan.after(plan.pack_of("group")))) == set(subjects)
    assert plan.jobs == 1 + len(subjects) <= 2 + math.ceil(100 * 20 / (4 * MODEL.job_overhead_s))


def test_a_node_marked_not_packable_runs_alone():
    nodes = chain(3)
    nodes[1] = node("n001", "n000", packable=False)
    plan = plan_packs(nodes)
    assert [p.members for p in plan.packs] == [("n000",), ("n001",), ("n002",)]


def test_two_images_and_two_queues_split_a_chain():
    nodes = [node("a"), node("b", "a", image="fsl"), node("c", "b", image="fsl"),
             node("d", "c", image="fsl", queue="gpu")]
    plan = plan_packs(nodes)
    assert [p.members for p in plan.packs] == [("a",), ("b", "c"), ("d",)]
    assert [(p.image, p.queue) for p in plan.packs] == [
        ("img", "q"), ("fsl", "q"), ("fsl", "gpu")]


def test_driver_nodes_are_in_no_pack_but_order_the_packs():
    nodes = [node("a"), node("d", "a", on_driver=True), node("b", "d")]
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.pack_of("d") is None and plan.jobs == 2
    assert plan.needs(plan.pack_of("b")) == ("d",)
    assert plan.after(plan.pack_of("b")) == ()


def test_an_fmriprep_shaped_subject_is_a_few_jobs_with_its_long_nodes_side_by_side():
    nodes = [node("driver", on_driver=True), *fmriprep_subject("sub000")]
    assert len(nodes) == 41
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.jobs <= 4
    # the two branches' long nodes are not one after the other
    long_nodes = plan.pack_of("sub000/anat_norm")
    assert plan.pack_of("sub000/func_hmc") is long_nodes
    assert long_nodes.parallel >= 2 and long_nodes.duration_s <= 180.0


def test_an_fmriprep_shaped_study_is_at_most_one_job_per_10_nodes():
    nodes = fmriprep_study(100)
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.jobs <= (len(nodes) - 1) / 10


def test_a_random_study_sized_graph_keeps_the_rules():
    rng = random.Random(7)
    nodes = [node("driver", on_driver=True), node("template", runtime=40.0)]
    for s in range(60):
        keys = [f"s{s}.{i}" for i in range(40)]
        for i, key in enumerate(keys):
            after = [keys[j] for j in rng.sample(range(max(0, i - 3), i), min(i, 2))]
            nodes.append(node(key, *(after or ["driver", "template"]),
                              runtime=rng.choice([1.0, 3.0, 8.0, 30.0, 250.0]),
                              vcpus=rng.choice([1, 1, 1, 2, 4])))
    nodes.append(node("group", *(f"s{s}.39" for s in range(60))))
    plan = plan_packs(nodes)
    check_plan(nodes, plan, MODEL)
    assert plan.jobs < len(nodes) / 2


@pytest.mark.parametrize(("nodes", "match"), [
    ([node("a"), node("a")], "two nodes have the key 'a'"),
    ([node("a", "missing")], "'missing', which is not among the nodes"),
    ([node("a", "b"), node("b", "a")], "form a cycle"),
])
def test_a_graph_that_cannot_be_planned_is_refused(nodes, match):
    with pytest.raises(ValueError, match=match):
        plan_packs(nodes)


def test_bad_records_are_refused_when_made():
    with pytest.raises(ValueError, match="vcpus must be 1 or more"):
        node("a", vcpus=0)
    with pytest.raises(ValueError, match="runtime_s must be a finite"):
        node("a", runtime=math.inf)
    with pytest.raises(ValueError, match="max_vcpus must be 1 or more"):
        PackingModel(max_vcpus=0)


def test_an_empty_graph_is_an_empty_plan():
    assert plan_packs([]).jobs == 0


@pytest.mark.parametrize(("runtime", "count", "size"), [
    (1.0, 200, 67),  # 60 s of work at least: 3 children of 67 s
    (1.0, 10, 10),  # all of it is less work than one job's wait
    (0.5, 1000, 125),
    (30.0, 100, 2),
    (100.0, 10, 1),  # 2 would pass the 180 s target
    (600.0, 10, 1),
    (0.0, 50, 50),  # negligible
    (1.0, 1, 1),
])
def test_chunk_size(runtime, count, size):
    assert chunk_size(runtime, count, MODEL) == size


@given(st.floats(0.01, 1000), st.integers(1, 5000))
def test_a_chunk_works_within_the_target_and_never_exceeds_the_subnodes(runtime, count):
    size = chunk_size(runtime, count, MODEL)
    assert 1 <= size <= count
    assert size == 1 or size * runtime <= MODEL.target_s
    enough = math.ceil(MODEL.job_overhead_s / runtime)
    assert size == count or size >= min(enough, MODEL.target_s // runtime) // 2


def test_a_chunk_of_no_subnodes_is_refused():
    with pytest.raises(ValueError, match="1 subnode or more"):
        chunk_size(1.0, 0, MODEL)


def test_a_node_joins_a_pack_that_starts_after_its_other_input_is_expected_done():
    # b's pack starts after the long a (a job of its own); c, short, is done long before:
    # d (after b and c) joins b's pack rather than paying a job's waiting of its own
    nodes = [node("a", runtime=100.0, packable=False), node("c", runtime=1.0),
             node("b", "a"), node("d", "b", "c")]
    plan = plan_packs(nodes)
    assert plan.pack_of("d") is plan.pack_of("b")
    assert set(plan.needs(plan.pack_of("d"))) == {"a", "c"}
    check_plan(nodes, plan, MODEL)
    # ...but not when c is expected to end after b's pack would be submitted
    slow = [*nodes[:1], node("c", runtime=150.0), *nodes[2:]]
    plan = plan_packs(slow)
    assert plan.pack_of("d") is not plan.pack_of("b")
    check_plan(slow, plan, MODEL)
