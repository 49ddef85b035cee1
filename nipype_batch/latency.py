"""How long AWS Batch makes a job wait, as a profile the simulated Batch plays back.

A :class:`LatencyProfile` holds the delays of one job's way through Batch (SUBMITTED ->
RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED), each a triangular distribution
(:class:`Delay`), and the capacity the jobs share: hosts of ``host_vcpus`` launched on demand
up to ``max_vcpus``, each pulling the job image once. Draws come from ``random.Random`` seeded
by the profile's ``seed`` and the job's (or host's) number, so a run replays the same delays.

Named profiles: :data:`ZERO` (no delay, unlimited capacity: the simulated Batch's default),
:data:`LOCAL_STACK` (this project's moto + Docker stack), :data:`AWS_EC2` (a managed EC2
compute environment with minvCpus 0) and :data:`AWS_FARGATE`. Every figure names its source;
where none was found it says it is an assumption and why.

:meth:`LatencyProfile.job_overhead_s` is the expected waiting of one job on a warm queue,
the figure a planner weighs against a node's runtime.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Delay:
    """A delay in seconds drawn from a triangular distribution ``low <= mode <= high``."""

    low: float
    mode: float
    high: float

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.mode <= self.high:
            raise ValueError(f"Delay needs 0 <= low <= mode <= high, got {self}")

    @classmethod
    def fixed(cls, seconds: float) -> Delay:
        """Always ``seconds``."""
        return cls(seconds, seconds, seconds)

    @property
    def mean(self) -> float:
        """Expected value (of a triangular distribution: the mean of its three points)."""
        return (self.low + self.mode + self.high) / 3

    def draw(self, rng: random.Random) -> float:
        """One delay."""
        if self.low == self.high:
            return self.low
        return rng.triangular(self.low, self.high, self.mode)


NONE = Delay.fixed(0.0)


@dataclass(frozen=True)
class LatencyProfile:
    """Per-job delays and the capacity of one job queue.

    Parameters
    ----------
    name : str
        Shown in benchmark tables.
    submitted_to_runnable : Delay
        The scheduler takes the job in (SUBMITTED -> RUNNABLE).
    runnable_to_starting : Delay
        Placement once a ready host has room for the job (RUNNABLE -> STARTING).
    starting_to_running : Delay
        Container start on a host that holds the image (STARTING -> RUNNING).
    running_to_done : Delay
        From the container's exit to SUCCEEDED/FAILED in DescribeJobs.
    host_launch : Delay
        A new host: instance launch and registration, before any job can be placed on it.
    image_mb, pull_mb_per_s : float
        The job image is pulled once per host (``image_mb / pull_mb_per_s`` seconds, during
        STARTING); 0 MB means nothing to pull.
    host_vcpus : int or None
        vCPUs of each host; None: one warm host of unlimited size (no scale-up, no pull).
    max_vcpus : int or None
        The compute environment's maxvCpus: no host is launched past it. None: no limit.
    host_per_job : bool
        Fargate: every job gets a host of its own size, launched for it and never reused.
    seed : int
        Seed of every draw.
    """

    name: str
    submitted_to_runnable: Delay = NONE
    runnable_to_starting: Delay = NONE
    starting_to_running: Delay = NONE
    running_to_done: Delay = NONE
    host_launch: Delay = NONE
    image_mb: float = 0.0
    pull_mb_per_s: float = 1.0
    host_vcpus: int | None = None
    max_vcpus: int | None = None
    host_per_job: bool = False
    seed: int = 0

    @property
    def pull_s(self) -> float:
        """Seconds to pull the job image onto a new host."""
        return self.image_mb / self.pull_mb_per_s if self.image_mb else 0.0

    def job_overhead_s(self) -> float:
        """Expected seconds a job spends in Batch besides its own run, on a warm queue.

        Warm: a host with room and the image is ready (on Fargate there is none: every job
        launches its host and pulls its image). The driver's poll interval comes on top.
        """
        waiting = (self.submitted_to_runnable.mean + self.runnable_to_starting.mean
                   + self.starting_to_running.mean + self.running_to_done.mean)
        if self.host_per_job:
            waiting += self.host_launch.mean + self.pull_s
        return waiting

    def cold_start_s(self) -> float:
        """Expected extra seconds of the first jobs, while the first host launches and pulls."""
        if self.host_vcpus is None or self.host_per_job:  # no hosts, or launched for every job
            return 0.0
        return self.host_launch.mean + self.pull_s

    def rng(self, *key: object) -> random.Random:
        """The random stream of one job or host, named by ``key`` (reproducible)."""
        return random.Random("/".join(map(str, (self.seed, *key))))

    def with_seed(self, seed: int) -> LatencyProfile:
        """The same profile drawing another sequence."""
        return replace(self, seed=seed)


ZERO = LatencyProfile("zero")
"""No delays, unlimited capacity: jobs run as soon as a worker process is free."""

# This project's local stack: moto 5.2 running each job as a Docker container on this machine
# (/work/shared/NOTES.md, "moto as the local AWS"): a trivial job takes ~1.2 s from
# submission to SUCCEEDED, ~0.5 s of which are moto's 0.5 s status polls
# (moto/batch/models.py: `sleep(0.5)` while SUBMITTED, PENDING, RUNNABLE, STARTING, and while
# the container runs) and ~0.66 s container start and Python imports. The image is already
# local (no pull). Capacity (this machine's vCPUs, which the local stack's adjustments make
# jobs wait for) is not modelled here: a forecast of the local stack sets max_vcpus.
LOCAL_STACK = LatencyProfile(
    "local-stack",
    # moto advances SUBMITTED -> RUNNABLE on its 0.5 s polls: uniform-ish over 0-0.5 s
    submitted_to_runnable=Delay(0.0, 0.25, 0.5),
    # NOTES.md: a trivial container lives ~0.1-0.4 s, importing boto3 costs ~0.3 s;
    # with `docker run` itself that is the ~0.66 s measured
    starting_to_running=Delay(0.4, 0.66, 0.9),
    # moto notices the container's exit on its next 0.5 s poll
    running_to_done=Delay(0.0, 0.25, 0.5),
)

# A managed EC2 compute environment with minvCpus 0, as `nipype-batch infra up` makes it.
AWS_EC2 = LatencyProfile(
    "aws-ec2",
    # ASSUMPTION, 2-15 s. AWS gives no figure; it says a job of a few seconds may spend
    # longer being scheduled than running ("Short jobs ... the overhead to schedule the batch
    # job might take longer than the runtime of the job itself",
    # https://docs.aws.amazon.com/batch/latest/userguide/bestpractice1.html), and users report
    # "it can take several seconds per queued job"
    # (https://github.com/georgian-io-archive/hydra/issues/88).
    submitted_to_runnable=Delay(2.0, 5.0, 15.0),
    # ASSUMPTION, 5-30 s: placement on a host with room. The scheduler works in periodic
    # passes (once reported to wait up to 10 minutes, "The 10 minute issue is gone" since fair
    # share scheduling, https://github.com/awsdocs/aws-batch-user-guide/issues/10); AWS's own
    # advice to make jobs run 3-5 minutes (bestpractice1 above) implies an overhead of tens of
    # seconds per job rather than one or two.
    runnable_to_starting=Delay(5.0, 10.0, 30.0),
    # Container start on a warm host with the image cached: "~2 seconds" with EC2 capacity on
    # standby against ~45-90 s on Fargate
    # (https://github.com/aws-samples/amazon-chime-sdk-recording-demo/issues/44); the ECS agent
    # also reports the task's state on its own cycle, hence up to 10 s (assumption).
    starting_to_running=Delay(2.0, 4.0, 10.0),
    # ASSUMPTION, 1-10 s: the ECS agent reports the stopped task and Batch updates the job.
    running_to_done=Delay(1.0, 3.0, 10.0),
    # ASSUMPTION, 1.5-5 min, mode 3: scale-up from zero = Batch noticing the RUNNABLE jobs,
    # the Auto Scaling group launching an instance, boot, and the ECS agent registering it.
    # AWS documents the latencies but gives no total ("Publishing the CloudWatch metrics ...
    # The time taken by a newly launched Amazon EC2 instance to warm-up",
    # https://docs.aws.amazon.com/AmazonECS/latest/bestpracticesguide/capacity-cluster-speed-up-ec2.html);
    # a node of EKS on Fargate alone takes "30-45 seconds ... to be created and registered"
    # (https://github.com/aws/containers-roadmap/issues/649), a full EC2 instance with the ECS
    # AMI boots longer; users report first runs much slower than later ones
    # (https://github.com/Netflix/metaflow/issues/1005: "the first time running a workflow,
    # the run takes a lot of time, say 19 mins, then ... shorter").
    host_launch=Delay(90.0, 180.0, 300.0),
    # ASSUMPTION: a 1 GB image (Python, Nipype, numpy and a tool or two) at 60 MB/s, i.e.
    # ~17 s, within "For larger Docker images, the download time might take 10-20 seconds"
    # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/pull-behavior.html). The ECS
    # agent caches it per instance ("The image is pulled ... only if it wasn't pulled by a
    # previous task on the same container instance", same page).
    image_mb=1000.0,
    pull_mb_per_s=60.0,
    # ASSUMPTION: 'optimal' instance types; a 16-vCPU host (c5.4xlarge / m5.4xlarge size).
    host_vcpus=16,
    # nipype_batch/infra/spec.py: `infra up` makes maxvCpus 64 unless told otherwise.
    max_vcpus=64,
)

# A Fargate compute environment: no hosts to keep warm, every job provisions its own.
AWS_FARGATE = LatencyProfile(
    "aws-fargate",
    submitted_to_runnable=AWS_EC2.submitted_to_runnable,
    runnable_to_starting=AWS_EC2.runnable_to_starting,
    starting_to_running=AWS_EC2.starting_to_running,
    running_to_done=AWS_EC2.running_to_done,
    # Fargate capacity per task: "30-45 seconds for a node to be created and registered"
    # (https://github.com/aws/containers-roadmap/issues/649); task join "~45 seconds" and
    # "about 90 seconds" (https://github.com/aws-samples/amazon-chime-sdk-recording-demo/issues/44).
    host_launch=Delay(30.0, 40.0, 90.0),
    # "for each container image defined in the task, the whole container image needs to be
    # pulled ... for each Fargate task"
    # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-pull-behavior.html);
    # same image size and speed as AWS_EC2 (assumption).
    image_mb=AWS_EC2.image_mb,
    pull_mb_per_s=AWS_EC2.pull_mb_per_s,
    max_vcpus=AWS_EC2.max_vcpus,
    host_per_job=True,
)

PROFILES = {p.name: p for p in (ZERO, LOCAL_STACK, AWS_EC2, AWS_FARGATE)}

