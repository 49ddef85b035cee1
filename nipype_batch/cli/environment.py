"""``nipype-batch local``, ``policy`` and ``infra``: the commands about where runs run."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import NipypeBatchError
from ..platforms import PLATFORMS
from .options import Argument, command, examples, json_option

INFRA_EXAMPLES = examples(
    "nipype-batch infra up --name lab --platform spot --max-vcpus 256 --region us-east-1",
    "nipype-batch infra show --name lab",
    "nipype-batch infra down --name lab          # asks first; refuses while jobs run",
    "nipype-batch infra up --local --name try    # on the shared local stack (nipype-batch "
    "local up)",
)


@command(short_help="start, stop or show a shared local stack that outlives runs",
               help="Without a shared stack each run starts its own emulator, which ends (and "
                    "terminates its jobs) with the run. A shared one behaves like AWS: jobs "
                    "keep running when their driver dies, and a rerun finds them.")
@click.argument("action", type=click.Choice(["up", "down", "status"]))
def local(action: str) -> int:
    from ..local import stack

    if action == "up":
        running = stack.up()
        print(f"local stack up: emulator {running.endpoint_url} (pid {running.server.pid}), "
              f"registry {running.registry_address}, queue {running.job_queue}, "
              f"bucket s3://{running.bucket}")
        print("runs with backend 'local' now use it and leave their jobs running if they die; "
              "stop it with `nipype-batch local down`")
        return 0
    if action == "down":
        print("local stack stopped" if stack.down() else "no shared local stack was running")
        return 0
    shared = stack.shared_emulator()
    if shared is None:
        print("no shared local stack (each run starts its own)")
        return 1
    print(f"local stack up: emulator http://127.0.0.1:{shared.port} (pid {shared.pid})")
    return 0


@command(short_help="print the job role's least-privilege IAM policy for a staging "
                          "location",
               epilog="\b\nexample:\n  nipype-batch policy s3://my-bucket/nipype > "
                      "job-role-policy.json")
@click.argument("location", cls=Argument, help="the run's bucket, s3://bucket/prefix")
@click.option("--partition", default="aws", show_default=True,
              type=click.Choice(["aws", "aws-cn", "aws-us-gov"]),
              help="the account's partition: aws-cn in China, aws-us-gov in GovCloud")
def policy(location: str, partition: str) -> int:
    from ..aws.iam import job_role_policy

    if not location.startswith("s3://"):
        raise NipypeBatchError(f"{location!r} is not an S3 URI: write s3://bucket/prefix")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    print(json.dumps(job_role_policy(bucket, prefix, partition), indent=2))
    return 0


def _listed(_ctx: click.Context, _param: click.Parameter, text: str | None) -> list[str] | None:
    """A comma-separated flag as a list (None when not given)."""
    return None if text is None else [item for item in text.split(",") if item]


@command(short_help="create, show or remove the AWS resources a run needs (bucket, ECR "
                          "repository, roles, compute environment, queue) and their named "
                          "profile",
               epilog=INFRA_EXAMPLES)
@click.argument("action", type=click.Choice(["up", "down", "show"]))
@click.option("--name", default="default",
              help="names the set and its profile: plugin_args={'profile': NAME}")
@click.option("--platform", type=click.Choice(list(PLATFORMS)),
              help="on-demand EC2 (default), Spot, or Fargate")
@click.option("--max-vcpus", type=int, help="most vCPUs at once (default 64)")
@click.option("--instance-types", callback=_listed,
              help="comma-separated types or families (default: optimal; arm64: Graviton "
                   "families m7g, c7g, r7g)")
@click.option("--architecture", type=click.Choice(["x86_64", "arm64"]),
              help="CPU of the instances: x86_64 (default) or arm64 (Graviton, cheaper)")
@click.option("--subnets", callback=_listed, help="comma-separated (default: default VPC)")
@click.option("--security-groups", callback=_listed,
              help="comma-separated (default: the default VPC's default group)")
@click.option("--expire-days", type=int,
              help="days before staging data is deleted by the lifecycle rule (30)")
@click.option("--yes", is_flag=True, help="down: do not ask for confirmation")
@json_option("print the result as JSON")
@click.option("--local", is_flag=True, help="on the shared local stack (`nipype-batch local up`)")
@click.option("--region", help="AWS region (default: boto3's, or the profile's)")
@click.option("--endpoint-url", help="an AWS-compatible endpoint (emulators)")
@click.option("--aws-profile", help="named AWS profile for credentials")
def infra(**options: Any) -> int:
    from ..infra.command import InfraOptions, run

    return run(InfraOptions(**options))
